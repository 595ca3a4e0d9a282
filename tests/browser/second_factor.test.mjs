// A person adds an authenticator app and recovery codes on /o/security/ in Debian's chromium
// (driven by playwright-core), then signs in with the password and the app's next code. The QR
// code must be visible without any script of ours (it is an SVG drawn by the server); the codes
// are made here with RFC 6238 on node:crypto, as an app would make them. Every page is saved as
// a screenshot.
//
// Started by tests/api/browser.rs with TESSERA_URL, USERNAME, PASSWORD and SCREENSHOTS set.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
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
const shot = (page, name) => page.screenshot({ path: path.join(screenshots, `${name}.png`), fullPage: true });

const base32 = (text) => {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0, value = 0;
  const out = [];
  for (const c of text) {
    value = (value << 5) | alphabet.indexOf(c);
    bits += 5;
    if (bits >= 8) { bits -= 8; out.push((value >>> bits) & 0xff); }
  }
  return Buffer.from(out);
};
const totpAt = (secret, step) => {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', secret).update(counter).digest();
  return String((mac.readUInt32BE(mac[19] & 0xf) & 0x7fffffff) % 1_000_000).padStart(6, '0');
};

async function logIn(page) {
  await page.goto(`${base}/o/login/`);
  await page.fill('#username', env('USERNAME'));
  await page.fill('#password', env('PASSWORD'));
  await page.click('button[type=submit]');
}

test('a person adds an authenticator app and signs in with its code', async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 480, height: 900 }, javaScriptEnabled: false });
    await logIn(page);
    await page.goto(`${base}/`);
    await page.getByRole('link', { name: 'Sign-in security' }).click();
    await shot(page, 'factor-01-security');
    await page.getByRole('button', { name: 'Add an authenticator app' }).click();
    const qr = page.locator('figure.qr svg');
    await qr.waitFor({ state: 'visible' });
    const box = await qr.boundingBox();
    assert.ok(box.width >= 150 && box.height >= 150, `the QR code is drawn large enough: ${JSON.stringify(box)}`);
    await shot(page, 'factor-02-qr-code');
    const secret = base32((await page.locator('#totp-secret').textContent()).trim());
    const step = Math.floor(Date.now() / 1000 / 30);
    await page.fill('#code', '000000');
    await page.getByRole('button', { name: 'Turn on' }).click();
    assert.match(await page.locator('[role=alert]').textContent(), /not right/);
    await page.fill('#code', totpAt(secret, step));
    await page.getByRole('button', { name: 'Turn on' }).click();
    assert.match(await page.locator('[role=status]').textContent(), /authenticator app is on/);
    await page.getByRole('button', { name: 'Make recovery codes' }).click();
    assert.equal(await page.locator('#recovery-codes li').count(), 10);
    await shot(page, 'factor-03-recovery-codes');

    // Another browser: the password, then the app's next code.
    const other = await browser.newPage({ viewport: { width: 480, height: 900 }, javaScriptEnabled: false });
    await logIn(other);
    assert.match(other.url(), /\/o\/login\/factor\//);
    await shot(other, 'factor-04-second-step');
    await other.fill('#code', totpAt(secret, step + 1));
    await other.getByRole('button', { name: 'Continue' }).click();
    assert.equal(new URL(other.url()).pathname, '/');
    await other.goto(`${base}/o/security/`);
    assert.match(await other.locator('h1').textContent(), /Sign-in security/);
    await shot(other, 'factor-05-signed-in');
  } finally {
    await browser.close();
  }
});
