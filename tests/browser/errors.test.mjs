// What a person reads when things go wrong: a wrong key (401), a key revoked mid-session
// (401), and too many answers at once for one key (429), on every transport.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Hub, seed } from './lib/hub.mjs';
import { launch, newPage, openSignedIn, chooseTransport, ask, waitForState, screenshot } from './lib/browser.mjs';

let hub;
let browser;

before(async () => {
  hub = await new Hub({ pace: 150, maxStreamsPerUser: 1 }).start();
  await seed(hub);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await hub?.dispose();
});

test('a wrong key gets a readable 401 at sign-in and is not kept', async () => {
  const page = await newPage(browser);
  await page.goto(hub.url);
  await page.locator('#api-key').fill('rsk_this_is_not_a_real_key_at_all_0000');
  await page.locator('#api-key').press('Enter');
  const error = page.locator('dialog.signin .form-error');
  await error.waitFor();
  assert.match(await error.innerText(), /not accepted \(401\)/);
  assert.equal(await page.locator('dialog.signin[open]').count(), 1, 'still asked to sign in');
  assert.ok(!JSON.stringify(await page.evaluate(() => Object.entries(sessionStorage))).includes('rsk_this_is_not'), 'the key is not kept');
  assert.equal(await page.context().cookies(hub.url).then((c) => c.length), 0, 'no session cookie');
  assert.ok(!page.requests.some((u) => u.includes('rsk_this_is_not')), 'the key never goes into a URL');
  await screenshot(page, 'chat-signin-401');
  await page.context().close();
});

test('a key revoked mid-session gets a readable 401 and the sign-in form again', async () => {
  // Over SSE the page holds no connection: it learns at its next question.
  const key = await hub.createKey('carol');
  const page = await newPage(browser);
  await openSignedIn(page, hub, key.key);
  await chooseTransport(page, 'sse');
  await page.locator('#status[data-status="connected"]').waitFor();
  await hub.api(`/api/v1/admin/keys/${key.id}`, { method: 'DELETE' });
  const turn = await ask(page, 'How tall is the Eiffel Tower?');
  await waitForState(turn, 'error');
  assert.match(await turn.locator('.notice').innerText(), /API key was not accepted \(401\)/);
  const dialog = page.locator('dialog.signin[open]');
  await dialog.waitFor();
  assert.match(await dialog.locator('.form-error').innerText(), /401/);
  assert.equal(await page.evaluate(async () => (await fetch('/api/v1/session')).status), 401, 'the session is over');
  await page.context().close();
});

test('a key revoked while its WebSocket is open brings the sign-in form back without a question', async () => {
  // The revocation closes the session's socket at once; the page finds the session over
  // when it reconnects, and asks to sign in again.
  const key = await hub.createKey('carol-ws');
  const page = await newPage(browser);
  await openSignedIn(page, hub, key.key);
  await chooseTransport(page, 'ws');
  await page.locator('#status[data-status="connected"]').waitFor();
  await hub.api(`/api/v1/admin/keys/${key.id}`, { method: 'DELETE' });
  const dialog = page.locator('dialog.signin[open]');
  await dialog.waitFor();
  assert.match(await dialog.locator('.form-error').innerText(), /401/);
  assert.equal(await page.locator('#question').isDisabled(), true, 'no question goes out meanwhile');
  assert.equal(await page.evaluate(async () => (await fetch('/api/v1/session')).status), 401, 'the session is over');
  await page.context().close();
});

/** Keeps one slow answer streaming for `key` from outside the browser. */
async function busyElsewhere(key) {
  const controller = new AbortController();
  const res = await fetch(`${hub.url}/api/v1/ask/stream?question=${encodeURIComponent('Tell me about the construction, the height and the visiting levels of the Eiffel Tower')}&topK=5`, {
    headers: { 'X-API-Key': key.key },
    signal: controller.signal,
  });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  (async () => {
    try {
      while (!(await reader.read()).done);
    } catch {
      // aborted
    }
  })();
  await hub.waitForStats((s) => s.streamsByUser?.[key.id] === 1, { what: 'the slow answer elsewhere' });
  return () => controller.abort();
}

test('a second answer over the per-user limit gets a readable 429 on every transport', async () => {
  const key = await hub.createKey('dave');
  const page = await newPage(browser);
  await openSignedIn(page, hub, key.key);
  for (const kind of ['sse', 'ws', 'json']) {
    const stop = await busyElsewhere(key);
    try {
      await chooseTransport(page, kind);
      const turn = await ask(page, 'When did the Golden Gate Bridge open?');
      await waitForState(turn, 'error', 10000);
      const notice = await turn.locator('.notice').innerText();
      assert.match(notice, /Too many answers at once \(429\)/, `${kind}: ${notice}`);
      assert.match(notice, /Wait for one to finish/);
      assert.equal(await turn.locator('button', { hasText: 'Ask again' }).count(), 1, 'offers to ask again');
      if (kind === 'sse') await screenshot(page, 'chat-429');
    } finally {
      stop();
    }
    await hub.waitForStats((s) => !s.streamsByUser?.[key.id], { what: 'the slow answer to end' });
  }
  // With the other answer gone, asking again works.
  await page.locator('article.turn').last().locator('button', { hasText: 'Ask again' }).click();
  const retried = page.locator('article.turn').last();
  await waitForState(retried, 'done', 30000);
  assert.match(await retried.locator('.answer-body').innerText(), /1937/);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
