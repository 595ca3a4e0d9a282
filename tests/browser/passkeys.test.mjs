// Passkeys in Debian's chromium (driven by playwright-core) with Chromium's own virtual
// authenticator (the DevTools WebAuthn domain: CTAP2, a platform authenticator that keeps
// discoverable credentials and verifies its user). A person registers a passkey on
// /o/security/, then signs in with it without typing a username, and shows it as the second
// step after the password. Every step is saved as a screenshot.
//
// Started by tests/api/browser.rs with TESSERA_URL (an http://localhost issuer: a relying party
// needs a domain name), USERNAME, PASSWORD and SCREENSHOTS set.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import * as client from 'openid-client';

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} must be set`);
  return value;
};
const base = env('TESSERA_URL');
const screenshots = env('SCREENSHOTS');
fs.mkdirSync(screenshots, { recursive: true });
const shot = (page, name) => page.screenshot({ path: path.join(screenshots, `${name}.png`), fullPage: true });

test('a person registers a passkey and signs in with it, with and without the password', async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 480, height: 900 } });
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send('WebAuthn.enable');
    const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: {
        protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true,
        isUserVerified: true, automaticPresenceSimulation: true,
      },
    });

    await page.goto(`${base}/o/login/`);
    await page.fill('#username', env('USERNAME'));
    await page.fill('#password', env('PASSWORD'));
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.goto(`${base}/o/security/`);
    await page.fill('#passkey-name', 'Chromium virtual key');
    await page.getByRole('button', { name: 'Add a passkey' }).click();
    await shot(page, 'passkey-01-prompt');
    await page.getByRole('button', { name: 'Create the passkey' }).click();
    await page.waitForSelector('text=Your passkey is added');
    assert.match(await page.locator('table').textContent(), /Chromium virtual key/);
    await shot(page, 'passkey-02-added');
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    assert.equal(credentials.length, 1, 'the authenticator keeps one credential');
    assert.ok(credentials[0].isResidentCredential, 'a discoverable credential (no username needed)');
    assert.equal(credentials[0].rpId, new URL(base).hostname, 'the relying party is the issuer\'s host');

    // Logged out, an app sends the person to authorize. The login page asks the browser for a
    // passkey through its autofill (conditional mediation); the virtual authenticator answers
    // at once with the one passkey it has, as a person picking it from the username field would.
    // No username, no password. Then the consent page.
    await page.goto(`${base}/`);
    await page.getByRole('button', { name: 'Log out' }).click();
    const config = await client.discovery(new URL(base), env('CLIENT_ID'), env('CLIENT_SECRET'), undefined, {
      execute: [client.allowInsecureRequests],
    });
    const redirectUri = env('REDIRECT_URI');
    const codeVerifier = client.randomPKCECodeVerifier();
    const parameters = {
      redirect_uri: redirectUri,
      scope: 'openid profile',
      code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
      nonce: client.randomNonce(),
      state: client.randomState(),
    };
    let callback = null;
    await page.route(`${redirectUri}**`, (route) => {
      callback = new URL(route.request().url());
      return route.fulfill({ status: 200, contentType: 'text/plain', body: 'the app got its code' });
    });
    await page.goto(client.buildAuthorizationUrl(config, parameters).href);
    await page.waitForURL(/\/o\/authorize\//);
    await shot(page, 'passkey-03-consent');
    await page.getByRole('button', { name: /Allow/ }).click();
    await page.waitForURL(`${redirectUri}**`);
    assert.ok(callback, 'the app got its callback');
    const tokens = await client.authorizationCodeGrant(config, callback, {
      pkceCodeVerifier: codeVerifier,
      expectedNonce: parameters.nonce,
      expectedState: parameters.state,
      idTokenExpected: true,
    });
    const claims = tokens.claims();
    assert.deepEqual(claims.amr, ['hwk', 'user', 'mfa'], 'RFC 8176: a key in hardware and user verification');
    assert.equal(claims.acr, 'urn:tessera:acr:multi-factor');
    assert.ok(Math.abs(claims.auth_time - Date.now() / 1000) < 60, `auth_time is now: ${claims.auth_time}`);
    const used = (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials[0];
    assert.ok(used.signCount >= 1, `the authenticator signed: ${used.signCount}`);

    // The password first, on another device that holds the same key but not as a discoverable
    // credential (so the login page's autofill offers nothing there): the second step asks for
    // the passkey, and its button answers.
    const other = await context.newPage();
    const cdp2 = await context.newCDPSession(other);
    await cdp2.send('WebAuthn.enable');
    const second = await cdp2.send('WebAuthn.addVirtualAuthenticator', {
      options: {
        protocol: 'ctap2', transport: 'usb', hasResidentKey: true, hasUserVerification: true,
        isUserVerified: true, automaticPresenceSimulation: true,
      },
    });
    await cdp2.send('WebAuthn.addCredential', {
      authenticatorId: second.authenticatorId,
      credential: {
        credentialId: used.credentialId, isResidentCredential: false, rpId: used.rpId,
        privateKey: used.privateKey, signCount: used.signCount,
      },
    });
    await context.clearCookies();
    await other.goto(`${base}/o/login/`);
    await other.fill('#username', env('USERNAME'));
    await other.fill('#password', env('PASSWORD'));
    await other.getByRole('button', { name: 'Log in' }).click();
    await other.waitForURL(/\/o\/login\/factor\//);
    assert.equal(await other.locator('#code').count(), 0, 'a user with a passkey only is asked for no code');
    await shot(other, 'passkey-04-second-step');
    await other.getByRole('button', { name: 'Use your passkey' }).click();
    await other.waitForURL(`${base}/`);
    await other.goto(`${base}/o/security/`);
    assert.match(await other.locator('h1').textContent(), /Sign-in security/);
    await shot(other, 'passkey-05-signed-in');
  } finally {
    await browser.close();
  }
});
