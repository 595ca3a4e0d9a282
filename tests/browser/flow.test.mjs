// The classic walk-through as a person does it, in Debian's chromium driven by playwright-core:
// log in, register an app in /o/applications/, run the authorization code flow with it
// (consent, callback), exchange and refresh the tokens, come back without being asked again,
// then withdraw the app on the authorized-apps page and watch its refresh token stop working;
// finally walk the playground (the built-in test consumer) with a confidential app.
// Every page visited is saved as a screenshot.
//
// Started by tests/api/browser.rs, which runs a real Tessera and passes it in the environment:
// TESSERA_URL, USERNAME, PASSWORD, SCREENSHOTS (a folder).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} must be set`);
  return value;
};
const base = env('TESSERA_URL');
let clientId = null; // registered through the pages below
const screenshots = env('SCREENSHOTS');
fs.mkdirSync(screenshots, { recursive: true });

async function shot(page, name) {
  await page.screenshot({ path: path.join(screenshots, `${name}.png`), fullPage: true });
}

function pkce() {
  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  return { verifier, challenge };
}

// The app's side: a loopback callback that hands each redirect's query to the test.
async function callbackServer() {
  let deliver = null;
  const server = http.createServer((req, res) => {
    res.setHeader('content-type', 'text/html');
    res.end('<!doctype html><title>Example app</title><h1>Example app: callback received</h1>');
    const params = new URL(req.url, 'http://127.0.0.1').searchParams;
    if (deliver) deliver(params);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    server,
    redirectUri: `http://127.0.0.1:${server.address().port}/callback`,
    next: () => new Promise((resolve) => { deliver = resolve; }),
  };
}

async function token(form) {
  const response = await fetch(`${base}/o/token/`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ client_id: clientId, ...form }),
  });
  return { status: response.status, body: await response.json() };
}

function authorizeUrl(redirectUri, challenge, state) {
  const query = new URLSearchParams({
    response_type: 'code', client_id: clientId, redirect_uri: redirectUri, scope: 'read',
    state, code_challenge: challenge, code_challenge_method: 'S256',
  });
  return `${base}/o/authorize/?${query}`;
}

test('a person logs in, consents, and later withdraws the app', async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const app = await callbackServer();
  try {
    const page = await browser.newPage({ viewport: { width: 420, height: 800 } });

    // 1. The applications page needs a login; a wrong password is refused without saying why.
    await page.goto(`${base}/o/applications/`);
    assert.match(page.url(), /\/o\/login\//);
    await shot(page, '01-login');
    await page.getByLabel('Username').fill(env('USERNAME'));
    await page.getByLabel('Password').fill('not the password');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByText('Invalid username or password.').waitFor();
    await shot(page, '02-login-failed');
    await page.getByLabel('Password').fill(env('PASSWORD'));
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('link', { name: 'Register a new application' }).click();

    // 2. Register a public app (PKCE, no secret) with a loopback redirect URI.
    await page.getByLabel('Name', { exact: true }).fill('Browser App');
    await page.getByLabel(/Public \(/).check();
    await page.getByLabel(/^Redirect URIs/).fill('http://127.0.0.1/callback');
    await shot(page, '03-register');
    await page.getByRole('button', { name: 'Register' }).click();
    await page.locator('#client-id').waitFor();
    clientId = (await page.textContent('#client-id')).trim();
    assert.equal(await page.locator('#client-secret').count(), 0, 'a public app has no secret');
    await shot(page, '04-registered');

    // 3. The app sends the browser to Tessera; already logged in, so straight to consent.
    const first = pkce();
    const firstCode = app.next();
    await page.goto(authorizeUrl(app.redirectUri, first.challenge, 'state-1'));

    // 4. The consent page names the app and the scope.
    await page.getByRole('button', { name: 'Allow' }).waitFor();
    assert.match(page.url(), /\/o\/authorize\//);
    const consent = await page.textContent('main');
    assert.match(consent, /Browser App/);
    assert.match(consent, /Read your data/);
    await shot(page, '05-consent');
    await page.getByRole('button', { name: 'Allow' }).click();

    // 5. Back at the app with a code, the state and the issuer.
    const params = await firstCode;
    await page.waitForURL(/\/callback\?/);
    await shot(page, '06-callback');
    assert.equal(params.get('state'), 'state-1');
    assert.equal(params.get('iss'), base);
    const tokens = await token({
      grant_type: 'authorization_code', code: params.get('code'), redirect_uri: app.redirectUri, code_verifier: first.verifier,
    });
    assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
    const refreshed = await token({ grant_type: 'refresh_token', refresh_token: tokens.body.refresh_token });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));

    // 6. A second authorization of the same scope does not ask again.
    const second = pkce();
    const secondCode = app.next();
    await page.goto(authorizeUrl(app.redirectUri, second.challenge, 'state-2'));
    const again = await secondCode;
    assert.ok(again.get('code'), 'a code without a consent page');
    assert.equal(again.get('state'), 'state-2');

    // 7. The authorized-apps page lists the app; withdrawing it kills its refresh token.
    await page.goto(`${base}/o/authorized_tokens/`);
    assert.match(await page.textContent('main'), /Browser App/);
    await shot(page, '07-authorized-apps');
    await page.getByRole('button', { name: 'Revoke access' }).click();
    await page.getByText('You have not authorized any app.').waitFor();
    await shot(page, '08-revoked');
    const afterRevoke = await token({ grant_type: 'refresh_token', refresh_token: refreshed.body.refresh_token });
    assert.equal(afterRevoke.status, 400);
    assert.equal(afterRevoke.body.error, 'invalid_grant');

    // 8. The home page, logged in.
    await page.goto(`${base}/`);
    await page.getByRole('link', { name: 'Apps you have authorized' }).waitFor();
    await shot(page, '09-home');

    // 9. The playground: register a confidential app whose redirect URI is the playground's
    //    callback, then let the playground run the whole flow with it.
    await page.goto(`${base}/o/applications/register/`);
    await page.getByLabel('Name', { exact: true }).fill('Playground App');
    await page.getByLabel(/^Redirect URIs/).fill(`${base}/o/playground/callback/`);
    await page.getByRole('button', { name: 'Register' }).click();
    const secret = (await page.textContent('#client-secret')).trim();
    await shot(page, '10-registered-with-secret');
    await page.goto(`${base}/o/playground/`);
    await page.getByLabel('One of your applications').selectOption({ label: 'Playground App' });
    await page.getByLabel('Client secret', { exact: false }).fill(secret);
    await page.getByLabel('Scope').fill('read');
    await page.getByRole('button', { name: 'Make the authorization link' }).click();
    await shot(page, '11-playground-link');
    await page.locator('#authorize-link').click();
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.locator('#access-token').waitFor();
    assert.match(await page.textContent('#claims'), /"scope": "read"/);
    const firstRefresh = await page.textContent('#refresh-token');
    await shot(page, '12-playground-tokens');
    await page.getByRole('button', { name: 'Refresh' }).click();
    await page.locator('#refresh-token').waitFor();
    assert.notEqual(await page.textContent('#refresh-token'), firstRefresh, 'the refresh token rotated');
    await page.getByLabel('API URL', { exact: false }).fill(`${base}/healthz`);
    await page.getByRole('button', { name: 'Call' }).click();
    await page.locator('#api-status').waitFor();
    assert.equal(await page.textContent('#api-status'), '200');
    await shot(page, '13-playground-api-call');

    // 10. The profile page: what apps may learn about the user; a bad URL is explained and
    //     what was typed is kept.
    await page.goto(`${base}/`);
    await page.getByRole('link', { name: 'Your profile' }).click();
    await page.getByLabel('Full name').fill('Alice Liddell');
    await page.getByLabel('Picture URL').fill('not a url');
    await page.getByLabel('Picture URL').evaluate((input) => { input.type = 'text'; });
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByText('the picture must be an http(s) URL').waitFor();
    assert.equal(await page.getByLabel('Full name').inputValue(), 'Alice Liddell');
    await page.getByLabel('Picture URL').fill('');
    await page.getByLabel('Email').fill('alice@wonderland.example');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByText('Saved.').waitFor();
    assert.equal(await page.getByLabel('Full name').inputValue(), 'Alice Liddell');
    await shot(page, '14-profile');

    // 11. Logging out: a bare end-session link asks first; confirming ends the session.
    await page.goto(`${base}/o/logout/`);
    await page.getByRole('button', { name: 'Log out' }).waitFor();
    await shot(page, '15-logout-confirm');
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.getByText('You are logged out').waitFor();
    await shot(page, '16-logged-out');
    await page.goto(`${base}/o/applications/`);
    assert.match(page.url(), /\/o\/login\//, 'the session is over');
  } finally {
    await browser.close();
    app.server.close();
  }
});
