// Browser sessions (issue 18): the pages sign in with an HttpOnly cookie and keep no key;
// the seed's React client streams with that cookie from the hub's origin; a page on another
// origin cannot use it; sign-out and revocation end it for SSE and WebSocket.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { Hub, seed } from './lib/hub.mjs';
import { launch, newPage, openSignedIn, chooseTransport, ask, waitForState } from './lib/browser.mjs';
import { buildSeedStatic, SEED_PAGES } from './lib/seed-fixture.mjs';

let fixture;
let hub;
let instant; // the same pages, with answers delivered at once (pace 0)
let browser;
const elsewhere = {}; // pages on other origins: same site (another port), another site

/** A plain page on another origin: what an attacker's page (or an unrelated app) would be. */
function otherOrigin(host) {
  return new Promise((resolve, reject) => {
    const server = createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end('<!doctype html><title>elsewhere</title><p>another origin</p>');
    });
    server.on('error', reject);
    server.listen(0, host, () => resolve({ server, url: `http://${host}:${server.address().port}` }));
  });
}

before(async () => {
  fixture = await buildSeedStatic();
  elsewhere.sameSite = await otherOrigin('127.0.0.1');
  elsewhere.crossSite = await otherOrigin('127.0.0.2');
  hub = await new Hub({
    pace: 40,
    env: {
      RAGSTREAM_STATIC_DIR: fixture.dir,
      // Both may call the API with credentials (CORS): the cookie must still not work there.
      RAGSTREAM_CORS_ORIGINS: `${elsewhere.sameSite.url},${elsewhere.crossSite.url}`,
    },
  }).start();
  await seed(hub);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await hub?.dispose();
  await instant?.dispose();
  for (const o of Object.values(elsewhere)) o.server.close();
  fixture?.dispose();
});

/** The session cookie as the browser holds it. */
async function sessionCookie(page) {
  const cookies = await page.context().cookies(hub.url);
  return cookies.find((c) => c.name === 'ragstream_session');
}

/** Every value in the page's sessionStorage and localStorage. */
function storage(page) {
  return page.evaluate(() => [sessionStorage, localStorage].flatMap((s) => Object.entries(s)));
}

/** Whether a new EventSource on `url` opens ('open') or fails ('error'). */
function probeEventSource(page, url) {
  return page.evaluate((u) => new Promise((resolve) => {
    const es = new EventSource(u, { withCredentials: true });
    es.onopen = () => { es.close(); resolve('open'); };
    es.onerror = () => { es.close(); resolve('error'); };
  }), url);
}

/** Whether a new WebSocket on `url` opens ('open') or is refused ('closed'). */
function probeWebSocket(page, url) {
  return page.evaluate((u) => new Promise((resolve) => {
    const ws = new WebSocket(u);
    ws.onopen = () => { ws.close(); resolve('open'); };
    ws.onclose = () => resolve('closed');
  }), url);
}

const wsUrl = (path) => `${hub.url.replace(/^http/, 'ws')}${path}`;
const STREAM = '/api/v1/ask/stream?question=How%20tall%20is%20the%20Eiffel%20Tower%3F&topK=3';

/** Searches the page's whole JavaScript heap (after a garbage collection) for a string. */
async function heapHolds(page, text) {
  const cdp = await page.context().newCDPSession(page);
  const chunks = [];
  cdp.on('HeapProfiler.addHeapSnapshotChunk', ({ chunk }) => chunks.push(chunk));
  await cdp.send('HeapProfiler.enable');
  await cdp.send('HeapProfiler.collectGarbage');
  await cdp.send('HeapProfiler.takeHeapSnapshot', { reportProgress: false });
  await cdp.detach();
  return chunks.join('').includes(text);
}

test('the chat page signs in with an HttpOnly cookie and keeps no key; a reload stays signed in', async () => {
  const key = await hub.createKey('grace');
  const page = await newPage(browser);
  await page.goto(hub.url);
  await page.locator('#api-key').pressSequentially(key.key);
  await page.locator('#api-key').press('Enter');
  await page.locator('dialog.signin').waitFor({ state: 'detached' });
  await page.locator('#status[data-status="connected"]').waitFor();

  const cookie = await sessionCookie(page);
  assert.ok(cookie, 'the hub set a session cookie');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');
  assert.equal(cookie.path, '/');
  assert.ok(!cookie.value.includes(key.key));
  assert.equal(await page.evaluate(() => document.cookie.includes('ragstream_session')), false, 'scripts cannot read it');
  assert.ok(!JSON.stringify(await storage(page)).includes(key.key), 'no key in sessionStorage or localStorage');
  assert.equal(await page.evaluate((k) => document.documentElement.outerHTML.includes(k), key.key), false);
  assert.equal(await heapHolds(page, key.key), false, 'no copy of the key anywhere in the page\'s memory');

  // Every transport answers on the cookie alone: no ticket and no key in any URL.
  for (const [kind, question] of [['sse', 'When did the Golden Gate Bridge open?'], ['ws', 'How tall is the Eiffel Tower?'], ['json', 'Who designed the Eiffel Tower?']]) {
    await chooseTransport(page, kind);
    const turn = await ask(page, question);
    await waitForState(turn, 'done');
  }
  assert.ok(!page.requests.some((u) => u.includes('ticket=') || u.includes(key.key)), page.requests.join('\n'));

  await page.reload();
  await page.locator('#status[data-status="connected"]').waitFor();
  assert.equal(await page.locator('dialog.signin').count(), 0, 'still signed in after a reload');
  const me = await page.evaluate(async () => (await fetch('/api/v1/session')).json());
  assert.equal(me.keyName, 'grace');
  assert.equal(me.isAdmin, false);
  assert.equal(await page.evaluate(() => document.cookie.includes('ragstream_session')), false);
  // Another tab of the same browser is signed in too: the dialog shows, then goes by itself.
  const tab = await page.context().newPage();
  await tab.goto(hub.url);
  await tab.locator('#status[data-status="connected"]').waitFor();
  await tab.locator('dialog.signin').waitFor({ state: 'detached' });
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the admin page signs in with the cookie, its live feed needs no ticket, a reload stays signed in', async () => {
  const page = await newPage(browser);
  await openSignedIn(page, hub, hub.adminKey, '/admin');
  await page.locator('#cards .card').first().waitFor();
  assert.ok(!JSON.stringify(await storage(page)).includes(hub.adminKey));
  assert.ok(!page.requests.some((u) => u.includes('ticket=')), 'the live feed is opened without a ticket');
  await page.reload();
  await page.locator('#cards .card').first().waitFor();
  assert.equal(await page.locator('dialog.signin').count(), 0, 'still signed in after a reload');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

/** Whether any of the page's own globals (window properties, walked a few levels deep) holds `text`. */
function globalsHold(page, text) {
  return page.evaluate((t) => {
    const seen = new WeakSet();
    const holds = (value, depth) => {
      if (typeof value === 'string') return value.includes(t);
      if (value === null || typeof value !== 'object' || depth > 4 || seen.has(value)) return false;
      if (value instanceof Node) return false; // the DOM is checked on its own
      seen.add(value);
      let names = [];
      try { names = Object.getOwnPropertyNames(value); } catch { return false; }
      return names.some((n) => { try { return holds(value[n], depth + 1); } catch { return false; } });
    };
    return Object.getOwnPropertyNames(window)
      .some((n) => { try { return holds(window[n], 0); } catch { return false; } });
  }, text);
}

test("the admin page keeps no key in storage or globals, and its sign-out button ends the session on the hub", async () => {
  const key = await hub.createKey('ivan', { admin: true });
  const page = await newPage(browser);
  await page.goto(`${hub.url}/admin`);
  await page.locator('#api-key').pressSequentially(key.key);
  await page.locator('#api-key').press('Enter');
  await page.locator('dialog.signin').waitFor({ state: 'detached' });
  await page.locator('#cards .card').first().waitFor();

  assert.ok(!JSON.stringify(await storage(page)).includes(key.key), 'no key in sessionStorage or localStorage');
  // The walk finds what a global holds a few levels down (or the check below proves nothing).
  await page.evaluate(() => { window.__canary = { nested: [{ value: 'canary-5f3e' }] }; });
  assert.equal(await globalsHold(page, 'canary-5f3e'), true);
  assert.equal(await globalsHold(page, key.key), false, 'no key in the page\'s globals');
  assert.equal(await page.evaluate((k) => document.documentElement.outerHTML.includes(k), key.key), false);
  assert.equal(await heapHolds(page, key.key), false, 'no copy of the key anywhere in the page\'s memory');
  const cookie = await sessionCookie(page);
  assert.ok(cookie, 'signed in with the cookie');
  // A socket the page holds open with the session: signing out closes it, with the reason.
  await page.evaluate((u) => new Promise((resolve, reject) => {
    const ws = new WebSocket(u);
    window.__held = { ws, closed: new Promise((done) => { ws.onclose = (e) => done({ code: e.code, reason: e.reason }); }) };
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error('the socket did not open'));
  }), wsUrl('/api/v1/chat/ws'));

  await page.locator('#signout').click();
  await page.locator('dialog.signin[open]').waitFor();
  const closed = await page.evaluate(() => Promise.race([
    window.__held.closed,
    new Promise((resolve) => { setTimeout(() => resolve('still open after 2 s'), 2000); }),
  ]));
  assert.deepEqual(closed, { code: 1008, reason: 'signed out' });
  assert.equal(await sessionCookie(page), undefined, 'the browser dropped the cookie');
  // Ended on the hub, not only in this browser: the old cookie opens nothing.
  await page.context().addCookies([cookie]);
  assert.equal(await page.evaluate(async () => (await fetch('/api/v1/session')).status), 401);
  assert.equal(await page.evaluate(async () => (await fetch('/api/v1/admin/stats')).status), 401);
  await page.context().close();
});

test("the seed's useSSE hook, unchanged, streams an answer token by token with the session cookie", async () => {
  const question = 'How tall is the Eiffel Tower?';
  const expected = await hub.api('/api/v1/ask', { method: 'POST', body: { question, topK: 5 } });
  const page = await newPage(browser);
  await page.goto(`${hub.url}${SEED_PAGES.useSSE}`);
  await page.locator('#question').fill(question);

  // Not signed in: the EventSource is refused.
  await page.locator('#ask').click();
  await page.locator('#state', { hasText: 'error: SSE connection failed' }).waitFor();
  page.errors.length = 0; // the hook logs that failure with console.error, as it should

  // Signed in on the hub's own page, the same component streams.
  await page.goto(hub.url);
  await page.locator('#api-key').fill(hub.adminKey);
  await page.locator('#api-key').press('Enter');
  await page.locator('dialog.signin').waitFor({ state: 'detached' });
  await page.goto(`${hub.url}${SEED_PAGES.useSSE}`);
  await page.evaluate(() => {
    window.__growth = [];
    new MutationObserver(() => {
      const text = document.querySelector('#answer').textContent;
      if (window.__growth.at(-1) !== text) window.__growth.push(text);
    }).observe(document.querySelector('#answer'), { subtree: true, childList: true, characterData: true });
  });
  const before = page.requests.length;
  await page.locator('#question').fill(question);
  await page.locator('#ask').click();
  await page.locator('#state', { hasText: 'done' }).waitFor({ timeout: 30000 });
  assert.equal(await page.locator('#answer').innerText(), expected.answer);
  const growth = await page.evaluate(() => window.__growth.filter((t) => t));
  assert.ok(growth.length >= 8, `the answer grew in ${growth.length} renders`);
  growth.forEach((t, i) => i && assert.ok(t.startsWith(growth[i - 1]), 'each render extends the text'));
  const streams = page.requests.slice(before).filter((u) => u.includes('/api/v1/ask/stream'));
  assert.equal(streams.length, 1, 'one EventSource request');
  assert.ok(!streams[0].includes('ticket=') && !streams[0].includes(hub.adminKey));
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("the seed's useWebSocket hook, unchanged, streams over SignalR with the session cookie and no token", async () => {
  const question = 'When did the Golden Gate Bridge open?';
  const expected = await hub.api('/api/v1/ask', { method: 'POST', body: { question, topK: 5 } });
  const page = await newPage(browser);
  // Not signed in: negotiate is refused and the hook reports it.
  await page.goto(`${hub.url}${SEED_PAGES.useWebSocket}`);
  await page.locator('#connected', { hasText: 'error' }).waitFor();
  page.errors.length = 0; // the client and the hook log that refusal with console.error

  await openSignedIn(page, hub, hub.adminKey);
  await page.goto(`${hub.url}${SEED_PAGES.useWebSocket}`);
  await page.locator('#connected').filter({ hasText: /^connected$/ }).waitFor();
  const before = page.requests.length;
  await page.locator('#question').fill(question);
  await page.locator('#ask').click();
  await page.locator('#state', { hasText: 'done' }).waitFor({ timeout: 30000 });
  assert.equal(await page.locator('#answer').innerText(), expected.answer);
  const { connections } = await hub.api('/api/v1/admin/connections');
  assert.equal(connections.filter((c) => c.protocol === 'signalr').length, 1, 'one SignalR connection');
  const urls = page.requests.slice(0, before).filter((u) => u.includes('/api/v1/chat/ws'));
  assert.ok(urls.some((u) => u.includes('/negotiate')), urls.join('\n'));
  assert.ok(!urls.some((u) => u.includes('access_token') || u.includes('ticket=') || u.includes(hub.adminKey)), urls.join('\n'));
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("the seed's StreamingChat, unchanged, shows an answer after a cookie sign-in", async () => {
  // The component reopens its EventSource on every render (see fixtures/UseSSEProbe.tsx), so
  // it can only finish an answer that arrives in one piece: this hub answers at once.
  instant = await new Hub({ pace: 0, maxStreamsPerUser: 50, env: { RAGSTREAM_STATIC_DIR: fixture.dir } }).start();
  await seed(instant);
  const question = 'How tall is the Eiffel Tower?';
  const expected = await instant.api('/api/v1/ask', { method: 'POST', body: { question, topK: 5 } });
  const page = await newPage(browser);
  await openSignedIn(page, instant, instant.adminKey);
  await page.goto(`${instant.url}${SEED_PAGES.streamingChat}`);
  await page.getByPlaceholder('Ask a question...').fill(question);
  await page.getByRole('button', { name: 'Ask' }).click();
  await page.getByRole('button', { name: 'Ask' }).waitFor({ timeout: 30000 }); // back from "Streaming..."
  const shown = await page.locator('.prose').innerText();
  assert.ok(shown.endsWith(expected.answer.trim()), `the answer is shown: ${shown}`);
  assert.equal(await page.getByText('Error:').count(), 0);
  assert.ok(!page.requests.some((u) => u.includes('ticket=') || u.includes(instant.adminKey)));
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

for (const [which, label] of [['sameSite', 'another port of the same host'], ['crossSite', 'another site']]) {
  test(`a page on ${label} cannot use the hub's cookie: no answer, no document, no WebSocket`, async () => {
    const page = await newPage(browser);
    await openSignedIn(page, hub, hub.adminKey);
    // The signed-in page itself can.
    assert.equal(await page.evaluate(async () => (await fetch('/api/v1/documents')).status), 200);

    const other = await page.context().newPage();
    await other.goto(elsewhere[which].url);
    const stats = await hub.stats();
    const results = await other.evaluate(async ({ base, ws, stream }) => {
      const out = {};
      const documents = await fetch(`${base}/api/v1/documents`, { credentials: 'include' });
      out.documents = [documents.status, await documents.text()];
      const answer = await fetch(`${base}/api/v1/ask`, {
        method: 'POST',
        credentials: 'include',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ question: 'How tall is the Eiffel Tower?' }),
      });
      out.answer = [answer.status, await answer.text()];
      // What a form or an <img> can send without CORS: the response is opaque, only the
      // hub's counters say whether anything started.
      await fetch(`${base}/api/v1/ask`, {
        method: 'POST', mode: 'no-cors', credentials: 'include', body: '{"question":"How tall is the Eiffel Tower?"}',
      });
      await fetch(`${base}${stream}`, { mode: 'no-cors', credentials: 'include' });
      out.eventSource = await new Promise((resolve) => {
        const es = new EventSource(`${base}${stream}`, { withCredentials: true });
        es.onopen = () => { es.close(); resolve('open'); };
        es.onerror = () => { es.close(); resolve('error'); };
      });
      out.webSocket = await new Promise((resolve) => {
        const socket = new WebSocket(`${ws}/api/v1/chat/ws`);
        socket.onopen = () => { socket.close(); resolve('open'); };
        socket.onclose = () => resolve('closed');
      });
      return out;
    }, { base: hub.url, ws: hub.url.replace(/^http/, 'ws'), stream: STREAM });

    // Another port of the same host is the same site: the cookie is sent and refused (403).
    // Another site never gets it (SameSite=Strict): 401.
    const refusal = which === 'sameSite' ? 403 : 401;
    assert.equal(results.documents[0], refusal, results.documents[1]);
    assert.ok(!results.documents[1].includes('Eiffel'), 'no document was read');
    assert.equal(results.answer[0], refusal, results.answer[1]);
    assert.equal(results.eventSource, 'error');
    assert.equal(results.webSocket, 'closed');
    const now = await hub.stats();
    assert.equal(now.admittedTotal, stats.admittedTotal, 'no answer was started');
    assert.equal(now.connections, 0, 'no connection was opened');
    await page.context().close();
  });
}

test('signing out ends the session for new EventSource and WebSocket connections', async () => {
  const page = await newPage(browser);
  await openSignedIn(page, hub, hub.adminKey);
  assert.equal(await probeEventSource(page, STREAM), 'open');
  assert.equal(await probeWebSocket(page, wsUrl('/api/v1/chat/ws')), 'open');
  const cookie = await sessionCookie(page);

  await page.locator('#signout').click();
  await page.locator('dialog.signin[open]').waitFor();
  assert.equal(await sessionCookie(page), undefined, 'the browser dropped the cookie');
  assert.equal(await probeEventSource(page, STREAM), 'error');
  assert.equal(await probeWebSocket(page, wsUrl('/api/v1/chat/ws')), 'closed');
  // Ended on the hub, not only in this browser: a copy of the old cookie opens nothing.
  await page.context().addCookies([cookie]);
  assert.equal(await page.evaluate(async () => (await fetch('/api/v1/session')).status), 401);
  assert.equal(await probeEventSource(page, STREAM), 'error');
  assert.equal(await probeWebSocket(page, wsUrl('/api/v1/chat/ws')), 'closed');
  await page.context().close();
});

test('revoking the key ends its session for new EventSource and WebSocket connections', async () => {
  const key = await hub.createKey('heidi');
  const page = await newPage(browser);
  await openSignedIn(page, hub, key.key);
  assert.equal(await probeEventSource(page, STREAM), 'open');
  assert.equal(await probeWebSocket(page, wsUrl('/api/v1/chat/ws')), 'open');

  await hub.api(`/api/v1/admin/keys/${key.id}`, { method: 'DELETE' });
  assert.equal(await probeEventSource(page, STREAM), 'error');
  assert.equal(await probeWebSocket(page, wsUrl('/api/v1/chat/ws')), 'closed');
  assert.equal(await page.evaluate(async () => (await fetch('/api/v1/session')).status), 401);
  // The page notices at its next request and asks for a key again.
  const turn = await ask(page, 'How tall is the Eiffel Tower?');
  await waitForState(turn, 'error');
  await page.locator('dialog.signin[open]').waitFor();
  await page.context().close();
});
