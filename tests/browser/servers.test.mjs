// <meta name="parley-servers">: the page's WebSocket uses a list of
// cluster nodes in turn. A first entry nobody listens on is skipped; when
// the node the pages are connected to stops, they go on to the next node
// of the list (another parleyd on the same data directory and another
// port), send what waited in the outbox once, and get what the other side
// sends live. REST stays on the page's origin.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as h from './helpers.mjs';

let browser;
const dirs = [];
const servers = [];

/** A port on 127.0.0.1 that nothing listens on (at the time of asking). */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

/** A copy of the web root whose index.html names these servers. */
function webWith(list) {
  const dir = mkdtempSync(join(tmpdir(), 'parley-web-'));
  dirs.push(dir);
  cpSync(h.WEB, dir, { recursive: true });
  const index = join(dir, 'index.html');
  const html = readFileSync(index, 'utf8');
  writeFileSync(index, html.replace('<meta charset="utf-8">',
    `<meta charset="utf-8">\n<meta name="parley-servers" content="${list}">`));
  return dir;
}

async function start(args) {
  const srv = await h.startServer(args);
  servers.push(srv);
  return srv;
}

/** Every WebSocket the page opens, by URL (without the token). */
function watchSockets(page) {
  const urls = [];
  page.on('websocket', (ws) => urls.push(ws.url().replace(/\?.*/, '')));
  return urls;
}

before(async () => {
  browser = await h.launch();
});

after(async () => {
  await browser?.close().catch(() => {});
  for (const s of servers) await s.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test('a first server nobody listens on is skipped', async () => {
  const dead = await freePort();
  const port = await freePort();
  const srv = await start(['--port', String(port), '--web-dir', webWith(
    ` http://127.0.0.1:${dead}, not a url, http://127.0.0.1:${port}/`)]);
  const alice = await h.openPage(browser, srv.url);
  const bob = await h.openPage(browser, srv.url);
  const tried = watchSockets(alice.page);
  await h.register(alice.page, 'alice');
  await h.register(bob.page, 'bob');
  assert.equal(tried[0], `ws://127.0.0.1:${dead}/v1/ws`);
  assert.equal(tried.at(-1), `ws://127.0.0.1:${port}/v1/ws`);
  await h.startDirect(alice.page, 'bob');
  await h.send(alice.page, 'through the list');
  await h.openConv(bob.page, 'alice');
  await h.waitTick(alice.page, 'through the list', 'read');
  // the entry that is not an origin was skipped, with a warning (not an error)
  assert.deepEqual(alice.page.errors, []);
  await alice.context.close();
  await bob.context.close();
});

test('the pages go on to the next node when theirs stops', async () => {
  const portA = await freePort();
  const portB = await freePort();
  const data = mkdtempSync(join(tmpdir(), 'parley-data-'));
  dirs.push(data);
  const web = webWith(`http://127.0.0.1:${portA},http://127.0.0.1:${portB}`);
  const a = await start(['--port', String(portA), '--data-dir', data, '--web-dir', web]);
  const alice = await h.openPage(browser, a.url);
  const bob = await h.openPage(browser, a.url);
  const tried = watchSockets(bob.page);
  await h.register(alice.page, 'carol');
  await h.register(bob.page, 'dave');
  await h.startDirect(alice.page, 'dave');
  await h.send(alice.page, 'before');
  await h.openConv(bob.page, 'carol');
  await h.waitTick(alice.page, 'before', 'read');

  await a.stop();
  await alice.page.locator('[data-testid=conn-state]:not([data-state=online])').waitFor({ state: 'attached' });
  await h.send(alice.page, 'while no node runs');
  await h.waitTick(alice.page, 'while no node runs', 'pending');
  const b = await start(['--port', String(portB), '--data-dir', data, '--web-dir', web]);
  await h.waitOnline(alice.page);
  await h.waitOnline(bob.page);
  await h.waitTick(alice.page, 'while no node runs', 'read', 20000);
  await h.send(bob.page, 'from the other node');
  await h.eventually(async () => (await h.messageTexts(alice.page)).includes('from the other node'),
    { message: 'the reply, live through the next node' });
  for (const page of [alice.page, bob.page]) {
    const msgs = await h.messages(page);
    assert.deepEqual(msgs.map((m) => m.text), ['before', 'while no node runs', 'from the other node']);
    assert.deepEqual(msgs.map((m) => m.seq), [1, 2, 3]);
  }
  assert.ok(tried.includes(`ws://127.0.0.1:${portB}/v1/ws`), tried.join(' '));
  assert.equal(b.url, `http://127.0.0.1:${portB}`);
});
