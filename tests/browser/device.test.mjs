// The device authorization grant (RFC 8628) as it happens: a device (openid-client v6, the
// certified relying-party library) asks for codes and polls the token endpoint, while a person
// in Debian's chromium (driven by playwright-core) opens `verification_uri_complete`, logs in,
// checks the code, sees which app asks for what, and allows it. The device then gets its
// tokens, with openid-client's own checks of the ID token. Every page is saved as a screenshot.
//
// Started by tests/api/browser.rs, which runs a real Tessera and passes it in the environment:
// TESSERA_URL, USERNAME, PASSWORD, SCREENSHOTS (a folder), DEVICE_CLIENT_ID (a public app with
// the device code and refresh token grants), DEVICE_CLIENT_NAME.
//
// The only relaxation is `allowInsecureRequests`: the test server listens on plain-http
// loopback, which openid-client refuses by default.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as client from 'openid-client';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} must be set`);
  return value;
};
const base = env('TESSERA_URL');
const screenshots = env('SCREENSHOTS');
fs.mkdirSync(screenshots, { recursive: true });

async function shot(page, name) {
  await page.screenshot({ path: path.join(screenshots, `${name}.png`), fullPage: true });
}

test('a device gets tokens once a person approves its code in the browser', async () => {
  const config = await client.discovery(new URL(base), env('DEVICE_CLIENT_ID'), undefined, client.None(), {
    execute: [client.allowInsecureRequests],
  });
  assert.equal(config.serverMetadata().device_authorization_endpoint, `${base}/o/device_authorization/`);
  const device = await client.initiateDeviceAuthorization(config, { scope: 'openid profile read' });
  assert.match(device.user_code, /^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/);
  assert.equal(device.verification_uri, `${base}/o/device/`);
  // The device polls from now on, at the interval the server gave (and slower if told to).
  const polling = client.pollDeviceAuthorizationGrant(config, device);

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 420, height: 800 } });
    // 1. The link the device shows (or its QR code) needs a login first.
    await page.goto(device.verification_uri_complete);
    assert.match(page.url(), /\/o\/login\/\?next=/);
    await shot(page, 'device-01-login');
    await page.getByLabel('Username').fill(env('USERNAME'));
    await page.getByLabel('Password').fill(env('PASSWORD'));
    await page.getByRole('button', { name: 'Log in' }).click();

    // 2. Back on the device page with the code filled in.
    await page.getByRole('button', { name: 'Continue' }).waitFor();
    assert.equal(new URL(page.url()).pathname, '/o/device/');
    assert.equal(await page.getByLabel('Code').inputValue(), device.user_code);
    await shot(page, 'device-02-enter-code');
    await page.getByRole('button', { name: 'Continue' }).click();

    // 3. The confirmation names the app, the code and each scope; nothing happens until Allow.
    await page.getByRole('button', { name: 'Allow' }).waitFor();
    const confirmation = await page.locator('main').innerText();
    assert.ok(confirmation.includes(env('DEVICE_CLIENT_NAME')), confirmation);
    assert.ok(confirmation.includes(device.user_code), confirmation);
    assert.ok(confirmation.includes('Read your data'), confirmation);
    await shot(page, 'device-03-confirm');
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.getByRole('heading', { name: 'Device connected' }).waitFor();
    await shot(page, 'device-04-done');

    // 4. The device's poll ends with tokens that openid-client has checked.
    const tokens = await polling;
    assert.ok(tokens.access_token);
    assert.ok(tokens.refresh_token, 'the app has the refresh token grant');
    assert.equal(tokens.scope, 'openid profile read');
    const claims = tokens.claims();
    assert.equal(claims.aud, env('DEVICE_CLIENT_ID'));
    assert.equal(claims.iss, base);
    const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
    assert.ok(refreshed.access_token && refreshed.refresh_token !== tokens.refresh_token);

    // 5. The app is listed among the person's authorized apps.
    await page.goto(`${base}/o/authorized_tokens/`);
    await page.getByText(env('DEVICE_CLIENT_NAME')).first().waitFor();
    await shot(page, 'device-05-authorized-apps');
  } finally {
    await browser.close();
  }
});
