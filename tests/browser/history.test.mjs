// Scrolling up through a long history, the way people do (the mouse wheel,
// which fires a scroll event only when the position changes): every older
// page loads, the message that was at the top stays where it was when a page
// comes in above it, and the beginning of the chat is reached.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as h from './helpers.mjs';

const N = 250; // five pages of 50

let server, browser, alice, bob;

before(async () => {
  server = await h.startServer();
  browser = await h.launch();
  alice = await h.openPage(browser, server.url);
  bob = await h.openPage(browser, server.url);
  await h.register(alice.page, 'alice');
  await h.register(bob.page, 'bob');
  await h.startDirect(alice.page, 'bob');
  await alice.context.close(); // Alice posts from her backend below
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
});

const label = (i) => `history ${String(i).padStart(3, '0')}`;

/** Posts n messages over REST as the owner of `token`, one at a time (in order). */
async function post(token, conv, n) {
  for (let i = 1; i <= n; i++) {
    for (let attempt = 0; ; attempt++) {
      const res = await fetch(`${server.url}/v1/conversations/${conv}/messages`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ cmid: `h-${i}`, body: label(i) }),
      });
      if (res.ok) break;
      assert.ok(res.status === 429 && attempt < 50, `post ${i}: HTTP ${res.status}`);
      await new Promise((r) => setTimeout(r, Number(res.headers.get('Retry-After') || 1) * 1000));
    }
  }
}

/** The seq of the first message whose bottom is below the top edge of the message area, and its offset from that edge. */
function topVisible(page) {
  return page.getByTestId('messages').evaluate((box) => {
    const top = box.getBoundingClientRect().top;
    for (const li of box.querySelectorAll('[data-testid=message]')) {
      const r = li.getBoundingClientRect();
      if (r.bottom > top) return { seq: Number(li.dataset.seq), offset: r.top - top, scrollTop: box.scrollTop };
    }
    return null;
  });
}

test(`the mouse wheel scrolls up through ${N} messages to seq 1`, async () => {
  const token = await bob.page.evaluate(async () => {
    // Alice's token: log her in again over REST (her page is closed).
    const r = await fetch('/v1/sessions', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username: 'alice', password: 'password123' }) });
    return (await r.json()).token;
  });
  const item = bob.page.locator('[data-testid=conv-item][data-name=alice]');
  const conv = Number(await item.getAttribute('data-conv'));
  await post(token, conv, N);

  const page = bob.page;
  await item.getByTestId('unread').filter({ hasText: String(N) }).waitFor();
  await h.openConv(page, 'alice');
  await h.eventually(async () => (await h.messageTexts(page)).includes(label(N)), { message: 'latest page' });

  const box = page.getByTestId('messages');
  const b = await box.boundingBox();
  await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2);

  // Wheel up (bounded) until seq 1 is on screen: the wheel alone brings every page.
  for (let i = 0; i < 150; i++) {
    const top = await topVisible(page);
    if (top && top.seq === 1) break;
    await page.mouse.wheel(0, -600);
    await new Promise((r) => setTimeout(r, 60));
  }
  const msgs = await h.messages(page);
  const seqs = msgs.map((m) => m.seq);
  assert.equal(seqs.length, N, `all ${N} messages held (got ${seqs.length}, first seq ${seqs[0]})`);
  seqs.forEach((s, i) => assert.equal(s, i + 1, `seq at ${i}`));
  assert.equal(msgs[0].text, label(1));
  assert.match(await page.getByTestId('older-status').textContent(), /beginning/);
  assert.equal((await topVisible(page)).seq, 1, 'seq 1 on screen');
  assert.deepEqual(page.errors, []);
});

test('a page loaded above keeps the top message where it was', async () => {
  // Reopen the chat: only the latest page is on screen again.
  const page = bob.page;
  await page.reload();
  await h.waitOnline(page);
  await page.getByTestId('chat-name').filter({ hasText: 'alice' }).waitFor();
  await h.eventually(async () => (await h.messageTexts(page)).includes(label(N)), { message: 'latest page' });
  const held = (await h.messages(page)).length;
  assert.ok(held < N, `only the latest page after a reload (${held})`);

  // Scroll to 350 px from the top (no load yet), then right to the top (a
  // fling), which loads the page above: the message then at the top must stay
  // where it is, so that scrolling on goes further up.
  const first = (await h.messages(page))[0].seq;
  await page.getByTestId('messages').evaluate((box) => { box.scrollTop = 350; });
  await new Promise((r) => setTimeout(r, 100));
  const before = await topVisible(page);
  await page.getByTestId('messages').evaluate((box) => { box.scrollTop = 0; });
  await h.eventually(async () => (await h.messages(page))[0].seq < first, { message: 'the page above loaded' });
  await new Promise((r) => setTimeout(r, 200));
  const after = await topVisible(page);
  // The message that was at the top (350 px lower than in `before`) is still there.
  const rows = await page.getByTestId('messages').evaluate((box, seq) => {
    const li = box.querySelector(`[data-testid=message][data-seq="${seq}"]`);
    return li.getBoundingClientRect().top - box.getBoundingClientRect().top;
  }, before.seq);
  assert.ok(Math.abs(rows - (before.offset + 350)) <= 2,
    `message ${before.seq} stays at ${before.offset + 350} px (now ${rows}, top ${JSON.stringify(after)})`);
  assert.ok(after.scrollTop > 1000, `scrolled down by the page that came in (scrollTop ${after.scrollTop})`);
});

test('short pages (trimmed by the server) keep loading while the view is at the top', async () => {
  // A fresh device whose socket passes through a proxy that cuts every page of
  // older messages to its last 2 (with more: true), as a server does when a
  // page is over its byte budget.
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  ctx.setDefaultTimeout(h.WAIT);
  const older = new Set();
  await ctx.routeWebSocket(/\/v1\/ws/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((text) => {
      const f = JSON.parse(text);
      if (f.type === 'sync' && f.before && f.before < Number.MAX_SAFE_INTEGER) older.add(f.id);
      server.send(text);
    });
    server.onMessage((text) => {
      const f = JSON.parse(text);
      if (f.type === 'history' && older.has(f.id)) {
        const msgs = f.messages.slice(-2);
        text = JSON.stringify({ ...f, messages: msgs, more: msgs[0]?.seq > 1 });
      }
      ws.send(text);
    });
  });
  try {
    const page = await ctx.newPage();
    h.watchErrors(page);
    await page.goto(server.url);
    await page.getByTestId('login-username').fill('bob');
    await page.getByTestId('login-password').fill('password123');
    await page.getByTestId('login-submit').click();
    await h.waitOnline(page);
    await h.openConv(page, 'alice');
    await h.eventually(async () => (await h.messageTexts(page)).includes(label(N)), { message: 'latest page' });
    const held = (await h.messages(page)).length;
    // One fling to the top, and no scrolling after it: pages of 2 come in
    // until the view no longer shows its top.
    await page.getByTestId('messages').evaluate((box) => { box.scrollTop = 0; });
    await h.eventually(() => page.getByTestId('messages').evaluate((box) => box.scrollTop >= 200),
      { message: 'older pages until the top is out of view' });
    const now = (await h.messages(page)).map((m) => m.seq);
    assert.ok(now.length >= held + 4, `several short pages loaded (${held} -> ${now.length})`);
    now.forEach((s, i) => assert.equal(s, now[0] + i, 'no gap'));
    assert.ok(older.size >= 3, `${older.size} requests for older pages`);
    assert.deepEqual(page.errors, []);
  } finally {
    await ctx.close();
  }
});
