// Two findings of the adversarial review (issue 11, SECURITY.md) where what the browser does is
// the point, replayed in Debian's chromium driven by playwright-core:
//  - finding 1: a user registers an app and adds "skip consent" to the form; another logged-in
//    user who follows a link to it must see the consent page, not land on the attacker's site;
//  - finding 3: `next=/%09/evil.example/phish` on the login page; chromium strips the tab from
//    a Location, so `/\t/evil.example` would take the user to another origin after logging in.
//
// Started by tests/api/browser.rs with TESSERA_URL, USERNAME, PASSWORD (the victim),
// ATTACKER, ATTACKER_PASSWORD and SCREENSHOTS in the environment.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} must be set`);
  return value;
};
const base = env('TESSERA_URL');
const screenshots = env('SCREENSHOTS');
fs.mkdirSync(screenshots, { recursive: true });
const EVIL_REDIRECT = 'https://evil.example/cb';

async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

async function logIn(page, username, password) {
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Log in' }).click()]);
}

test('finding 1: an app a user registered cannot skip another user\'s consent', async () => {
  const browser = await launch();
  try {
    // The attacker registers an app and slips "skip consent" into the form.
    const attacker = await (await browser.newContext()).newPage();
    await attacker.goto(`${base}/o/applications/register/`);
    await logIn(attacker, env('ATTACKER'), env('ATTACKER_PASSWORD'));
    await attacker.getByLabel('Name', { exact: true }).fill('Totally legit');
    await attacker.getByLabel(/Public \(/).check();
    await attacker.getByLabel(/^Redirect URIs/).fill(EVIL_REDIRECT);
    await attacker.evaluate(() => {
      const field = document.createElement('input');
      Object.assign(field, { type: 'hidden', name: 'skip_consent', value: 'on' });
      document.querySelector('form').appendChild(field);
    });
    await attacker.getByRole('button', { name: 'Register' }).click();
    await attacker.locator('#client-id').waitFor();
    const clientId = (await attacker.textContent('#client-id')).trim();

    // The victim, logged in, follows the attacker's link.
    const victim = await (await browser.newContext()).newPage();
    await victim.goto(`${base}/o/login/`);
    await logIn(victim, env('USERNAME'), env('PASSWORD'));
    const query = new URLSearchParams({
      response_type: 'code', client_id: clientId, redirect_uri: EVIL_REDIRECT, scope: 'openid read',
      state: 's', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256',
    });
    await victim.goto(`${base}/o/authorize/?${query}`);
    await victim.getByRole('button', { name: 'Allow' }).waitFor();
    await victim.screenshot({ path: path.join(screenshots, 'review-1-consent-shown.png'), fullPage: true });
    assert.equal(new URL(victim.url()).origin, new URL(base).origin, 'the victim stays on Tessera');
    const text = await victim.textContent('main');
    assert.match(text, /Totally legit/);
    assert.match(text, /registered by a user of this server/);
    assert.match(text, /evil\.example/, 'the redirect host is named');
  } finally {
    await browser.close();
  }
});

test('finding 3: a tab in next cannot send the user to another site after logging in', async () => {
  const browser = await launch();
  try {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${base}/o/login/?next=%2F%09%2Fevil.example%2Fphish`);
    await logIn(page, env('USERNAME'), env('PASSWORD'));
    await page.screenshot({ path: path.join(screenshots, 'review-3-after-login.png'), fullPage: true });
    const landed = new URL(page.url());
    assert.equal(landed.origin, new URL(base).origin, `landed on ${page.url()}`);
    assert.equal(landed.pathname, '/');
  } finally {
    await browser.close();
  }
});
