// A certified OpenID Connect relying-party library (openid-client v6, on oauth4webapi)
// authenticates to Tessera with `private_key_jwt` (RFC 7523 §2.2, OpenID Connect Core §9): it
// discovers the server, gets a token with the client_credentials grant, introspects it,
// revokes it and introspects it again, signing a fresh client assertion for every request.
//
// Usage: node openid_client_private_key_jwt.mjs ISSUER CLIENT_ID KEY_FILE ALG [KID]
//   KEY_FILE is the client's private key: a PKCS#8 PEM file, or a JWK (JSON) file.
//   ALG is how the key is used: ES256, EdDSA, RS256 or PS256 (the library picks the JWS
//   `alg` from the key: for an Ed25519 key it sends RFC 9864's "Ed25519").
//   KID, when given, goes in the assertion's header.
// Prints one JSON report, with the header and claims of every assertion the library sent
// (`assertions`). A step the server refuses ends the script with exit code 3 and
// `failed_at` (the step) and `status`/`error` in the report; any other failure exits non-zero
// without a report.
//
// The only relaxation is `allowInsecureRequests`: the test server listens on plain-http
// loopback, which openid-client refuses by default. It changes the transport check only.
import { readFileSync } from 'node:fs';
import * as client from 'openid-client';
import { importJWK, importPKCS8 } from 'jose';

const [issuer, clientId, keyFile, alg, kid] = process.argv.slice(2);
const text = readFileSync(keyFile, 'utf8');
const key = text.trimStart().startsWith('{') ? await importJWK(JSON.parse(text), alg) : await importPKCS8(text, alg);

const config = await client.discovery(new URL(issuer), clientId, undefined, client.PrivateKeyJwt({ key, kid }), {
  execute: [client.allowInsecureRequests],
});

const report = { assertions: [] };
const part = (jwt, i) => JSON.parse(Buffer.from(jwt.split('.')[i], 'base64url').toString());
config[client.customFetch] = (url, options) => {
  const assertion = new URLSearchParams(options.body?.toString()).get('client_assertion');
  if (assertion) report.assertions.push({ header: part(assertion, 0), claims: part(assertion, 1) });
  return fetch(url, options);
};

/// Runs one step; a refusal by the server ends the script with the step and the error.
async function step(name, run) {
  try {
    return await run();
  } catch (e) {
    // A 401 with a WWW-Authenticate challenge comes as its own error, the body unread.
    let body;
    if (e instanceof client.WWWAuthenticateChallengeError) body = await e.response.json().catch(() => ({}));
    else if (e instanceof client.ResponseBodyError) body = e.cause;
    else throw e;
    report.failed_at = name;
    report.status = e.status;
    report.error = body.error;
    report.error_description = body.error_description;
    console.log(JSON.stringify(report));
    process.exit(3);
  }
}

const tokens = await step('token', () => client.clientCredentialsGrant(config, { scope: 'read' }));
report.token = { access_token: tokens.access_token, token_type: tokens.token_type, scope: tokens.scope };
report.introspected = await step('introspect', () => client.tokenIntrospection(config, tokens.access_token));
await step('revoke', () => client.tokenRevocation(config, tokens.access_token));
report.introspected_after_revocation = await step('introspect', () =>
  client.tokenIntrospection(config, tokens.access_token),
);

console.log(JSON.stringify(report));
