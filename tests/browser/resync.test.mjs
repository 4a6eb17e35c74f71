// The `resync` frame (docs/protocol.md): between Alice's page and the
// server, Playwright's WebSocket route swallows the live frames of one
// kind (as a cluster node does that lost its bus), then slips a resync in.
// The page fetches the message it missed and asks the receipts again, on
// the same socket, and sends none of its messages twice.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as h from './helpers.mjs';

let server, browser, alice, bob;
const swallow = new Set();   // frame types the route drops on their way to Alice
const dropped = [];          // what it dropped
const sent = [];             // Alice's frames to the server
let route = null;            // Alice's WebSocket route (the page side)
let sockets = 0;

before(async () => {
  server = await h.startServer();
  browser = await h.launch();
  alice = await h.openPage(browser, server.url);
  bob = await h.openPage(browser, server.url);
  await alice.page.routeWebSocket(/\/v1\/ws/, (ws) => {
    sockets++;
    route = ws;
    const up = ws.connectToServer();
    up.onMessage((m) => {
      let f = null;
      try { f = JSON.parse(m); } catch { /* not ours to judge */ }
      if (f && swallow.has(f.type)) { dropped.push(f); return; }
      ws.send(m);
    });
    ws.onMessage((m) => {
      try { sent.push(JSON.parse(m)); } catch { /* forward it anyway */ }
      up.send(m);
    });
  });
  await h.register(alice.page, 'alice');
  await h.register(bob.page, 'bob');
  await h.startDirect(alice.page, 'bob');
  await h.send(alice.page, 'hello');
  await h.openConv(bob.page, 'alice');
  await h.waitTick(alice.page, 'hello', 'read');
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
});

test('a message that never came live is fetched after resync', async () => {
  swallow.add('msg');
  await h.send(bob.page, 'lost on the bus');
  await h.eventually(() => dropped.some((f) => f.type === 'msg' && f.body === 'lost on the bus'),
    { message: 'the route swallowed the message' });
  swallow.delete('msg');
  assert.ok(!(await h.messageTexts(alice.page)).includes('lost on the bus'));
  route.send(JSON.stringify({ type: 'resync', reason: 'bus' }));
  await h.eventually(async () => (await h.messageTexts(alice.page)).includes('lost on the bus'),
    { message: 'the missed message after resync' });
  const msgs = await h.messages(alice.page);
  assert.deepEqual(msgs.map((m) => m.seq), [1, 2]);
  assert.deepEqual(msgs.map((m) => m.text), ['hello', 'lost on the bus']);
});

test('a lost receipt is asked again after resync; nothing is resent', async () => {
  swallow.add('receipt');
  const before = sent.length;
  await h.send(alice.page, 'did you read it?');
  await h.waitTick(alice.page, 'did you read it?', 'sent');
  // Bob has the chat open: he reads it, and the receipt is swallowed.
  await h.eventually(async () => (await h.messageTexts(bob.page)).includes('did you read it?'),
    { message: 'Bob gets it' });
  await h.eventually(() => dropped.some((f) => f.type === 'receipt' && f.read >= 3),
    { message: 'the route swallowed the read receipt' });
  swallow.delete('receipt');
  assert.notEqual(await h.tickOf(alice.page, 'did you read it?'), 'read');
  route.send(JSON.stringify({ type: 'resync' }));
  await h.waitTick(alice.page, 'did you read it?', 'read');
  // The same socket all along, the connection still online.
  assert.equal(sockets, 1);
  await h.waitOnline(alice.page);
  // Every message went out once: the resync resent nothing.
  const sends = sent.filter((f) => f.type === 'send').map((f) => f.cmid);
  assert.equal(new Set(sends).size, sends.length, `a cmid sent twice: ${sends}`);
  assert.equal(sent.slice(before).filter((f) => f.type === 'send').length, 1);
  assert.ok(sent.slice(before).some((f) => f.type === 'inbox'), 'the resync listed the inbox');
  assert.deepEqual(alice.page.errors, []);
});
