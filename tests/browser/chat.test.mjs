// The chat page against a real hub: token-by-token rendering, citations, timing, Stop,
// every transport, the remembered transport switch, history and keyboard use.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Hub, seed } from './lib/hub.mjs';
import {
  launch, newPage, openSignedIn, chooseTransport, ask, waitForState, recordGrowth, screenshot, sleep, PHONE,
} from './lib/browser.mjs';

let hub;
let browser;

before(async () => {
  hub = await new Hub({ pace: 80 }).start();
  await seed(hub);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await hub?.dispose();
});

test('a new user signs in with the printed key and watches a cited answer stream in (SSE)', async () => {
  const page = await newPage(browser);
  await page.goto(hub.url);
  // Not signed in: the sign-in dialog is up and the question box is off.
  await page.locator('dialog.signin[open]').waitFor();
  assert.equal(await page.locator('#question').isDisabled(), true);
  await page.locator('#api-key').fill(hub.adminKey);
  await page.locator('#api-key').press('Enter');
  await page.locator('dialog.signin').waitFor({ state: 'detached' });
  await page.locator('#status[data-status="connected"]').waitFor();
  assert.match(await page.locator('#welcome').innerText(), /2 documents loaded/);

  await recordGrowth(page);
  const turn = await ask(page, 'How tall is the Eiffel Tower?');
  // The typing indicator shows before the first token.
  await turn.locator('.answer .cursor').waitFor({ timeout: 10000 });
  const blink = await page.evaluate(() => getComputedStyle(document.querySelector('.answer .cursor')).animationName);
  assert.equal(blink, 'blink', 'a blinking cursor while streaming');
  await waitForState(turn, 'done');

  const growth = await page.evaluate(() => window.__growth);
  const streaming = growth.filter((g) => g.state === 'streaming' && g.text.length > 0);
  const finalText = await turn.locator('.answer-body').innerText();
  assert.ok(streaming.length >= 8, `expected the text to grow in many DOM updates, saw ${streaming.length}`);
  for (let i = 1; i < streaming.length; i += 1) {
    assert.ok(streaming[i].text.length > streaming[i - 1].text.length, 'the text only ever grows while streaming');
    assert.ok(streaming[i].text.startsWith(streaming[i - 1].text.trimEnd()), 'each update extends the previous text');
  }
  assert.ok(streaming[0].text.length < finalText.length / 3, 'the first update shows only the start of the answer');
  const spread = streaming.at(-1).at - streaming[0].at;
  assert.ok(spread > 500, `updates are spread over the answer's life (${spread} ms)`);
  assert.match(finalText, /330 metres/);

  // Numbered citations link to sources listed with their titles.
  const cites = turn.locator('.answer-body a.cite');
  assert.ok(await cites.count() >= 1, 'the answer carries citations');
  const first = cites.first();
  const n = await first.getAttribute('data-cite');
  const source = turn.locator(`.sources-list li[id$="-src-${n}"]`);
  assert.match(await source.locator('.title').innerText(), /Eiffel Tower/);
  assert.equal(await first.getAttribute('title'), 'The Eiffel Tower');
  await first.click();
  assert.equal(await source.locator('details').getAttribute('open'), '');

  // Timing under the answer.
  const metrics = await turn.locator('.metrics').innerText();
  assert.match(metrics, /TTFT\s+\d+ ms/);
  assert.match(metrics, /Speed\s+[\d.]+ tok\/s/);
  assert.match(metrics, /Tokens\s+\d+/);
  assert.deepEqual(page.errors, []);
  await screenshot(page, 'chat-desktop');
  await page.context().close();
});

async function stopMidAnswer(transport) {
  const page = await newPage(browser);
  await openSignedIn(page, hub, hub.adminKey);
  await chooseTransport(page, transport);
  const turn = await ask(page, 'Tell me about the construction, the height and the visiting levels of the Eiffel Tower');
  const body = turn.locator('.answer-body');
  if (transport !== 'json') {
    await page.waitForFunction((el) => el.textContent.length > 40, await body.elementHandle(), { timeout: 10000 });
  }
  await hub.waitForStats((s) => s.activeStreams === 1, { what: 'one active stream' });
  if (transport === 'json') await sleep(500);
  assert.equal(await page.locator('#stop').isVisible(), true);
  if (transport === 'ws') {
    // The keyboard way: Escape stops the answer.
    await page.locator('#question').press('Escape');
  } else {
    await page.locator('#stop').click();
  }
  await waitForState(turn, 'stopped', 5000);
  const atStop = await body.innerText();
  const stats = await hub.waitForStats((s) => s.activeStreams === 0, { timeout: 6000, what: 'the stream to be released' });
  assert.equal(stats.activeStreams, 0);
  await sleep(800);
  assert.equal(await body.innerText(), atStop, 'no text arrives after Stop');
  assert.match(await turn.locator('.notice').innerText(), transport === 'json' ? /Stopped before the answer began/ : /Stopped after \d+ tokens?/);
  assert.equal(await turn.locator('.cursor').count(), 0, 'the cursor is gone');
  assert.equal(await page.locator('#send').isVisible(), true, 'Ask is back');
  // The answer was cut short: it is much shorter than a full one would be.
  assert.ok(atStop.length < 400, `stopped mid-answer (${atStop.length} chars)`);
  assert.deepEqual(page.errors, []);
  await page.context().close();
}

test('Stop halts an SSE answer mid-stream and the hub releases its slot', () => stopMidAnswer('sse'));
test('Stop (Escape) halts a WebSocket answer mid-stream and the hub releases its slot', () => stopMidAnswer('ws'));
test('Stop halts a non-streaming answer and the hub releases its slot', () => stopMidAnswer('json'));

test('every transport answers; the choice and the earlier turns survive a reload', async () => {
  const page = await newPage(browser);
  await openSignedIn(page, hub, hub.adminKey);
  const questions = {
    sse: 'When did the Golden Gate Bridge open?',
    ws: 'How long is the main span of the Golden Gate Bridge?',
    json: 'Who was the engineer of the Eiffel Tower?',
  };
  const expected = { sse: /May 27, 1937/, ws: /1,280 metres/, json: /Gustave Eiffel/ };
  for (const kind of ['sse', 'ws', 'json']) {
    await chooseTransport(page, kind);
    const turn = await ask(page, questions[kind]);
    await waitForState(turn, 'done');
    assert.equal(await turn.locator('.answer').getAttribute('data-transport'), kind);
    assert.match(await turn.locator('.answer-body').innerText(), expected[kind]);
    assert.ok(await turn.locator('.sources-list li').count() >= 1, `${kind}: sources listed`);
    assert.match(await turn.locator('.metrics').innerText(), /TTFT/);
  }
  // The session cookie authenticates every connection: no ticket and no key in any URL.
  assert.ok(!page.requests.some((u) => u.includes('ticket=')), 'no ticket in a URL');
  assert.ok(!page.requests.some((u) => u.includes(hub.adminKey)), 'the API key never appears in a URL');

  await page.reload();
  await page.locator('#status[data-status="connected"]').waitFor();
  assert.equal(await page.locator('#transport-json').isChecked(), true, 'the transport choice is remembered');
  assert.equal(await page.locator('article.turn').count(), 3, 'earlier turns are kept');
  assert.match(await page.locator('article.turn').nth(0).locator('.answer-body').innerText(), /May 27, 1937/);

  // Signing out ends the session and forgets the conversation.
  await page.locator('#signout').click();
  await page.locator('dialog.signin[open]').waitFor();
  assert.equal(await page.locator('article.turn').count(), 0);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('ragstream.history')), null);
  assert.equal(await page.evaluate(async () => (await fetch('/api/v1/session')).status), 401);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('questions are turns of one conversation on every transport; New chat starts another', async () => {
  const page = await newPage(browser);
  const key = await hub.createKey('frank'); // conversations belong to a key: start with none
  await openSignedIn(page, hub, key.key);
  const conversation = () => page.evaluate(() => sessionStorage.getItem('ragstream.conversation'));
  let id = null;
  for (const [kind, question] of [['sse', 'Who designed the Eiffel Tower?'], ['ws', 'How tall is it?'], ['json', 'When was its construction finished?']]) {
    await chooseTransport(page, kind);
    const turn = await ask(page, question);
    await waitForState(turn, 'done');
    const now = await conversation();
    assert.ok(now, `${kind}: the page knows its conversation`);
    if (id) assert.equal(now, id, `${kind}: the question continued the same conversation`);
    id = now;
  }
  const stored = await hub.api(`/api/v1/conversations/${id}`, { key: key.key });
  assert.equal(stored.messages.length, 6, 'three turns, each a question and an answer');
  assert.deepEqual(stored.messages.filter((m) => m.role === 'user').map((m) => m.content),
    ['Who designed the Eiffel Tower?', 'How tall is it?', 'When was its construction finished?']);

  await page.locator('#new-chat').click();
  assert.equal(await page.locator('article.turn').count(), 0);
  assert.equal(await conversation(), null);
  const fresh = await ask(page, 'When did the Golden Gate Bridge open?');
  await waitForState(fresh, 'done');
  const other = await conversation();
  assert.ok(other && other !== id, 'a new conversation');

  // The sidebar lists both conversations, newest first; opening the older one brings back its turns.
  const items = page.locator('#history-list li[data-id]');
  await page.waitForFunction(() => document.querySelectorAll('#history-list li[data-id]').length === 2);
  assert.equal(await items.nth(0).getAttribute('data-id'), other);
  assert.equal(await items.nth(0).getAttribute('aria-current'), 'true');
  assert.match(await items.nth(1).innerText(), /Who designed the Eiffel Tower\?/);
  await items.nth(1).locator('button.open').click();
  await page.waitForFunction(() => document.querySelectorAll('article.turn').length === 3);
  assert.equal(await conversation(), id);
  assert.equal(await items.nth(1).getAttribute('aria-current'), 'true');
  assert.match(await page.locator('article.turn').nth(1).locator('.question').innerText(), /How tall is it\?/);
  assert.match(await page.locator('article.turn').nth(1).locator('.metrics').innerText(), /Tokens\s+\d+/);
  // ...and the next question continues it.
  const follow = await ask(page, 'How many rivets hold it together?');
  await waitForState(follow, 'done');
  assert.equal(await conversation(), id);
  assert.equal((await hub.api(`/api/v1/conversations/${id}`, { key: key.key })).messages.length, 8);
  await screenshot(page, 'chat-conversations');
  // It moved to the top (most recently updated); the other one is second now.
  assert.equal(await items.nth(0).getAttribute('data-id'), id);
  await page.locator(`#history-list li[data-id="${other}"] button.open`).click();
  await page.waitForFunction(() => document.querySelectorAll('article.turn').length === 1);
  assert.equal(await conversation(), other);

  // A conversation deleted behind the page's back: the question starts a new one, once.
  await hub.api(`/api/v1/conversations/${other}`, { method: 'DELETE', key: key.key });
  const orphan = await ask(page, 'How long is its main span?');
  await waitForState(orphan, 'error');
  assert.match(await orphan.locator('.notice').innerText(), /no longer exists/);
  const again = page.locator('article.turn').last();
  await waitForState(again, 'done');
  const third = await conversation();
  assert.ok(third && third !== other);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the chat works by keyboard alone and fits a phone screen', async () => {
  const page = await newPage(browser, { viewport: PHONE });
  await page.goto(hub.url);
  await page.keyboard.type(hub.adminKey); // the key field has focus
  await page.keyboard.press('Enter');
  await page.locator('#status[data-status="connected"]').waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), 'question', 'focus moves to the question box');
  await page.keyboard.type('What colour is the Golden Gate Bridge painted?');
  await page.keyboard.press('Enter');
  const turn = page.locator('article.turn').last();
  await waitForState(turn, 'done');
  assert.match(await turn.locator('.answer-body').innerText(), /International Orange/);
  // The conversations drawer opens from its button and closes with Escape.
  assert.equal(await page.locator('#history').isVisible(), false);
  await page.locator('#history-toggle').click();
  await page.locator('#history li[data-id]').first().waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.closest('#history') !== null), true, 'focus moves into the drawer');
  await page.keyboard.press('Escape');
  assert.equal(await page.locator('#history').isVisible(), false);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'history-toggle');
  // Nothing is wider than the screen.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling (overflow ${overflow}px)`);
  const box = await page.locator('#composer').boundingBox();
  assert.ok(box.y + box.height <= PHONE.height + 1, 'the question box is on screen');
  await screenshot(page, 'chat-phone');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
