// Two users in two browser contexts: register, direct chat, messages both
// ways, ticks from sent to delivered to read, typing, presence, a reload that
// keeps the session, a second device at phone width, and log out.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as h from './helpers.mjs';

let server, browser, alice, bob;

before(async () => {
  server = await h.startServer();
  browser = await h.launch();
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.stop();
});

test('register, start a direct chat, exchange messages', async () => {
  alice = await h.openPage(browser, server.url);
  bob = await h.openPage(browser, server.url);
  await h.screenshot(alice.page, 'login');
  await h.register(alice.page, 'alice');
  await h.register(bob.page, 'bob');

  await h.startDirect(alice.page, 'bob');
  await h.send(alice.page, 'Hi Bob! Are you there?');
  // Bob has not opened the chat: it shows in his list with an unread badge and
  // his device reports it delivered (grey double tick for Alice).
  const item = bob.page.locator('[data-testid=conv-item][data-name=alice]');
  await item.locator('[data-testid=conv-preview]', { hasText: 'Are you there?' }).waitFor();
  assert.equal(await item.getByTestId('unread').textContent(), '1');
  await h.waitTick(alice.page, 'Are you there?', 'delivered');

  await h.openConv(bob.page, 'alice');
  await h.waitTick(alice.page, 'Are you there?', 'read');
  await item.getByTestId('unread').waitFor({ state: 'detached' });

  await h.send(bob.page, 'Yes, hi Alice 👋');
  await h.eventually(async () => (await h.messageTexts(alice.page)).includes('Yes, hi Alice 👋'),
    { message: 'Alice gets the reply' });
  await h.waitTick(bob.page, 'Yes, hi Alice 👋', 'read');
  assert.deepEqual(await h.messageTexts(alice.page), ['Hi Bob! Are you there?', 'Yes, hi Alice 👋']);
  assert.deepEqual(await h.messageTexts(bob.page), ['Hi Bob! Are you there?', 'Yes, hi Alice 👋']);
  assert.deepEqual((await h.messages(bob.page)).map((m) => m.seq), [1, 2]);
});

test('typing shows on the other side and goes away', async () => {
  const input = alice.page.getByTestId('composer-input');
  // Type the way people do (the client tells the server at most every 2.5 s).
  const typing = input.pressSequentially('I am typing something longer now', { delay: 100 });
  await bob.page.getByTestId('typing').filter({ hasText: 'alice is typing…' }).waitFor();
  await h.screenshot(bob.page, 'typing');
  await typing;
  await input.press('Enter');
  await h.eventually(async () => (await h.messageTexts(bob.page)).includes('I am typing something longer now'),
    { message: 'Bob gets the typed message' });
  // The message ends the typing indicator.
  await bob.page.getByTestId('typing').waitFor({ state: 'hidden' });
  await h.waitTick(alice.page, 'I am typing something longer now', 'read');
  await h.screenshot(alice.page, 'direct-alice');
});

test('a reload keeps you logged in, with the chat and presence', async () => {
  await bob.page.reload();
  await bob.page.getByTestId('me-name').filter({ hasText: 'bob' }).waitFor();
  await h.waitOnline(bob.page);
  // The open chat (#c<id>) comes back, with the history.
  await bob.page.getByTestId('chat-name').filter({ hasText: 'alice' }).waitFor();
  await h.eventually(async () => (await h.messageTexts(bob.page)).length === 3, { message: 'history after reload' });
  assert.equal(await bob.page.getByTestId('login-screen').isVisible(), false);
  // On connect the server tells Bob that Alice is online.
  await bob.page.locator('[data-testid=conv-item][data-name=alice] [data-testid=presence][data-online=true]').waitFor();
  await bob.page.getByTestId('chat-status').filter({ hasText: 'online' }).waitFor();
  // Alice sees Bob go offline and come back.
  await alice.page.locator('[data-testid=conv-item][data-name=bob] [data-testid=presence][data-online=true]')
    .waitFor({ state: 'attached' });
});

test('a second device at phone width (390x844) logs in and chats', async () => {
  const phone = await h.openPage(browser, server.url, {
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  try {
    const p = phone.page;
    await p.getByTestId('login-username').fill('bob');
    await p.getByTestId('login-password').fill('wrong-password');
    await p.getByTestId('login-submit').click();
    await p.getByTestId('login-error').filter({ hasText: 'Wrong username or password' }).waitFor();
    await p.getByTestId('login-password').fill('password123');
    await p.getByTestId('login-submit').click();
    await h.waitOnline(p);
    // Narrow: the list alone, then the chat alone with a back button.
    await p.locator('[data-testid=conv-item][data-name=alice]').waitFor();
    assert.equal(await p.getByTestId('chat-pane').isVisible(), false);
    await h.screenshot(p, 'phone-list');
    await h.openConv(p, 'alice');
    assert.equal(await p.getByTestId('sidebar').isVisible(), false);
    // On a touch screen Enter is a new line; the button sends.
    await h.send(p, 'Sent from my phone, which is a narrow screen: long lines wrap inside the bubble.', { button: true });
    await h.eventually(async () => (await h.messageTexts(alice.page)).includes(
      'Sent from my phone, which is a narrow screen: long lines wrap inside the bubble.'), { message: 'Alice gets it' });
    await h.waitTick(p, 'Sent from my phone', 'read');
    await h.send(alice.page, 'Got it 👍');
    await h.eventually(async () => (await h.messageTexts(p)).includes('Got it 👍'), { message: 'phone gets the answer' });
    // Bob's other device (the desktop one) gets his phone's message too.
    await h.eventually(async () => (await h.messageTexts(bob.page)).includes(
      'Sent from my phone, which is a narrow screen: long lines wrap inside the bubble.'), { message: 'Bob desktop' });
    await h.screenshot(p, 'phone-chat');
    await p.getByTestId('back').click();
    await p.getByTestId('conv-list').waitFor();
    assert.deepEqual(p.errors, []);
  } finally {
    await phone.context.close();
  }
});

test('log out revokes the token and shows the login screen', async () => {
  const token = await alice.page.evaluate(() => JSON.parse(localStorage.getItem('parley.session')).token);
  await alice.page.getByTestId('logout').click();
  await alice.page.getByTestId('login-screen').waitFor();
  assert.equal(await alice.page.evaluate(() => localStorage.getItem('parley.session')), null);
  const status = await alice.page.evaluate(async (t) =>
    (await fetch('/v1/conversations', { headers: { Authorization: `Bearer ${t}` } })).status, token);
  assert.equal(status, 401);
  await alice.page.reload();
  await alice.page.getByTestId('login-screen').waitFor();
  assert.deepEqual(alice.page.errors, []);
  assert.deepEqual(bob.page.errors, []);
});
