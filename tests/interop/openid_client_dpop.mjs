// A certified OpenID Connect relying-party library (openid-client v6, on oauth4webapi) uses
// DPoP (RFC 9449) against Tessera: its DPoP handle signs a proof for every request, and the
// library checks what comes back (token_type DPoP, the ID token, UserInfo's subject). It runs
// the code flow, a refresh, UserInfo, client_credentials, and a call to a resource server with
// the client_credentials token; when the server asks for nonces (`use_dpop_nonce`), the library
// retries with the one given.
//
// Usage: node openid_client_dpop.mjs ISSUER CLIENT_ID CLIENT_SECRET REDIRECT_URI USERNAME PASSWORD ALG RESOURCE_URL
//   ALG: the DPoP key's algorithm (ES256, EdDSA, RS256 or PS256).
// Prints one JSON report, with the header and claims of every proof the library sent
// (`proofs`, with the URL each went to); exits non-zero on any failure.
//
// The only relaxation is `allowInsecureRequests`: the test server listens on plain-http
// loopback, which openid-client refuses by default. It changes the transport check only.
import * as client from 'openid-client';

const [issuer, clientId, clientSecret, redirectUri, username, password, alg, resourceUrl] = process.argv.slice(2);
const base = new URL(issuer);

const config = await client.discovery(base, clientId, undefined, client.ClientSecretBasic(clientSecret), {
  execute: [client.allowInsecureRequests],
});
const report = { proofs: [], statuses: [] };
const part = (jwt, i) => JSON.parse(Buffer.from(jwt.split('.')[i], 'base64url').toString());
config[client.customFetch] = async (url, options) => {
  const proof = new Headers(options.headers).get('dpop');
  if (proof) report.proofs.push({ url: String(url), header: part(proof, 0), claims: part(proof, 1) });
  const response = await fetch(url, options);
  report.statuses.push({ url: String(url), status: response.status, error: response.status >= 400 ? response.headers.get('www-authenticate') : undefined });
  return response;
};

const keyPair = await client.randomDPoPKeyPair(alg, { extractable: true });
const DPoP = client.getDPoPHandle(config, keyPair);
report.public_jwk = await crypto.subtle.exportKey('jwk', keyPair.publicKey);

// A tiny browser: a cookie jar and manual redirects.
const jar = new Map();
async function browse(url, init = {}) {
  const headers = new Headers(init.headers);
  if (jar.size) headers.set('cookie', [...jar].map(([k, v]) => `${k}=${v}`).join('; '));
  const response = await fetch(new URL(url, base), { ...init, headers, redirect: 'manual' });
  for (const cookie of response.headers.getSetCookie()) {
    const [pair] = cookie.split(';');
    const [name, value] = pair.split('=');
    if (/Max-Age=0/i.test(cookie)) jar.delete(name);
    else jar.set(name, value);
  }
  return response;
}
const hidden = (html, name) => {
  const match = html.match(new RegExp(`name="${name}" value="([^"]*)"`));
  if (!match) throw new Error(`no ${name} field`);
  return match[1].replaceAll('&#x2f;', '/').replaceAll('&amp;', '&').replaceAll('&#x3d;', '=').replaceAll('&#x3f;', '?');
};
const form = (fields) => ({
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams(fields).toString(),
});

async function frontChannel(authorizationUrl) {
  let response = await browse(authorizationUrl);
  if (response.status === 302 && response.headers.get('location').startsWith('/o/login/')) {
    const loginPage = await (await browse(response.headers.get('location'))).text();
    const login = await browse('/o/login/', form({
      csrf_token: hidden(loginPage, 'csrf_token'), next: hidden(loginPage, 'next'), username, password,
    }));
    if (login.status !== 303) throw new Error(`login failed: ${login.status}`);
    response = await browse(authorizationUrl);
  }
  if (response.status === 200) {
    const consent = await response.text();
    response = await browse(authorizationUrl, form({ csrf_token: hidden(consent, 'csrf_token'), decision: 'allow' }));
  }
  const location = response.headers.get('location');
  if (!location || !location.startsWith(redirectUri)) throw new Error(`unexpected redirect ${response.status} ${location}`);
  return new URL(location);
}

const codeVerifier = client.randomPKCECodeVerifier();
const parameters = {
  redirect_uri: redirectUri,
  scope: 'openid read',
  code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
  code_challenge_method: 'S256',
  nonce: client.randomNonce(),
  state: client.randomState(),
};
const callback = await frontChannel(client.buildAuthorizationUrl(config, parameters));
const tokens = await client.authorizationCodeGrant(config, callback, {
  pkceCodeVerifier: codeVerifier,
  expectedNonce: parameters.nonce,
  expectedState: parameters.state,
  idTokenExpected: true,
}, undefined, { DPoP });
report.code = { token_type: tokens.token_type, access_token: tokens.access_token, sub: tokens.claims().sub };

const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP });
report.refresh = { token_type: refreshed.token_type, access_token: refreshed.access_token };

report.userinfo = await client.fetchUserInfo(config, refreshed.access_token, tokens.claims().sub, { DPoP });

const service = await client.clientCredentialsGrant(config, { scope: 'read' }, { DPoP });
report.client_credentials = { token_type: service.token_type, access_token: service.access_token };

const resource = await client.fetchProtectedResource(config, service.access_token, new URL(resourceUrl), 'GET', undefined, undefined, { DPoP });
report.resource = { status: resource.status, body: await resource.text() };

console.log(JSON.stringify(report));
