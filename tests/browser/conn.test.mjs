// web/conn.js without a browser (node only): the list of servers from
// <meta name="parley-servers">, and the order and delays of reconnects
// over it. The browser globals it uses are stubbed: a WebSocket that is
// refused at once, timers that record their delay and run at once, and a
// Math.random fixed at 0.5 (each delay is half its ceiling).

import { test } from 'node:test';
import assert from 'node:assert/strict';

globalThis.window = { addEventListener() {}, removeEventListener() {} };
globalThis.location = { protocol: 'http:', host: 'page.example' };
globalThis.navigator = { onLine: true };
globalThis.fetch = async () => { throw new Error('down'); };

const { Connection, parseServers } = await import('../../web/conn.js');

test('parseServers: origins as WebSocket base URLs, the rest skipped', () => {
  const warn = console.warn;
  const warned = [];
  console.warn = (m) => warned.push(m);
  try {
    assert.deepEqual(parseServers(' https://a.example, ws://b.example:81/,http://c.example:80 ,wss://d:9'),
      ['wss://a.example', 'ws://b.example:81', 'ws://c.example', 'wss://d:9']);
    assert.deepEqual(parseServers('ftp://x, https://a/path, nonsense, https://u:p@a, https://a?x=1, https://e,https://e'),
      ['wss://e']);
    assert.equal(warned.length, 5);
    assert.deepEqual(parseServers(''), []);
    assert.deepEqual(parseServers(undefined), []);
  } finally {
    console.warn = warn;
  }
});

/** Runs a Connection whose every connect is refused; returns [url, delay] of the first n attempts. */
async function refusedAttempts(servers, n) {
  const opened = [];
  const delays = [];
  const saved = { WebSocket: globalThis.WebSocket, setTimeout: globalThis.setTimeout,
    setInterval: globalThis.setInterval, random: Math.random };
  const realTimeout = saved.setTimeout;
  let done;
  const finished = new Promise((r) => { done = r; });
  globalThis.WebSocket = class {
    constructor(url) {
      opened.push(url.replace(/\?.*/, ''));
      realTimeout(() => this.onclose?.({ code: 1006 }), 0);
    }
    close() {}
  };
  globalThis.setInterval = () => 0;
  globalThis.setTimeout = (fn, ms) => {
    delays.push(ms);
    if (delays.length >= n) done();
    else realTimeout(fn, 0);
    return 0;
  };
  Math.random = () => 0.5;
  const conn = new Connection({ token: 't', servers });
  try {
    conn.start();
    await finished;
  } finally {
    conn.stopped = true;
    Object.assign(globalThis, { WebSocket: saved.WebSocket, setTimeout: saved.setTimeout,
      setInterval: saved.setInterval });
    Math.random = saved.random;
  }
  return opened.slice(0, n).map((u, i) => [u, delays[i]]);
}

test('one server (the page origin): the ceiling doubles at every failure', async () => {
  assert.deepEqual(await refusedAttempts([], 4), [
    ['ws://page.example/v1/ws', 500], ['ws://page.example/v1/ws', 1000],
    ['ws://page.example/v1/ws', 2000], ['ws://page.example/v1/ws', 4000]]);
});

test('a list: round robin, the ceiling doubles once per round', async () => {
  const list = ['ws://a:1', 'ws://b:2', 'wss://c'];
  assert.deepEqual(await refusedAttempts(list, 7), [
    ['ws://a:1/v1/ws', 500], ['ws://b:2/v1/ws', 500], ['wss://c/v1/ws', 500],
    ['ws://a:1/v1/ws', 1000], ['ws://b:2/v1/ws', 1000], ['wss://c/v1/ws', 1000],
    ['ws://a:1/v1/ws', 2000]]);
});
