// Verify a Tessera access token with jose against the live JWKS.
// Usage: node jose_verify.mjs JWKS_URL ISSUER AUDIENCE TOKEN
// Prints the claims as JSON and exits 0 when the token verifies; exits 1 otherwise.
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [jwksUrl, issuer, audience, token] = process.argv.slice(2);
try {
  const jwks = createRemoteJWKSet(new URL(jwksUrl));
  const { payload } = await jwtVerify(token, jwks, { issuer, audience, typ: 'at+jwt' });
  console.log(JSON.stringify(payload));
} catch (err) {
  console.error(`rejected: ${err.code ?? err.name}: ${err.message}`);
  process.exit(1);
}
