// Upstream failures read plainly: the hub talks to a mock OpenAI-compatible server on
// loopback that fails the way real ones do, and the chat and admin pages say so.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { Hub, seed, freePort } from './lib/hub.mjs';
import { launch, newPage, openSignedIn, chooseTransport, ask, waitForState } from './lib/browser.mjs';

let hub;
let browser;
let upstream;
let mode = 'unavailable';

function chunk(content) {
  return `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', model: 'mock', choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`;
}

before(async () => {
  const port = await freePort();
  upstream = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (mode === 'unavailable') {
        res.writeHead(503, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: { message: 'the mock model is down for maintenance', type: 'server_error' } }));
        return;
      }
      // 'broken': a few tokens, then the connection drops before [DONE].
      res.writeHead(200, { 'Content-Type': 'text/event-stream' });
      res.write(chunk('The mock model'));
      res.write(chunk(' starts an answer'));
      setTimeout(() => {
        res.write(chunk(' and then'));
        setTimeout(() => res.socket.destroy(), 200);
      }, 200);
    });
  });
  await new Promise((r) => upstream.listen(port, '127.0.0.1', r));
  hub = await new Hub({
    env: {
      RAGSTREAM_PROVIDER: 'openai',
      OPENAI_API_KEY: 'mock-key',
      OPENAI_BASE_URL: `http://127.0.0.1:${port}/v1`,
      OPENAI_MODEL: 'mock',
      RAGSTREAM_UPSTREAM_MAX_RETRIES: '0',
    },
  }).start();
  await seed(hub);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await hub?.dispose();
  upstream?.close();
});

test('a provider that is down gets a readable message on every transport, and shows on the admin page', async () => {
  mode = 'unavailable';
  const page = await newPage(browser);
  await openSignedIn(page, hub, hub.adminKey);
  for (const kind of ['sse', 'ws', 'json']) {
    await chooseTransport(page, kind);
    const turn = await ask(page, 'How tall is the Eiffel Tower?');
    await waitForState(turn, 'error');
    const notice = await turn.locator('.notice').innerText();
    assert.match(notice, /The language model failed to answer \(upstream_unavailable\): the provider is unavailable/, `${kind}: ${notice}`);
    assert.match(notice, /Try again/);
  }
  await page.goto(`${hub.url}/admin`);
  const errors = page.locator('[data-card="errors"]');
  await errors.locator('.value', { hasText: '3' }).waitFor({ timeout: 10000 });
  assert.match(await errors.innerText(), /upstream_unavailable 3/);
  await page.context().close();
});

test('a provider that breaks off mid-answer keeps the partial text and says why', async () => {
  mode = 'broken';
  const page = await newPage(browser);
  await openSignedIn(page, hub, hub.adminKey);
  await chooseTransport(page, 'sse');
  const turn = await ask(page, 'How tall is the Eiffel Tower?');
  await waitForState(turn, 'error');
  assert.match(await turn.locator('.answer-body').innerText(), /The mock model starts an answer and then/);
  assert.match(await turn.locator('.notice').innerText(), /\(upstream_interrupted\)/);
  assert.match(await turn.locator('.metrics').innerText(), /Tokens\s+3/);
  assert.equal(await turn.locator('button', { hasText: 'Ask again' }).count(), 1);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
