// A certified OpenID Connect relying-party library (openid-client v6, on oauth4webapi) logs in
// against Tessera with its default validation: discovery, PKCE (S256), state, nonce, RFC 9207
// `iss`, ID token signature (through the JWKS), claims and UserInfo, then refreshes and logs out.
//
// Usage: node openid_client_login.mjs ISSUER CLIENT_ID CLIENT_SECRET REDIRECT_URI POST_LOGOUT_URI USERNAME PASSWORD
// Prints one JSON report; exits non-zero on any failure.
//
// The only relaxation is `allowInsecureRequests`: the test server listens on plain-http
// loopback, which openid-client refuses by default. It changes the transport check only;
// every token and claim check runs as in production.
import * as client from 'openid-client';
import { UserAgent } from './user_agent.mjs';

const [issuer, clientId, clientSecret, redirectUri, postLogoutUri, username, password] = process.argv.slice(2);
const base = new URL(issuer);

const config = await client.discovery(base, clientId, undefined, client.ClientSecretBasic(clientSecret), {
  execute: [client.allowInsecureRequests],
});

const ua = new UserAgent({ base, username, password, redirectUri });

async function start(scope) {
  const codeVerifier = client.randomPKCECodeVerifier();
  const parameters = {
    redirect_uri: redirectUri,
    scope,
    code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    nonce: client.randomNonce(),
    state: client.randomState(),
  };
  const { callback } = await ua.frontChannel(client.buildAuthorizationUrl(config, parameters));
  return { codeVerifier, parameters, callback };
}

const report = {};

// The full login.
const { codeVerifier, parameters, callback } = await start('openid profile email');
const tokens = await client.authorizationCodeGrant(config, callback, {
  pkceCodeVerifier: codeVerifier,
  expectedNonce: parameters.nonce,
  expectedState: parameters.state,
  idTokenExpected: true,
});
const claims = tokens.claims();
report.claims = claims;
report.userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
report.refreshed_claims = refreshed.claims();
report.refresh_rotated = refreshed.refresh_token !== tokens.refresh_token;

// The library must reject a response whose nonce is not the one it sent (a replayed login).
{
  const other = await start('openid');
  try {
    await client.authorizationCodeGrant(config, other.callback, {
      pkceCodeVerifier: other.codeVerifier,
      expectedNonce: client.randomNonce(),
      expectedState: other.parameters.state,
    });
    report.wrong_nonce = 'accepted';
  } catch (e) {
    report.wrong_nonce = `rejected: ${e.code ?? e.name}: ${e.message} (${e.cause?.message}: ${e.cause?.cause?.claim})`;
  }
}

// RP-initiated logout.
const endSession = client.buildEndSessionUrl(config, {
  id_token_hint: tokens.id_token,
  post_logout_redirect_uri: postLogoutUri,
  state: 'bye',
});
const logout = await ua.browse(endSession);
report.logout_status = logout.status;
report.logout_location = logout.headers.get('location');
const after = await ua.browse(client.buildAuthorizationUrl(config, { ...parameters, prompt: 'none', state: 'after' }));
report.after_logout = Object.fromEntries(new URL(after.headers.get('location')).searchParams);

console.log(JSON.stringify(report));
