// Shared helpers for the browser tests: a parleyd per test file, Chromium
// through playwright-core, users, and bounded waits.

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const PARLEYD = process.env.PARLEYD || join(ROOT, 'build', 'parleyd');
export const WEB = process.env.PARLEY_WEB || join(ROOT, 'web');
export const ARTIFACTS = join(ROOT, 'tests', 'artifacts');
export const WAIT = 10000; // default bound for every wait

/** Starts parleyd on a free loopback port with a fresh data dir (and extra flags). */
export async function startServer(extra = []) {
  const dataDir = mkdtempSync(join(tmpdir(), 'parley-browser-'));
  const proc = spawn(PARLEYD, ['--port', '0', '--listen', '127.0.0.1', '--data-dir', dataDir, '--web-dir', WEB,
    '--log-level', 'warn', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const url = await new Promise((resolveUrl, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`parleyd did not start in time: ${stderr}`)), 15000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) { clearTimeout(timer); resolveUrl(m[1]); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`parleyd exited (${code}): ${stderr}`)); });
    proc.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
  return {
    url,
    proc,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        process.kill(proc.pid, 'SIGTERM');
        const timer = setTimeout(() => { try { process.kill(proc.pid, 'SIGKILL'); } catch { /* gone */ } }, 8000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run', '--disable-sync'],
  });
}

/** A new browser context and page at the app; console errors are collected in page.errors. */
export async function openPage(browser, url, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 }, ...options });
  context.setDefaultTimeout(WAIT);
  const page = await context.newPage();
  watchErrors(page);
  await page.goto(url);
  return { context, page };
}

/** Script errors and console.error calls (the browser's own lines about failed requests excluded). */
export function watchErrors(page) {
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('console', (m) => {
    const text = m.text();
    if (m.type() !== 'error' || /^Failed to load resource|^WebSocket connection to/.test(text)) return;
    page.errors.push(text);
  });
}

/** Polls fn (which may throw) until it returns truthy; fails with the last error after `timeout`. */
export async function eventually(fn, { timeout = WAIT, interval = 50, message = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = new Error(`${message}: got ${JSON.stringify(v)}`);
    } catch (e) { last = e; }
    if (Date.now() > end) throw new Error(`timed out waiting for ${message}: ${last && last.message}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

export async function register(page, username, password = 'password123') {
  await page.getByTestId('login-screen').waitFor();
  await page.getByTestId('login-toggle').click();
  await page.getByTestId('login-username').fill(username);
  await page.getByTestId('login-password').fill(password);
  await page.getByTestId('login-submit').click();
  await page.getByTestId('me-name').filter({ hasText: username }).waitFor();
  await waitOnline(page);
}

export async function waitOnline(page) {
  await page.locator('[data-testid=conn-state][data-state=online]').waitFor({ state: 'attached' });
}

export async function startDirect(page, username) {
  await page.getByTestId('new-chat').click();
  await page.getByTestId('new-chat-user').fill(username);
  await page.getByTestId('new-chat-submit').click();
  await page.getByTestId('chat-name').filter({ hasText: username }).waitFor();
}

export async function openConv(page, name) {
  await page.locator(`[data-testid=conv-item][data-name="${name}"]`).click();
  await page.getByTestId('chat-name').filter({ hasText: name }).waitFor();
}

/** Types a message and sends it with Enter (or with the send button: phones). */
export async function send(page, text, { button = false } = {}) {
  const input = page.getByTestId('composer-input');
  await input.fill(text);
  if (button) await page.getByTestId('send').click();
  else await input.press('Enter');
}

/** The texts of the messages on screen, in order. */
export function messageTexts(page) {
  return page.locator('[data-testid=message] [data-testid=message-text]').allTextContents();
}

/** [{seq, text, from}] for the messages on screen. */
export function messages(page) {
  return page.locator('[data-testid=message]').evaluateAll((els) => els.map((e) => ({
    seq: e.dataset.seq ? Number(e.dataset.seq) : null,
    from: e.dataset.from,
    text: e.querySelector('[data-testid=message-text]').textContent,
  })));
}

/** The tick state of the message with this text (own messages). */
export function tickOf(page, text) {
  return page.locator('[data-testid=message]', { has: page.locator('[data-testid=message-text]', { hasText: text }) })
    .locator('[data-testid=tick]').getAttribute('data-state');
}

export async function waitTick(page, text, state, timeout = WAIT) {
  await eventually(async () => (await tickOf(page, text)) === state, { timeout, message: `tick of "${text}" = ${state}` });
}

export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
}
