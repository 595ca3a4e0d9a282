// Docs that cannot rot: runs the README's shell snippets exactly as written, in order, against a
// fresh data folder (TESSERA_DATA_DIR and TESSERA_KEYS_DIR point into a temporary folder), checks
// each output the README shows, and does the tutorial's browser steps in Chromium where the
// README says so. Then walks `serve --dev`'s first minute as a newcomer would: the banner's URLs,
// the demo user's login, consent, tokens and the protected call. Screenshots of both go to
// test-output/readme/ and test-output/first-minute/.
//
// Run by tests/run.sh after cargo test (it needs ports 8000 and 8001, the README's own).
// The README drives it with HTML comments a reader does not see:
//   <!-- doc-test: background until URL -->  the next block's one command keeps running (as in a
//                                            second shell) and is ready once URL answers 200
//   <!-- doc-test: stop the servers -->      Ctrl-C (SIGINT) to every command still running
//   <!-- doc-test: skip (why) -->            the next block is not run
//   <!-- doc-test: NAME from the STEP -->    in the next block, the placeholder assignment
//                                            NAME='…' gets the value the browser step STEP read
//   <!-- doc-test: browser STEP -->          the browser step STEP, described by the paragraph
//                                            that follows it (which must name what it uses)
// In a block, lines starting with `# ` after a command are its expected output: each must match
// a line the command printed, in order; `…` matches anything, and `   <- note` is ignored.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
const ISSUER = 'http://127.0.0.1:8000';
const API = 'http://127.0.0.1:8001';
const BUILD_TIMEOUT_MS = 40 * 60 * 1000; // the first `cargo run --release` builds the binary

// --- the README, as steps --------------------------------------------------------------------

function parseCommands(body, where) {
  const commands = [];
  for (let i = 0; i < body.length; i++) {
    const line = body[i];
    if (line.startsWith('#')) {
      assert.ok(commands.length, `${where}: expected output before any command`);
      commands.at(-1).expect.push(line.replace(/^# ?/, ''));
    } else if (line.trim()) {
      let text = line;
      while (text.endsWith('\\')) text += '\n' + body[++i];
      commands.push({ text, expect: [] });
    }
  }
  return commands;
}

function parseReadme(text) {
  const lines = text.split('\n');
  const steps = [];
  let directive = null;
  for (let i = 0; i < lines.length; i++) {
    const comment = lines[i].match(/^<!-- doc-test: (.*) -->$/);
    if (comment) {
      const words = comment[1].trim();
      if (words.startsWith('browser ')) {
        // The paragraph after the directive describes the step.
        let prose = '';
        for (let j = i + 1; j < lines.length && lines[j].trim(); j++) prose += lines[j] + ' ';
        steps.push({ kind: 'browser', name: words.slice('browser '.length), prose });
      } else if (words === 'stop the servers') {
        steps.push({ kind: 'stop' });
      } else {
        directive = words;
      }
      continue;
    }
    if (lines[i].startsWith('```sh')) {
      const where = `README.md:${i + 1}`;
      const body = [];
      for (i++; !lines[i].startsWith('```'); i++) body.push(lines[i]);
      steps.push({ kind: 'sh', where, directive, commands: parseCommands(body, where) });
      directive = null;
    }
  }
  return steps;
}

// --- matching shown output -------------------------------------------------------------------

const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function assertShown(expect, output, where) {
  const printed = output.split(/\r?\n/).map((l) => l.trim());
  let at = 0;
  for (const shown of expect) {
    const pattern = shown.replace(/\s+<- .*$/, '').trim();
    const re = new RegExp('^' + pattern.split('…').map(escape).join('.*') + '$');
    while (at < printed.length && !re.test(printed[at])) at++;
    assert.ok(at < printed.length, `${where}: the README shows ${JSON.stringify(shown)}, but the command printed:\n${output}`);
    at++;
  }
}

/** [assertShown] on what a running command has printed so far, waiting up to 10 s for it. */
async function assertPrinted(proc, expect, where) {
  const deadline = Date.now() + 10000;
  for (;;) {
    try {
      return assertShown(expect, proc.stdout, where);
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

// --- running commands ------------------------------------------------------------------------

/** A fresh data folder and an environment without the caller's Tessera settings. */
function freshEnvironment() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-readme-'));
  const env = { ...process.env };
  for (const name of Object.keys(env)) if (name.startsWith('TESSERA_') || name === 'RUST_LOG') delete env[name];
  env.TESSERA_DATA_DIR = path.join(work, 'data');
  env.TESSERA_KEYS_DIR = path.join(work, 'keys');
  return { work, env };
}

const running = [];

async function ready(url, child, deadline) {
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) return false;
    try {
      if ((await fetch(url)).ok) return true;
    } catch { /* not listening yet */ }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return false;
}

/** Starts `command` as a second shell would run it; resolves once `url` answers 200. */
async function startBackground(command, url, env, where) {
  const child = spawn('bash', ['-c', command], { cwd: root, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = { child, command, stdout: '', all: '' };
  child.stdout.on('data', (d) => { proc.stdout += d; proc.all += d; });
  child.stderr.on('data', (d) => { proc.all += d; });
  running.push(proc);
  const up = await ready(url, child, Date.now() + BUILD_TIMEOUT_MS);
  assert.ok(up, `${where}: \`${command}\` never answered at ${url}:\n${proc.all.slice(-4000)}`);
  return proc;
}

/** Ctrl-C to each running command's process group, as a person stopping it would. */
async function stopAll() {
  for (const proc of running.splice(0)) {
    const exited = new Promise((resolve) => {
      if (proc.child.exitCode !== null || proc.child.signalCode !== null) resolve();
      else proc.child.once('exit', resolve);
    });
    try { process.kill(-proc.child.pid, 'SIGINT'); } catch { /* already gone */ }
    const timer = setTimeout(() => { try { process.kill(-proc.child.pid, 'SIGKILL'); } catch { /* gone */ } }, 20000);
    await exited;
    clearTimeout(timer);
  }
}

afterEach(stopAll);

function runForeground(command, env, where) {
  const result = spawnSync('bash', ['-c', command], {
    cwd: root, env, encoding: 'utf8', timeout: BUILD_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024,
  });
  assert.equal(result.status, 0, `${where}: \`${command}\` failed:\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

// --- the browser -----------------------------------------------------------------------------

async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

function screenshots(name) {
  const dir = path.join(root, 'test-output', name);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  let n = 0;
  return (page, what) => page.screenshot({ path: path.join(dir, `${String(++n).padStart(2, '0')}-${what}.png`), fullPage: true });
}

async function logIn(page, username, password) {
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
}

/** Presses Allow on the consent page after checking that it names the app and the scopes. */
async function consent(page, shot, appName) {
  await page.getByRole('button', { name: 'Allow' }).waitFor();
  const text = await page.textContent('main');
  assert.match(text, new RegExp(escape(appName)), 'the consent page names the app');
  assert.match(text, /Read your data/, 'and the scope');
  await shot(page, 'consent');
  await page.getByRole('button', { name: 'Allow' }).click();
}

/** In the playground (already showing tokens): refresh, then call `url`; returns the tokens. */
async function refreshAndCall(page, shot, url) {
  await page.locator('#access-token').waitFor();
  const before = await page.textContent('#refresh-token');
  await shot(page, 'tokens');
  await page.getByRole('button', { name: 'Refresh' }).click();
  await page.locator('#refresh-token').waitFor();
  assert.notEqual(await page.textContent('#refresh-token'), before, 'the refresh token rotated');
  await page.getByLabel('API URL', { exact: false }).fill(url);
  await page.getByRole('button', { name: 'Call' }).click();
  await page.locator('#api-status').waitFor();
  assert.equal(await page.textContent('#api-status'), '200');
  assert.match(await page.textContent('#api-body'), /Hello, there!!/);
  await shot(page, 'api-call');
  return (await page.textContent('#access-token')).trim();
}

// The tutorial's browser steps; each checks that its paragraph names what it types.
const TUTORIAL = {
  username: 'alice', password: 'a long password', app: 'My first app',
  callback: `${ISSUER}/o/playground/callback/`, scope: 'openid read',
  api: `${API}/api/posts/protected_view/`,
};

const browserSteps = {
  async 'register-app'(page, shot, prose, captured) {
    for (const named of [TUTORIAL.username, TUTORIAL.password, TUTORIAL.app, TUTORIAL.callback]) {
      assert.ok(prose.includes(named), `the register-app step names ${named}: ${prose}`);
    }
    await page.goto(`${ISSUER}/o/applications/`);
    await shot(page, 'login');
    await logIn(page, TUTORIAL.username, TUTORIAL.password);
    await page.getByRole('link', { name: 'Register a new application' }).click();
    await page.getByLabel('Name', { exact: true }).fill(TUTORIAL.app);
    assert.ok(await page.getByLabel(/Confidential \(/).isChecked(), 'Confidential is the default');
    assert.ok(await page.getByLabel(/Authorization code/).isChecked(), 'so is the code grant');
    assert.ok(await page.getByLabel(/Refresh token/).isChecked(), 'and refresh');
    await page.getByLabel(/^Redirect URIs/).fill(TUTORIAL.callback);
    await shot(page, 'register');
    await page.getByRole('button', { name: 'Register' }).click();
    captured.CLIENT_SECRET = (await page.textContent('#client-secret')).trim();
    captured.CLIENT_ID = (await page.textContent('#client-id')).trim();
    await shot(page, 'registered');
  },
  async playground(page, shot, prose, captured) {
    for (const named of [`${ISSUER}/o/playground/`, TUTORIAL.app, TUTORIAL.scope, TUTORIAL.api, 'Hello, there!!']) {
      assert.ok(prose.includes(named), `the playground step names ${named}: ${prose}`);
    }
    await page.goto(`${ISSUER}/o/playground/`);
    await page.getByLabel('One of your applications').selectOption({ label: TUTORIAL.app });
    await page.getByLabel('Client secret', { exact: false }).fill(captured.CLIENT_SECRET);
    await page.getByLabel('Scope').fill(TUTORIAL.scope);
    await page.getByRole('button', { name: 'Make the authorization link' }).click();
    await shot(page, 'playground-link');
    await page.locator('#authorize-link').click();
    await consent(page, shot, TUTORIAL.app);
    captured.ACCESS_TOKEN = await refreshAndCall(page, shot, TUTORIAL.api);
  },
};

// --- the tests -------------------------------------------------------------------------------

test('the README, run as written', { timeout: 2 * BUILD_TIMEOUT_MS }, async () => {
  const steps = parseReadme(readme);
  assert.ok(steps.filter((s) => s.kind === 'sh').length >= 5, 'the README has its snippets');
  const { env } = freshEnvironment();
  const shot = screenshots('readme');
  const captured = {};
  let browser = null;
  let page = null;
  let assignments = ''; // variables set by earlier commands, as in one shell session
  try {
    for (const step of steps) {
      if (step.kind === 'stop') {
        await stopAll();
      } else if (step.kind === 'browser') {
        assert.ok(browserSteps[step.name], `no browser step named ${step.name}`);
        if (!browser) {
          browser = await launchBrowser();
          page = await browser.newPage({ viewport: { width: 900, height: 900 } });
        }
        await browserSteps[step.name](page, shot, step.prose, captured);
      } else if (step.directive?.startsWith('skip')) {
        console.log(`# ${step.where}: skipped ${step.directive.slice('skip'.length).trim()}`);
      } else if (step.directive?.startsWith('background until ')) {
        assert.equal(step.commands.length, 1, `${step.where}: one command per background block`);
        const [command] = step.commands;
        const proc = await startBackground(command.text, step.directive.slice('background until '.length), env, step.where);
        await assertPrinted(proc, command.expect, step.where);
      } else {
        const from = step.directive?.match(/^(\w+) from the (\S+)$/);
        if (step.directive) assert.ok(from, `${step.where}: unknown directive ${step.directive}`);
        for (const command of step.commands) {
          let text = command.text;
          const assignment = text.match(/^(\w+)=(.*)$/s);
          if (assignment && from && assignment[1] === from[1]) {
            assert.ok(captured[from[1]], `${step.where}: the ${from[2]} step gave no ${from[1]}`);
            text = `${from[1]}='${captured[from[1]]}'`;
          }
          if (assignment) {
            assignments += text + '\n';
            continue;
          }
          assertShown(command.expect, runForeground(assignments + text, env, step.where), step.where);
        }
      }
    }
  } finally {
    await browser?.close();
  }
});

test("serve --dev's first minute: banner, demo login, consent, tokens, the protected call", { timeout: 2 * BUILD_TIMEOUT_MS }, async () => {
  const { env } = freshEnvironment();
  const shot = screenshots('first-minute');
  const server = await startBackground('cargo run --release -- serve --dev', `${ISSUER}/readyz`, env, 'serve --dev');
  await startBackground(`cargo run --release --example resource_server -- --issuer ${ISSUER}`,
    `${API}/.well-known/oauth-protected-resource`, env, 'resource server');
  await assertPrinted(server, ['…press Authorize.'], 'serve --dev');
  const banner = server.stdout;
  const value = (label) => {
    const line = banner.split('\n').find((l) => l.trim().startsWith(label));
    assert.ok(line, `the banner has ${label}:\n${banner}`);
    return line.trim().slice(label.length).trim();
  };
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage({ viewport: { width: 900, height: 900 } });
    // The terminal, as the newcomer sees it.
    await page.setContent(`<pre style="font: 14px monospace; padding: 1em; background: #111; color: #eee">${
      banner.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</pre>`);
    await shot(page, 'banner');
    // Every URL the banner names answers.
    await page.goto(value('API docs:'));
    await page.locator('.swagger-ui').waitFor();
    await shot(page, 'api-docs');
    const discovery = await (await fetch(value('discovery:'))).json();
    assert.equal(discovery.issuer, value('issuer:'));
    await page.goto(value('playground:'));
    assert.match(page.url(), /\/o\/login\//, 'the playground asks who you are');
    await shot(page, 'login');
    await logIn(page, value('username:'), value('password:'));
    await page.getByLabel('Client ID').fill(value('client_id:'));
    await page.getByLabel('Client secret', { exact: false }).fill(value('client_secret:'));
    await page.getByLabel('Scope').fill('openid read');
    await page.getByRole('button', { name: 'Make the authorization link' }).click();
    await shot(page, 'playground');
    await page.locator('#authorize-link').click();
    await consent(page, shot, 'Playground demo');
    const token = await refreshAndCall(page, shot, `${API}/api/posts/protected_view/`);
    const protectedCall = await fetch(`${API}/api/posts/protected_view/`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(await protectedCall.text(), 'Hello, there!!');
  } finally {
    await browser.close();
  }
});
