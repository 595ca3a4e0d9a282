// openid-client v6 pushes its authorization request to Tessera's PAR endpoint (RFC 9126),
// found through discovery, then runs the code flow with the request_uri it got back:
// PKCE, state, nonce and ID token validation as in production.
//
// Usage: node openid_client_par.mjs ISSUER CLIENT_ID CLIENT_SECRET REDIRECT_URI USERNAME PASSWORD
// Prints one JSON report; exits non-zero on any failure. `allowInsecureRequests` only lets
// the library talk to the plain-http loopback test server.
import * as client from 'openid-client';
import { UserAgent } from './user_agent.mjs';

const [issuer, clientId, clientSecret, redirectUri, username, password] = process.argv.slice(2);
const base = new URL(issuer);
const config = await client.discovery(base, clientId, undefined, client.ClientSecretBasic(clientSecret), {
  execute: [client.allowInsecureRequests],
});
const ua = new UserAgent({ base, username, password, redirectUri });

const codeVerifier = client.randomPKCECodeVerifier();
const parameters = {
  redirect_uri: redirectUri,
  scope: 'openid profile',
  code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
  code_challenge_method: 'S256',
  nonce: client.randomNonce(),
  state: client.randomState(),
};
const authorizationUrl = await client.buildAuthorizationUrlWithPAR(config, parameters);
const report = { authorization_query: Object.fromEntries(authorizationUrl.searchParams) };
const { callback, consentPage } = await ua.frontChannel(authorizationUrl);
report.consent_page = consentPage;
const tokens = await client.authorizationCodeGrant(config, callback, {
  pkceCodeVerifier: codeVerifier,
  expectedNonce: parameters.nonce,
  expectedState: parameters.state,
  idTokenExpected: true,
});
report.claims = tokens.claims();
report.scope = tokens.scope;

// The same request_uri a second time: the server must refuse it (single use).
const again = await ua.browse(authorizationUrl);
report.reuse_status = again.status;
report.reuse_location = again.headers.get('location');
report.reuse_page = (await again.text()).includes('invalid_request_uri') ? 'invalid_request_uri' : 'other';

console.log(JSON.stringify(report));
