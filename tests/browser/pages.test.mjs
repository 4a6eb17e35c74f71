// Pages (docs/protocol.md "Pages"): with a small --max-queue the server
// answers the inbox and each sync in small pages (`more`); the browser
// client walks every inbox page and follows `more` in its gap fill, so a
// user in many conversations sees all of them, and large messages written
// while it was away all arrive.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as h from './helpers.mjs';

let server, browser, alice, bob;

before(async () => {
  server = await h.startServer(['--max-queue', '65536', '--rate-groups', '0']); // pages of 16 KiB
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

const tokenOf = (page) => page.evaluate(() => JSON.parse(localStorage.getItem('parley.session')).token);

async function rest(token, method, path, body) {
  const r = await fetch(server.url + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const j = await r.json();
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${JSON.stringify(j)}`);
  return j;
}

test('a user in 150 conversations sees every one (inbox pages)', async () => {
  const token = await tokenOf(alice.page);
  for (let i = 0; i < 150; i++) {
    await rest(token, 'POST', '/v1/conversations', { type: 'group', name: `g${String(i).padStart(3, '0')}`, members: ['bob'] });
  }
  // The server pages it: the first page is not all of it.
  const first = await rest(await tokenOf(bob.page), 'GET', '/v1/conversations');
  assert.equal(first.more, true);
  assert.ok(first.conversations.length < 151);
  await bob.page.reload();
  await h.waitOnline(bob.page);
  await h.eventually(async () => (await bob.page.locator('[data-testid=conv-item]').count()) === 151,
    { timeout: 15000, message: 'all 151 conversations listed' });
  assert.deepEqual(bob.page.errors, []);
});

test('large messages written while away all arrive (sync pages)', async () => {
  await h.openConv(bob.page, 'alice');
  await bob.context.setOffline(true);
  await bob.page.locator('[data-testid=conn-state]:not([data-state=online])').waitFor({ state: 'attached' });
  const token = await tokenOf(alice.page);
  const direct = await rest(token, 'POST', '/v1/conversations', { type: 'direct', with: 'bob' }); // the existing one
  const pad = 'x'.repeat(12000); // one message to a page
  for (let i = 1; i <= 20; i++) {
    await rest(token, 'POST', `/v1/conversations/${direct.id}/messages`, { cmid: `big-${i}`, body: `big ${String(i).padStart(2, '0')} ${pad}` });
  }
  await bob.context.setOffline(false);
  await h.waitOnline(bob.page);
  await h.eventually(async () => (await h.messageTexts(bob.page)).filter((t) => t.startsWith('big ')).length === 20,
    { timeout: 20000, message: 'all 20 large messages' });
  const big = (await h.messageTexts(bob.page)).filter((t) => t.startsWith('big ')).map((t) => t.slice(0, 6));
  assert.deepEqual(big, Array.from({ length: 20 }, (_, i) => `big ${String(i + 1).padStart(2, '0')}`));
  assert.deepEqual(bob.page.errors, []);
});
