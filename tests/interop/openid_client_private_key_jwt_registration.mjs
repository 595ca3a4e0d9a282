// openid-client v6 registers itself with Tessera (RFC 7591 dynamic client registration) as a
// `private_key_jwt` client with its public key inline (`jwks`), then authenticates with the
// private key at the introspection and revocation endpoints.
//
// Usage: node openid_client_private_key_jwt_registration.mjs ISSUER KEY_FILE ALG PUBLIC_JWK TOKEN
//   KEY_FILE, ALG: the private key (PKCS#8 PEM) and its algorithm, as for
//   openid_client_private_key_jwt.mjs; PUBLIC_JWK: the public key (JSON) to register;
//   TOKEN: an access token (of another client) to introspect.
// Prints a JSON report: the registered metadata, the introspection, the revocation's outcome.
// Exits non-zero on any failure.
//
// `allowInsecureRequests` only lets it talk plain http to the loopback test server.
import { readFileSync } from 'node:fs';
import * as client from 'openid-client';
import { importPKCS8 } from 'jose';

const [issuer, keyFile, alg, publicJwk, token] = process.argv.slice(2);
const jwk = JSON.parse(publicJwk);
const key = await importPKCS8(readFileSync(keyFile, 'utf8'), alg);

const config = await client.dynamicClientRegistration(
  new URL(issuer),
  {
    client_name: 'openid-client with a key',
    redirect_uris: ['https://app.example/callback'],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: { keys: [jwk] },
  },
  client.PrivateKeyJwt({ key, kid: jwk.kid }),
  { execute: [client.allowInsecureRequests] },
);
const registered = config.clientMetadata();
const report = {
  client_id: registered.client_id,
  token_endpoint_auth_method: registered.token_endpoint_auth_method,
  client_secret: registered.client_secret ?? null,
};
report.introspected = await client.tokenIntrospection(config, token);
await client.tokenRevocation(config, token);
report.revocation = 'accepted';
console.log(JSON.stringify(report));
