// The composer knows the server's message limit (the body as JSON, announced
// as max_text in hello, 16384 bytes by default): it shows what is left when
// close, refuses to send over it with the reason, and a message the server
// refuses as too large says why and offers no Retry that could never work.

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

const note = (page) => page.getByTestId('composer-limit');

test('the composer shows the bytes left near the limit and refuses to send over it', async () => {
  const p = alice.page;
  const input = p.getByTestId('composer-input');
  await input.fill('short');
  assert.equal(await note(p).isVisible(), false, 'nothing shown far from the limit');

  await input.fill('x'.repeat(15000)); // 15002 bytes as JSON
  await note(p).filter({ hasText: '1,382 bytes left' }).waitFor();

  // Counted as the server counts: UTF-8 bytes of the JSON string (é is 2 bytes).
  await input.fill('é'.repeat(8200)); // 16402
  await note(p).filter({ hasText: 'Too long to send: 18 bytes over the limit of 16,384' }).waitFor();
  assert.equal(await input.getAttribute('aria-invalid'), 'true');
  const before = (await h.messageTexts(p)).length;
  await input.press('Enter');
  await p.getByTestId('send').click({ force: true }); // marked aria-disabled, but a click still tries
  // Not sent: still in the composer, nothing new in the chat or the outbox.
  assert.equal(await input.inputValue(), 'é'.repeat(8200));
  assert.equal((await h.messageTexts(p)).length, before);
  assert.deepEqual(await p.evaluate(() => JSON.parse(localStorage.getItem('parley.outbox.alice') || '[]')), []);
  assert.equal(await note(p).getAttribute('data-state'), 'over');

  // Quotes are escaped in JSON: 8192 of them are 16386 bytes, 8191 exactly the limit.
  await input.fill('"'.repeat(8192));
  await note(p).filter({ hasText: '2 bytes over the limit' }).waitFor();
  await input.fill('"'.repeat(8191));
  await note(p).filter({ hasText: '0 bytes left' }).waitFor();
  assert.equal(await input.getAttribute('aria-invalid'), 'false');
  await input.press('Enter');
  assert.equal(await input.inputValue(), '');
  assert.equal(await note(p).isVisible(), false);
  // The server takes exactly the limit: Bob gets it, Alice's tick goes past pending.
  await h.eventually(async () => (await h.messageTexts(bob.page)).includes('"'.repeat(8191)), { message: 'Bob gets it' });
  await h.waitTick(p, '"'.repeat(8191), 'read');
  assert.deepEqual(p.errors, []);
});

test('a kept message over the limit is not sent again and again: it says why, with no Retry', async () => {
  // As left in localStorage by another tab or an older version of the page:
  // 70 KB is over the server's frame limit too (it would close the socket).
  const p = alice.page;
  const conv = Number(await p.locator('[data-testid=conv-item][data-name=bob]').getAttribute('data-conv'));
  await p.evaluate((c) => localStorage.setItem('parley.outbox.alice', JSON.stringify(
    [{ cmid: 'kept-1', conv: c, body: 'y'.repeat(70000), ts: Date.now() }])), conv);
  await p.reload();
  await h.waitOnline(p);
  await p.getByTestId('chat-name').filter({ hasText: 'bob' }).waitFor();
  const msg = p.locator('[data-testid=message][data-cmid=kept-1]');
  await msg.getByTestId('failed-reason').filter({ hasText: 'Not sent: the message is too long for the server.' }).waitFor();
  assert.equal(await msg.getByTestId('retry').count(), 0);
  // The connection works: the next message goes through.
  await h.send(p, 'after the long one');
  await h.waitTick(p, 'after the long one', 'read');
  await msg.getByTestId('delete').click();
  await msg.waitFor({ state: 'detached' });
  assert.ok(!(await h.messageTexts(bob.page)).some((t) => t.startsWith('yyyy')), 'never reached Bob');
  assert.deepEqual(p.errors, []);
});

test('the composer follows the limit the server announces (--max-text 1000)', async () => {
  const small = await h.startServer(['--max-text', '1000']);
  const ctx = [];
  try {
    const a = await h.openPage(browser, small.url);
    const b = await h.openPage(browser, small.url);
    ctx.push(a.context, b.context);
    await h.register(a.page, 'alice');
    await h.register(b.page, 'bob');
    await h.startDirect(a.page, 'bob');
    const p = a.page;
    const input = p.getByTestId('composer-input');
    // Near and over 1000, not 16384: the hello's max_text.
    await input.fill('z'.repeat(950)); // 952 bytes as JSON
    await note(p).filter({ hasText: '48 bytes left' }).waitFor();
    await input.fill('z'.repeat(2000));
    await note(p).filter({ hasText: 'Too long to send: 1,002 bytes over the limit of 1,000' }).waitFor();
    await input.press('Enter');
    assert.equal(await input.inputValue(), 'z'.repeat(2000), 'not sent: still in the composer');
    assert.deepEqual(await p.evaluate(() => JSON.parse(localStorage.getItem('parley.outbox.alice') || '[]')), []);
    // Exactly the limit goes through.
    await input.fill('z'.repeat(998));
    await note(p).filter({ hasText: '0 bytes left' }).waitFor();
    await input.press('Enter');
    await h.waitTick(p, 'z'.repeat(998), 'delivered');
    // A kept message over the announced limit (another tab, an older page)
    // is not sent: it says why, with no Retry.
    const conv = Number(await p.locator('[data-testid=conv-item][data-name=bob]').getAttribute('data-conv'));
    await p.evaluate((c) => localStorage.setItem('parley.outbox.alice', JSON.stringify(
      [{ cmid: 'kept-2', conv: c, body: 'w'.repeat(2000), ts: Date.now() }])), conv);
    await p.reload();
    await h.waitOnline(p);
    const msg = p.locator('[data-testid=message][data-cmid=kept-2]');
    await msg.getByTestId('failed-reason').filter({ hasText: 'Not sent: the message is too long for the server.' })
      .waitFor();
    assert.equal(await msg.getByTestId('retry').count(), 0, 'no Retry');
    await h.send(p, 'short one');
    await h.openConv(b.page, 'alice');
    await h.eventually(async () => (await h.messageTexts(b.page)).includes('short one'), { message: 'Bob gets the short one' });
    assert.deepEqual(await h.messageTexts(b.page), ['z'.repeat(998), 'short one']);
    assert.deepEqual(p.errors, []);
  } finally {
    for (const c of ctx) await c.close().catch(() => {});
    await small.stop();
  }
});

test('without a usable max_text in hello (an older server) the default holds, and a refusal says why', async () => {
  // The same --max-text 1000 server behind a proxy that takes max_text out of
  // hello, or puts something that is not a limit in its place.
  const small = await h.startServer(['--max-text', '1000']);
  let replace = { drop: true };
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  ctx.setDefaultTimeout(h.WAIT);
  await ctx.routeWebSocket(/\/v1\/ws/, (ws) => {
    const srv = ws.connectToServer();
    ws.onMessage((text) => srv.send(text));
    srv.onMessage((text) => {
      const f = JSON.parse(text);
      if (f.type === 'hello') {
        if (replace.drop) delete f.max_text; else f.max_text = replace.value;
        text = JSON.stringify(f);
      }
      ws.send(text);
    });
  });
  const b = await h.openPage(browser, small.url);
  try {
    const page = await ctx.newPage();
    h.watchErrors(page);
    await page.goto(small.url);
    await h.register(page, 'alice');
    await h.register(b.page, 'bob');
    await h.startDirect(page, 'bob');
    const input = page.getByTestId('composer-input');
    for (const value of [undefined, '1000', -1, 0, 1.5, null, 1e300, [1000], { n: 1000 }]) {
      if (value !== undefined) {
        replace = { value };
        await page.reload();
        await h.waitOnline(page);
        await page.getByTestId('chat-name').filter({ hasText: 'bob' }).waitFor();
      }
      await input.fill('x'.repeat(17000));
      await note(page).filter({ hasText: 'bytes over the limit of 16,384' }).waitFor();
      await input.fill('x'.repeat(2000));
      assert.equal(await note(page).isVisible(), false, `max_text ${JSON.stringify(value)}: the default`);
    }
    // The server refuses what the default lets through: the reason, no Retry.
    const long = 'z'.repeat(2000);
    await input.fill(long);
    await input.press('Enter');
    const msg = page.locator('[data-testid=message]', { has: page.getByText(long) });
    await msg.getByTestId('failed-reason').filter({ hasText: 'Not sent: the message is too long for the server.' })
      .waitFor();
    assert.equal(await msg.getByTestId('retry').count(), 0, 'no Retry');
    assert.equal(await msg.getByTestId('tick').getAttribute('data-state'), 'failed');
    // It stays refused across a reload (kept as failed, not sent again).
    await page.reload();
    await h.waitOnline(page);
    await msg.getByTestId('failed-reason').waitFor();
    assert.equal(await msg.getByTestId('retry').count(), 0);
    await h.send(page, 'short one');
    await h.openConv(b.page, 'alice');
    await h.eventually(async () => (await h.messageTexts(b.page)).includes('short one'), { message: 'Bob gets the short one' });
    assert.deepEqual(await h.messageTexts(b.page), ['short one']);
    assert.deepEqual(page.errors, []);
  } finally {
    await ctx.close().catch(() => {});
    await b.context.close().catch(() => {});
    await small.stop();
  }
});
