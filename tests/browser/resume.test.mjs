// The network drops in the middle of an answer: a TCP proxy between the browser and the hub
// destroys every connection, as a Wi-Fi blip or a restarting load balancer would. The chat
// page (SSE and WebSocket) and a bare EventSource pick the same answer up where it broke
// off: the text they end with is the uninterrupted answer, and the hub ran one answer, not
// two.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Hub, seed, freePort } from './lib/hub.mjs';
import { launch, newPage, openSignedIn, chooseTransport, ask, waitForState, sleep } from './lib/browser.mjs';

const QUESTION = 'Tell me about the construction, the height and the visiting levels of the Eiffel Tower';

let hub;
let browser;
let proxy;

/** A TCP proxy in front of the hub; `cut()` destroys both ends of every connection. */
async function startProxy(target) {
  const sockets = new Set();
  const port = await freePort();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, '127.0.0.1');
    for (const [a, b] of [[client, upstream], [upstream, client]]) {
      a.on('data', (d) => b.write(d));
      a.on('error', () => b.destroy());
      a.on('close', () => b.destroy());
      sockets.add(a);
      a.on('close', () => sockets.delete(a));
    }
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${port}`,
    cut() {
      const n = sockets.size;
      for (const s of sockets) s.destroy();
      return n;
    },
    close: () => new Promise((r) => server.close(r)),
  };
}

before(async () => {
  // Slow enough to cut mid-answer; a grace window well above the browsers' retry delays.
  hub = await new Hub({ pace: 40, env: { RAGSTREAM_RESUME_GRACE_SECS: '30' } }).start();
  await seed(hub);
  proxy = await startProxy(hub.port);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await proxy?.close();
  await hub?.dispose();
});

/** The answer when nothing interrupts it (the offline provider is deterministic). */
async function uninterrupted(topK) {
  const res = await hub.api('/api/v1/ask', { method: 'POST', body: { question: QUESTION, topK } });
  return res.answer;
}

for (const kind of ['sse', 'ws']) {
  test(`the chat page resumes a ${kind === 'sse' ? 'SSE' : 'WebSocket'} answer in place after the network drops`, async () => {
    const page = await newPage(browser);
    await openSignedIn(page, { url: proxy.url }, hub.adminKey);
    await chooseTransport(page, kind);
    const topK = Number(await page.locator('#topk').inputValue());
    const expected = await uninterrupted(topK);
    const admitted = (await hub.stats()).admittedTotal;

    const turn = await ask(page, QUESTION);
    const body = turn.locator('.answer-body');
    await page.waitForFunction((el) => el.textContent.length > 60, await body.elementHandle(), { timeout: 15000 });
    assert.ok(proxy.cut() > 0, 'connections were cut');
    await waitForState(turn, 'done', 30000);

    // What the page shows, against the uninterrupted answer rendered by the page's own code.
    const [shown, want] = await page.evaluate(async (expected) => {
      const turns = document.querySelectorAll('article.turn');
      const { renderMarkdown } = await import('/static/js/markdown.js');
      const probe = document.createElement('div');
      probe.innerHTML = renderMarkdown(expected, 'probe');
      return [turns[turns.length - 1].querySelector('.answer-body').textContent, probe.textContent];
    }, expected);
    assert.equal(shown, want);
    const stats = await hub.stats();
    assert.equal(stats.admittedTotal - admitted, 1, 'resumed, not asked again');
    assert.equal(await turn.locator('.notice').isVisible(), false, 'no notice left once the answer is back');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });
}

test('a bare EventSource reconnects by itself with Last-Event-ID and continues the same answer', async () => {
  const page = await newPage(browser);
  await page.goto(`${proxy.url}/`);
  const admitted = (await hub.stats()).admittedTotal;
  const expected = await uninterrupted(5);
  const ticket = (await hub.api('/api/v1/stream-tickets', { method: 'POST' })).ticket;
  await page.evaluate(({ question, ticket }) => {
    window.__text = '';
    window.__opens = 0;
    window.__done = false;
    const url = `/api/v1/ask/stream?question=${encodeURIComponent(question)}&topK=5&ticket=${encodeURIComponent(ticket)}`;
    const source = new EventSource(url);
    source.onopen = () => { window.__opens += 1; };
    source.onmessage = (e) => {
      const frame = JSON.parse(e.data);
      if (typeof frame.token === 'string') window.__text += frame.token;
      if (frame.done) {
        window.__done = true;
        source.close();
      }
    };
  }, { question: QUESTION, ticket });
  await page.waitForFunction(() => window.__text.length > 60, null, { timeout: 15000 });
  assert.ok(proxy.cut() > 0, 'connections were cut');
  await page.waitForFunction(() => window.__done, null, { timeout: 30000 });
  const { text, opens } = await page.evaluate(() => ({ text: window.__text, opens: window.__opens }));
  assert.ok(opens >= 2, `the EventSource reconnected (${opens} opens)`);
  assert.equal(text, expected);
  assert.equal((await hub.stats()).admittedTotal - admitted, 2, 'the /ask above and one streamed answer');
  await sleep(50);
  await page.context().close();
});
