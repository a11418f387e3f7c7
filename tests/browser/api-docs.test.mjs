// The API description page (/api/docs): it renders every operation of /api/openapi.json under
// the pages' strict Content-Security-Policy, with no violation and no script error.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Hub } from './lib/hub.mjs';
import { launch, newPage, screenshot } from './lib/browser.mjs';

let hub;
let browser;

before(async () => {
  hub = await new Hub().start();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await hub?.dispose();
});

test('the docs page lists every operation of the description with no CSP violation', async () => {
  const page = await newPage(browser);
  await page.addInitScript(() => {
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  const res = await page.goto(`${hub.url}/api/docs`);
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-security-policy'], /script-src 'self'/);
  await page.locator('body[data-ready="true"]').waitFor({ timeout: 15000 });

  const doc = await (await fetch(`${hub.url}/api/openapi.json`)).json();
  const expected = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of ['get', 'post', 'put', 'patch', 'delete']) {
      if (item[method]) expected.push(`${method} ${path}`);
    }
  }
  const shown = await page.$$eval('article.operation', (cards) => cards.map((c) => `${c.dataset.method} ${c.dataset.path}`));
  assert.deepEqual(shown.slice().sort(), expected.slice().sort());
  assert.ok(shown.length > 40, `${shown.length} operations`);

  // An operation shows its summary and its error shape; the SSE event schemas are listed.
  const ask = page.locator('article.operation[data-method="get"][data-path="/api/v1/ask/stream"]');
  await assert.doesNotReject(ask.getByText('text/event-stream').first().waitFor());
  await assert.doesNotReject(ask.getByRole('link', { name: 'ErrorEnvelope' }).first().waitFor());
  for (const name of ['SseEvent', 'SseToken', 'SseDone', 'SseError', 'SseSources', 'SseConversation']) {
    assert.equal(await page.locator(`#schema-${name}`).count(), 1, name);
  }

  await screenshot(page, 'api-docs', { fullPage: false });
  assert.deepEqual(await page.evaluate(() => window.__violations), []);
  assert.deepEqual(page.errors, []);
  // Nothing but the hub itself was asked for anything.
  const foreign = page.requests.filter((u) => !u.startsWith(hub.url));
  assert.deepEqual(foreign, []);
});
