// Backpressure in the browser (docs/protocol.md "Backpressure"): 500
// messages sent as fast as the composer takes them, with the server's
// default rate limits (50 messages/s per connection, burst 200). The
// server refuses some with rate_limited; the client pauses the connection,
// resends the refused ones first and keeps at most 32 on the wire. Every
// message is stored once, in the order written, and the connection is
// never closed.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as h from './helpers.mjs';

const N = 500;
let server, browser, alice, bob;

before(async () => {
  server = await h.startServer();
  browser = await h.launch();
  alice = await h.openPage(browser, server.url);
  bob = await h.openPage(browser, server.url);
  await h.register(alice.page, 'alice');
  await h.register(bob.page, 'bob');
  await h.startDirect(alice.page, 'bob');
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
});

async function metrics() {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const get = (name) => text.split('\n').filter((l) => l.startsWith(name))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
  return { refused: get('parley_rate_limited_total'), closed1008: get('parley_ws_close_sent_total{code="1008"}'),
    upgrades: get('parley_ws_upgrades_total') };
}

async function token(username) {
  const r = await fetch(`${server.url}/v1/sessions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username, password: 'password123' }),
  });
  assert.equal(r.status, 200);
  return (await r.json()).token;
}

/** Every stored message of the conversation, by forward paging. */
async function history(tok, conv) {
  const out = [];
  let after = 0;
  for (let i = 0; i < 100; i++) {
    const r = await fetch(`${server.url}/v1/conversations/${conv}/messages?after=${after}&limit=500`,
      { headers: { Authorization: `Bearer ${tok}` } });
    assert.equal(r.status, 200);
    const j = await r.json();
    out.push(...j.messages);
    if (!j.more) return out;
    after = j.messages[j.messages.length - 1].seq;
  }
  throw new Error('history paging did not end');
}

test('500 messages at once: all through, paced, in order, once, never disconnected', async () => {
  const { page } = alice;
  const before = await metrics();
  // Every state the connection goes through from now on.
  await page.evaluate(() => {
    const el = document.querySelector('[data-testid=conn-state]');
    window.connStates = [el.dataset.state];
    new MutationObserver(() => window.connStates.push(el.dataset.state))
      .observe(el, { attributes: true, attributeFilter: ['data-state'] });
  });
  // As fast as the composer takes them: all in one task, before any answer.
  await page.evaluate((n) => {
    const input = document.querySelector('[data-testid=composer-input]');
    for (let i = 0; i < n; i++) {
      input.value = `paste ${String(i).padStart(3, '0')}`;
      input.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true, cancelable: true }));
    }
  }, N);
  await h.eventually(async () => (await page.locator('[data-testid=message]').count()) === N,
    { timeout: 30000, message: 'all 500 on screen' });
  await h.eventually(async () => (await page.locator('[data-testid=tick][data-state=pending]').count()) === 0,
    { timeout: 120000, interval: 250, message: 'every message acknowledged' });
  assert.equal(await page.locator('[data-testid=tick][data-state=failed]').count(), 0);

  const states = await page.evaluate(() => window.connStates);
  assert.ok(states.every((s) => s === 'online'), `the connection was lost: ${states.join(' ')}`);
  const now = await metrics();
  assert.equal(now.closed1008, before.closed1008, 'closed with 1008');
  assert.equal(now.upgrades, before.upgrades, 'reconnected');
  assert.ok(now.refused > before.refused, '500 messages at once were never paced');

  const conv = Number(new URL(page.url()).hash.replace('#c', ''));
  assert.ok(conv > 0, page.url());
  const stored = await history(await token('bob'), conv);
  const want = Array.from({ length: N }, (_, i) => `paste ${String(i).padStart(3, '0')}`);
  assert.deepEqual(stored.map((m) => m.body), want, 'stored once each, in the order written');
  assert.deepEqual(stored.map((m) => m.seq), Array.from({ length: N }, (_, i) => i + 1));
  assert.equal(new Set(stored.map((m) => m.cmid)).size, N);
  assert.deepEqual(await h.messageTexts(page), want);
  assert.deepEqual(page.errors, []);
});
