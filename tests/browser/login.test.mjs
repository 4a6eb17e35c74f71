// A page keeps the device_key of each user's login in localStorage and
// presents it at the next login (docs/protocol.md "Failed logins and known
// devices"): a stranger who holds the account back with wrong passwords
// from many other addresses delays new devices, not a page that logged in
// before. Node plays the stranger, from 127.0.0.2 and up.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import * as h from './helpers.mjs';

let server, browser;

before(async () => {
  server = await h.startServer(['--insecure-fast-kdf']);
  browser = await h.launch();
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
});

/** POST /v1/sessions from the source address src: {status, body}. */
function loginFrom(src, username, password) {
  const u = new URL('/v1/sessions', server.url);
  const body = JSON.stringify({ username, password });
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: u.hostname, port: u.port, path: u.pathname, method: 'POST', localAddress: src, agent: false,
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
      timeout: h.WAIT,
    }, (res) => {
      let data = '';
      res.on('data', (d) => { data += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: data }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

/** The bodies of the page's POST /v1/sessions, in order. */
function watchLogins(page) {
  const sent = [];
  page.on('request', (r) => {
    if (r.method() === 'POST' && new URL(r.url()).pathname === '/v1/sessions') sent.push(r.postDataJSON());
  });
  return sent;
}

async function logIn(page, username, password = 'password123') {
  await page.getByTestId('login-username').fill(username);
  await page.getByTestId('login-password').fill(password);
  await page.getByTestId('login-submit').click();
}

const keyOf = (page, user) => page.evaluate((u) => localStorage.getItem(`parley.device_key.${u}`), user);

async function logOut(page) {
  await page.getByTestId('logout').click();
  await page.getByTestId('login-screen').waitFor();
  await page.reload(); // the form back in its login mode
  await page.getByTestId('login-screen').waitFor();
}

test('a page that logged in before logs in again while strangers hold the account back', async () => {
  const { context, page } = await h.openPage(browser, server.url);
  try {
    const sent = watchLogins(page);
    await h.register(page, 'alice');
    const key1 = await keyOf(page, 'alice');
    assert.match(key1, /^[A-Za-z0-9_-]{27}$/);
    await logOut(page);
    assert.equal(await keyOf(page, 'alice'), key1, 'kept after a logout');

    // The stranger: three wrong passwords from each of many addresses, until
    // a new device (no key, the right password) is delayed as well.
    let held = false;
    for (let i = 2; i < 120 && !held; i++) {
      const got = [];
      for (let k = 0; k < 3; k++) got.push((await loginFrom(`127.0.0.${i}`, 'alice', 'wrong-password')).status);
      assert.ok(got.every((s) => s === 401 || s === 429), `stranger got ${got}`);
      if (got[0] === 429) held = (await loginFrom('127.0.0.1', 'alice', 'password123')).status === 429;
    }
    assert.ok(held, 'the account reached its ceiling of failed logins');

    // The page that logged in before: at once, with its key; it keeps the new one.
    await logIn(page, 'alice');
    await page.getByTestId('me-name').filter({ hasText: 'alice' }).waitFor();
    await h.waitOnline(page);
    assert.deepEqual(sent, [{ username: 'alice', password: 'password123', device_key: key1 }]);
    const key2 = await keyOf(page, 'alice');
    assert.match(key2, /^[A-Za-z0-9_-]{27}$/);
    assert.notEqual(key2, key1);
    assert.deepEqual(page.errors, []);
  } finally {
    await context.close();
  }
});

test('keys are per user, and a stored value that is not a key is not sent', async () => {
  const { context, page } = await h.openPage(browser, server.url);
  try {
    const sent = watchLogins(page);
    await h.register(page, 'bob');
    const bobKey = await keyOf(page, 'bob');
    await logOut(page);
    // Carol has no key here: none is sent, whatever bob has.
    await page.evaluate(() => localStorage.setItem('parley.device_key.carol', 'not a key!'));
    for (const bad of ['not a key!', '', 'A'.repeat(64), '{"k":1}', 'é'.repeat(27)]) {
      await page.evaluate((v) => localStorage.setItem('parley.device_key.bob', v), bad);
      await logIn(page, 'bob');
      await page.getByTestId('me-name').filter({ hasText: 'bob' }).waitFor();
      assert.equal(sent.at(-1).device_key, undefined, `stored ${JSON.stringify(bad)} was sent`);
      assert.match(await keyOf(page, 'bob'), /^[A-Za-z0-9_-]{27}$/, 'the new key replaces it');
      await logOut(page);
    }
    // A wrong password keeps the key; the next login presents it.
    const kept = await keyOf(page, 'bob');
    assert.notEqual(kept, bobKey);
    await logIn(page, 'bob', 'wrong-password');
    await page.getByTestId('login-error').filter({ hasText: 'Wrong username or password.' }).waitFor();
    assert.equal(await keyOf(page, 'bob'), kept);
    await logIn(page, 'bob');
    await page.getByTestId('me-name').filter({ hasText: 'bob' }).waitFor();
    assert.equal(sent.at(-1).device_key, kept);
    assert.equal(await keyOf(page, 'carol'), 'not a key!', 'another user\'s entry is left alone');
    assert.deepEqual(page.errors, []);
  } finally {
    await context.close();
  }
});
