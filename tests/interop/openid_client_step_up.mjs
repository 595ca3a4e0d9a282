// Step-up with a certified relying-party library (openid-client v6) and RFC 9470.
//
// Usage: node openid_client_step_up.mjs ISSUER CLIENT_ID CLIENT_SECRET REDIRECT_URI USERNAME PASSWORD RESOURCE_URL MODE
// MODE `step-up`: the user signs in with a password alone and calls the example resource
//   server's step-up route (RESOURCE_URL, GET): openid-client parses its RFC 9470
//   challenge; the user adds an authenticator app (its codes are made here, RFC 6238 on
//   node:crypto, a third implementation beside the server's and the Rust tests'); a new
//   authorization with the challenge's acr_values and max_age asks for the app's code, and the
//   new token passes. Then acr_values with max_age=0 forces a whole new login, code included.
// MODE `unmet`: an essential acr the user cannot reach (second factors are off on that server)
//   comes back as unmet_authentication_requirements.
// Prints one JSON report; exits non-zero on any failure.
import { createHmac } from 'node:crypto';
import * as client from 'openid-client';
import { UserAgent, form, hidden } from './user_agent.mjs';

const [issuer, clientId, clientSecret, redirectUri, username, password, resourceUrl, mode] = process.argv.slice(2);
const base = new URL(issuer);
const config = await client.discovery(base, clientId, undefined, client.ClientSecretBasic(clientSecret), {
  execute: [client.allowInsecureRequests],
});
const MULTI_FACTOR = 'urn:tessera:acr:multi-factor';
const report = { acr_values_supported: config.serverMetadata().acr_values_supported };

/// RFC 4648 base32 and RFC 6238 (SHA-1, 6 digits, 30 s).
const base32 = (text) => {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0, value = 0;
  const out = [];
  for (const c of text.replace(/=+$/, '')) {
    value = (value << 5) | alphabet.indexOf(c.toUpperCase());
    bits += 5;
    if (bits >= 8) { bits -= 8; out.push((value >>> bits) & 0xff); }
  }
  return Buffer.from(out);
};
const totpAt = (secret, step) => {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', secret).update(counter).digest();
  const offset = mac[19] & 0xf;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, '0');
};

/// Codes to type, in order.
const codes = [];
const ua = new UserAgent({ base, username, password, redirectUri, nextCode: () => codes.shift() });

async function authorize(extra) {
  const codeVerifier = client.randomPKCECodeVerifier();
  const parameters = {
    redirect_uri: redirectUri,
    scope: 'openid read',
    code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    nonce: client.randomNonce(),
    state: client.randomState(),
    ...extra,
  };
  const { callback } = await ua.frontChannel(client.buildAuthorizationUrl(config, parameters));
  return client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: codeVerifier,
    expectedNonce: parameters.nonce,
    expectedState: parameters.state,
    idTokenExpected: true,
    maxAge: extra.max_age === undefined ? undefined : Number(extra.max_age),
  });
}

async function callResource(token) {
  try {
    const response = await client.fetchProtectedResource(config, token, new URL(resourceUrl), 'GET');
    return { status: response.status };
  } catch (e) {
    if (!(e instanceof client.WWWAuthenticateChallengeError)) throw e;
    return { status: e.response?.status ?? e.status, challenges: e.cause };
  }
}

if (mode === 'unmet') {
  const claims = JSON.stringify({ id_token: { acr: { essential: true, values: [MULTI_FACTOR] } } });
  try {
    await authorize({ claims });
    report.unmet = 'tokens issued';
  } catch (e) {
    report.unmet = e.error ?? `${e.name}: ${e.message}`;
  }
  console.log(JSON.stringify(report));
  process.exit(0);
}

// A password login, and the step-up route's challenge.
const weak = await authorize({});
report.weak_acr = weak.claims().acr;
const refused = await callResource(weak.access_token);
report.refused_status = refused.status;
const challenge = refused.challenges?.find((c) => c.scheme === 'bearer');
report.challenge = challenge?.parameters;

// The user adds an authenticator app, and makes recovery codes, on another device (whose
// session proves the app; this one's stays a password login).
const phone = new UserAgent({ base, username, password, redirectUri });
const loginPage = await (await phone.browse('/o/login/')).text();
const loggedIn = await phone.browse('/o/login/', form({
  csrf_token: hidden(loginPage, 'csrf_token'), next: '', username, password,
}));
if (loggedIn.status !== 303) throw new Error(`the phone's login failed: ${loggedIn.status}`);
const security = async (fields) => {
  const page = await (await phone.browse('/o/security/')).text();
  return (await phone.browse('/o/security/', form({ csrf_token: hidden(page, 'csrf_token'), ...fields }))).text();
};
const started = await security({ action: 'start_totp' });
const secret = base32(started.match(/<code id="totp-secret">([A-Z2-7]+)<\/code>/)[1]);
const step = Math.floor(Date.now() / 1000 / 30);
const confirmed = await security({ action: 'confirm_totp', code: totpAt(secret, step) });
if (!confirmed.includes('Your authenticator app is on')) throw new Error('the app was not turned on');
const recovery = [...(await security({ action: 'recovery_codes' })).matchAll(/<li><code>([a-z2-7-]+)<\/code><\/li>/g)].map((m) => m[1]);

// A new authorization with the challenge's values: the session shows the app's next code.
codes.push(totpAt(secret, step + 1));
const typedBefore = ua.codesTyped;
const strong = await authorize({ acr_values: challenge.parameters.acr_values, max_age: challenge.parameters.max_age });
report.step_up_codes_typed = ua.codesTyped - typedBefore;
report.strong_claims = { acr: strong.claims().acr, amr: strong.claims().amr, auth_time: strong.claims().auth_time };
report.strong_call = (await callResource(strong.access_token)).status;

// acr_values with max_age=0: a whole new login, password and second factor.
codes.push(recovery[0]);
const passwordsBefore = ua.passwordsTyped;
const fresh = await authorize({ acr_values: MULTI_FACTOR, max_age: '0' });
report.fresh_codes_typed = ua.codesTyped - typedBefore;
report.fresh_passwords_typed = ua.passwordsTyped - passwordsBefore;
report.fresh_claims = { acr: fresh.claims().acr, amr: fresh.claims().amr, auth_time: fresh.claims().auth_time };
console.log(JSON.stringify(report));
