// Offline and back: one user goes offline (network cut, or page closed)
// while the other sends 100 messages; on return all of them show, in
// order, once. Messages written while offline wait in localStorage and go
// out, once, when the connection is back.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as h from './helpers.mjs';

let server, browser, alice, bob;

before(async () => {
  server = await h.startServer();
  browser = await h.launch();
  alice = await h.openPage(browser, server.url);
  bob = await h.openPage(browser, server.url);
  await h.register(alice.page, 'alice');
  await h.register(bob.page, 'bob');
  await h.startDirect(alice.page, 'bob');
  await h.send(alice.page, 'hello');
  await h.openConv(bob.page, 'alice');
  await h.eventually(async () => (await h.messageTexts(bob.page)).includes('hello'), { message: 'first message' });
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
});

const label = (prefix, i) => `${prefix} ${String(i).padStart(3, '0')}`;

/** Sends n messages through the UI and waits until all are acknowledged. */
async function sendMany(page, prefix, n) {
  for (let i = 1; i <= n; i++) await h.send(page, label(prefix, i));
  await h.eventually(async () => (await page.locator('[data-testid=tick][data-state=pending]').count()) === 0,
    { timeout: 20000, message: 'every message acknowledged' });
}

/** The messages with this prefix are all there, in order, each once, with gapless seqs overall. */
async function assertComplete(page, prefix, n) {
  const msgs = await h.messages(page);
  const seqs = msgs.map((m) => m.seq);
  assert.equal(new Set(seqs).size, seqs.length, 'no seq twice');
  for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1] + 1, `seq after ${seqs[i - 1]}`);
  const mine = msgs.filter((m) => m.text.startsWith(prefix + ' ')).map((m) => m.text);
  assert.deepEqual(mine, Array.from({ length: n }, (_, i) => label(prefix, i + 1)));
}

test('network cut: 100 messages arrive after reconnect, in order, once', async () => {
  await bob.context.setOffline(true);
  await bob.page.locator('[data-testid=conn-state]:not([data-state=online])').waitFor({ state: 'attached' });

  await sendMany(alice.page, 'net', 100);
  // Sent (acknowledged), but not delivered while Bob is away.
  await h.waitTick(alice.page, label('net', 100), 'sent');
  await h.screenshot(bob.page, 'offline-bob');

  await bob.context.setOffline(false);
  await h.waitOnline(bob.page);
  await h.eventually(async () => (await h.messageTexts(bob.page)).includes(label('net', 100)),
    { timeout: 15000, message: 'the last message after reconnect' });
  await assertComplete(bob.page, 'net', 100);
  // Bob has the chat open: Alice's ticks go blue.
  await h.waitTick(alice.page, label('net', 100), 'read');
  await h.screenshot(bob.page, 'offline-bob-back');
});

test('page closed: 100 messages show when it opens again, older ones on scroll', async () => {
  await bob.context.setOffline(false); // whatever the test before left
  await bob.page.close();
  await sendMany(alice.page, 'away', 100);
  await h.waitTick(alice.page, label('away', 100), 'sent');

  const page = await bob.context.newPage();
  h.watchErrors(page);
  bob.page = page;
  await page.goto(server.url);
  await h.waitOnline(page);
  const item = page.locator('[data-testid=conv-item][data-name=alice]');
  await item.getByTestId('unread').filter({ hasText: '100' }).waitFor();
  // The list has it delivered already; opening it marks it read.
  await h.waitTick(alice.page, label('away', 100), 'delivered');
  await h.openConv(page, 'alice');
  await h.eventually(async () => (await h.messageTexts(page)).includes(label('away', 100)), { message: 'latest page' });
  await h.waitTick(alice.page, label('away', 100), 'read');

  // Scroll up until the beginning of the chat is on screen.
  await h.eventually(async () => {
    await page.getByTestId('messages').evaluate((el) => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); });
    return (await page.getByTestId('older-status').textContent()).includes('beginning');
  }, { timeout: 15000, interval: 200, message: 'all older pages' });
  await assertComplete(page, 'net', 100);
  await assertComplete(page, 'away', 100);
  const texts = await h.messageTexts(page);
  assert.equal(texts[0], 'hello');
  assert.equal(texts.length, 201);
  assert.deepEqual(page.errors, []);
});

test('written offline: kept across a page close, sent once when back', async () => {
  await bob.context.setOffline(false);
  await alice.context.setOffline(true);
  await alice.page.locator('[data-testid=conn-state]:not([data-state=online])').waitFor({ state: 'attached' });
  await h.send(alice.page, 'queued one');
  await h.send(alice.page, 'queued two');
  assert.equal(await h.tickOf(alice.page, 'queued one'), 'pending');
  assert.equal(await h.tickOf(alice.page, 'queued two'), 'pending');
  const stored = await alice.page.evaluate(() => JSON.parse(localStorage.getItem('parley.outbox.alice')));
  assert.deepEqual(stored.map((m) => m.body), ['queued one', 'queued two']);
  await h.screenshot(alice.page, 'offline-pending');

  // Close the page while offline; a new one, online, sends them from localStorage.
  await alice.page.close();
  await alice.context.setOffline(false);
  const page = await alice.context.newPage();
  h.watchErrors(page);
  alice.page = page;
  await page.goto(server.url);
  await h.waitOnline(page);
  await h.openConv(page, 'bob');
  await h.waitTick(page, 'queued two', 'read');
  assert.equal(await page.evaluate(() => localStorage.getItem('parley.outbox.alice')), '[]');

  await h.eventually(async () => (await h.messageTexts(bob.page)).includes('queued two'), { message: 'Bob gets them' });
  const texts = await h.messageTexts(bob.page);
  assert.deepEqual(texts.filter((t) => t.startsWith('queued')), ['queued one', 'queued two']);
  await assertComplete(bob.page, 'away', 100);
  assert.deepEqual(page.errors, []);
});
