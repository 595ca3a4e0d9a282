// The operator's console (/admin/) in Debian's chromium, driven by playwright-core, without
// any script of ours: an operator logs in, finds a user, revokes one of their grants and
// disables them (each time the refresh token, tried from node with fetch, fails at once),
// creates and deletes a client, walks a key rotation through the runbook's waits (shortened by
// config to seconds), and reads it all in the audit trail; a user without the operator role
// gets 403. Every console page is saved as test-output/browser/console-*.png.
//
// Started by tests/api/browser.rs, which runs a real Tessera (jwks_max_age 2 s, access tokens
// 3 s) and passes in the environment: TESSERA_URL, SCREENSHOTS, OPERATOR and
// OPERATOR_PASSWORD, NON_OPERATOR and NON_OPERATOR_PASSWORD, TARGET_USER (a user with two
// grants), GRANT_TO_REVOKE and REFRESH_TO_REVOKE (one grant and its refresh token),
// REFRESH_TOKEN (the other grant's), CLIENT_ID and CLIENT_SECRET (the client holding them).
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

async function shot(page, name) {
  await page.screenshot({ path: path.join(screenshots, `console-${name}.png`), fullPage: true });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/// A refresh-token request, as the client's backend would make it.
async function refresh(refreshToken) {
  const response = await fetch(`${base}/o/token/`, {
    method: 'POST',
    headers: {
      authorization: 'Basic ' + Buffer.from(`${env('CLIENT_ID')}:${env('CLIENT_SECRET')}`).toString('base64'),
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }),
  });
  return { status: response.status, body: await response.json() };
}

async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

async function logIn(page, username, password) {
  await page.goto(`${base}/admin/`);
  assert.match(page.url(), /\/o\/login\/\?next=%2Fadmin%2F$/);
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
}

/// Reloads `page` until `check` is true (a wait the runbook asks for), for at most `seconds`.
async function waitFor(page, check, seconds) {
  for (let i = 0; i < seconds * 2; i++) {
    if (await check()) return;
    await sleep(500);
    await page.reload();
  }
  assert.fail('waited too long');
}

test('a user without the operator role gets 403 on the console', async () => {
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
    await logIn(page, env('NON_OPERATOR'), env('NON_OPERATOR_PASSWORD'));
    await page.getByRole('heading', { name: 'Operators only' }).waitFor();
    assert.equal(new URL(page.url()).pathname, '/admin/');
    const response = await page.goto(`${base}/admin/users`);
    assert.equal(response.status(), 403);
    await shot(page, '00-forbidden');
    await page.goto(`${base}/`);
    assert.equal(await page.getByRole('link', { name: 'Operator console' }).count(), 0);
  } finally {
    await browser.close();
  }
});

test('an operator manages users, grants, clients and keys, and reads it in the audit trail', async () => {
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
    await logIn(page, env('OPERATOR'), env('OPERATOR_PASSWORD'));
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    assert.equal(await page.locator('svg.chart').count(), 1, 'the chart is drawn on the server');
    assert.ok((await page.locator('#health-storage').innerText()).startsWith('OK'));
    await shot(page, '01-overview');
    await page.goto(`${base}/`);
    await page.getByRole('link', { name: 'Operator console' }).click();
    await page.getByRole('heading', { name: 'Overview' }).waitFor();

    // Find the user.
    await page.getByRole('link', { name: 'Users', exact: true }).click();
    await page.getByLabel('Search by username, email or user id').fill(env('TARGET_USER'));
    await page.getByRole('button', { name: 'Search' }).click();
    await shot(page, '02-users');
    await page.goto(`${base}/admin/users/new`);
    await shot(page, '02-user-new');
    await page.goBack();
    await page.getByRole('link', { name: env('TARGET_USER'), exact: true }).click();
    await page.getByRole('heading', { name: env('TARGET_USER') }).waitFor();
    await shot(page, '03-user');

    // Revoke one grant: its refresh token fails at once, the other still works.
    const row = page.locator(`#grant-${env('GRANT_TO_REVOKE')}`);
    await row.getByRole('button', { name: 'Revoke' }).click();
    await row.getByText('revoked').waitFor();
    const revoked = await refresh(env('REFRESH_TO_REVOKE'));
    assert.equal(revoked.status, 400);
    assert.equal(revoked.body.error, 'invalid_grant');
    const stillLive = await refresh(env('REFRESH_TOKEN'));
    assert.equal(stillLive.status, 200, JSON.stringify(stillLive.body));

    // Disable the user, after confirming: the other refresh token fails at once too.
    await page.getByRole('button', { name: 'Disable…' }).click();
    await page.getByRole('heading', { name: 'Disable this user?' }).waitFor();
    await shot(page, '04-confirm-disable');
    await page.getByRole('button', { name: 'Disable user' }).click();
    await page.locator('#user-state', { hasText: 'disabled' }).waitFor();
    const afterDisable = await refresh(stillLive.body.refresh_token);
    assert.equal(afterDisable.status, 400);
    assert.equal(afterDisable.body.error, 'invalid_grant');
    await shot(page, '05-user-disabled');

    await page.goto(`${base}/admin/grants?user=${encodeURIComponent(env('TARGET_USER'))}`);
    assert.equal(await page.getByText('live', { exact: true }).count(), 0, 'no grant of theirs is live');
    await shot(page, '06-grants');

    // Create a client: its secret is shown once; then delete it, after confirming.
    await page.goto(`${base}/admin/clients`);
    await shot(page, '07-clients');
    await page.getByRole('link', { name: 'New client' }).click();
    await shot(page, '08-client-new');
    await page.getByLabel('Name', { exact: true }).fill('Console test app');
    await page.getByLabel('Client credentials (the app acts for itself)').check();
    await page.getByLabel('Authorization code (users log in)').uncheck();
    await page.getByLabel('Refresh token', { exact: true }).uncheck();
    await page.getByRole('button', { name: 'Create' }).click();
    await page.locator('#client-secret').waitFor();
    const clientId = await page.locator('#client-id').innerText();
    await shot(page, '09-client-created');
    await page.goto(`${base}/admin/clients/${clientId}`);
    assert.equal(await page.locator('#client-secret').count(), 0, 'the secret is shown once only');
    await page.getByRole('link', { name: 'Edit' }).click();
    await shot(page, '10-client-edit');
    await page.goto(`${base}/admin/clients/${clientId}`);
    await page.getByRole('button', { name: 'Delete…' }).click();
    await page.getByRole('heading', { name: 'Delete this client?' }).waitFor();
    await shot(page, '11-confirm-delete-client');
    await page.getByRole('button', { name: 'Delete client' }).click();
    await page.getByRole('heading', { name: 'Clients' }).waitFor();
    assert.equal(await page.getByText('Console test app').count(), 0);

    // A key rotation, step by step, with the waits the page shows.
    await page.goto(`${base}/admin/keys`);
    const kids = async () => page.locator('tr[id^="key-"]').evaluateAll((rows) => rows.map((r) => r.id.slice(4)));
    const before = await kids();
    const oldKid = (await page.locator('tr[data-status="signing"]').getAttribute('id')).slice(4);
    await page.getByLabel('Algorithm').selectOption('ES256');
    await page.getByRole('button', { name: 'Generate a key' }).click();
    await page.waitForURL(`${base}/admin/keys`);
    const newKid = (await kids()).find((kid) => !before.includes(kid));
    assert.ok(newKid, 'a new key is listed');
    const newRow = page.locator(`#key-${newKid}`);
    assert.equal(await newRow.getAttribute('data-status'), 'published');
    assert.match(await newRow.locator('.next-step').innerText(), /safe to promote at/);
    await shot(page, '12-keys-generated');
    // Too early: the page warns and asks.
    await newRow.getByRole('button', { name: 'Promote' }).click();
    await page.getByText('Not safe yet.').waitFor();
    await shot(page, '13-promote-warning');
    await page.getByRole('link', { name: 'Cancel' }).click();
    await waitFor(page, async () => /safe to promote now/.test(await page.locator(`#key-${newKid} .next-step`).innerText()), 15);
    await page.locator(`#key-${newKid}`).getByRole('button', { name: 'Promote' }).click();
    await page.waitForURL(`${base}/admin/keys`);
    assert.equal(await page.locator(`#key-${newKid}`).getAttribute('data-status'), 'signing');
    const oldRow = () => page.locator(`#key-${oldKid}`);
    assert.match(await oldRow().locator('.next-step').innerText(), /safe to retire at/);
    await shot(page, '14-keys-promoted');
    await oldRow().getByRole('button', { name: 'Retire…' }).click();
    await page.getByText('Not safe yet.').waitFor();
    await shot(page, '15-retire-warning');
    await page.getByRole('link', { name: 'Cancel' }).click();
    await waitFor(page, async () => /safe to retire now/.test(await oldRow().locator('.next-step').innerText()), 20);
    await oldRow().getByRole('button', { name: 'Retire…' }).click();
    await page.getByRole('heading', { name: 'Retire this key?' }).waitFor();
    assert.equal(await page.getByText('Not safe yet.').count(), 0, 'no warning once the wait is over');
    await page.getByRole('button', { name: 'Retire key' }).click();
    await page.waitForURL(`${base}/admin/keys`);
    assert.equal(await oldRow().getAttribute('data-status'), 'retired');
    await shot(page, '16-keys-rotated');
    const jwks = await (await fetch(`${base}/.well-known/jwks.json`)).json();
    assert.ok(jwks.keys.some((k) => k.kid === newKid) && !jwks.keys.some((k) => k.kid === oldKid));

    // The audit trail.
    await page.getByRole('link', { name: 'Audit', exact: true }).click();
    await page.getByRole('heading', { name: 'Audit trail' }).waitFor();
    await shot(page, '17-audit');
    await page.getByLabel('Actor (id or name)').fill(env('OPERATOR'));
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.getByRole('heading', { name: 'Audit trail' }).waitFor();
    await shot(page, '18-audit-filtered');
    // Each action the operator took is there once, with the operator, their address, its target
    // and its outcome (the core records it; the console must not record it again).
    const entries = [
      ['grant.revoke', env('GRANT_TO_REVOKE')],
      ['user.disable', env('TARGET_USER')],
      ['client.create', 'Console test app'],
      ['client.delete', clientId],
      ['key.generate', newKid],
      ['key.promote', newKid],
      ['key.retire', oldKid],
    ];
    for (const [action, target] of entries) {
      const rows = page.locator(`tr[data-action="${action}"]`);
      assert.equal(await rows.count(), 1, `one ${action} entry`);
      const text = await rows.innerText();
      for (const part of [env('OPERATOR'), '127.0.0.1', target, 'ok']) {
        assert.ok(text.includes(part), `${action}: ${part} in ${text}`);
      }
    }
    // The early promote and retire that were cancelled changed nothing and left no entry.
    assert.equal(await page.locator('tr[data-action="key.promote"]').count(), 1);
    // Filtered by action too.
    await page.getByLabel('Action (e.g. user.disable)').fill('user.disable');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.getByRole('heading', { name: 'Audit trail' }).waitFor();
    assert.equal(await page.locator('tbody tr').count(), 1);
    await shot(page, '19-audit-by-action');
  } finally {
    await browser.close();
  }
});
