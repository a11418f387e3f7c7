// The admin page's usage view against a real hub: answers made over JSON and SSE show in
// the table with the output tokens their `done` metadata said, the table sorts by a column,
// the CSV download holds the same rows, budgets show this month's use, a tenant admin sees
// its tenant only, and the view fits 375 px.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { Hub, seed } from './lib/hub.mjs';
import { launch, newPage, openSignedIn, screenshot, sleep } from './lib/browser.mjs';

let hub;
let browser;
let globex;
const keys = {};
/** Output tokens per key id, summed from the `done` metadata of its answers. */
const expected = new Map();

/** An answer over `POST /api/v1/ask`; returns its `done` metadata. */
async function askJson(key, question) {
  const res = await fetch(`${hub.url}/api/v1/ask`, {
    method: 'POST',
    headers: { 'X-API-Key': key, 'Content-Type': 'application/json' },
    body: JSON.stringify({ question, topK: 3 }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()).metadata;
}

/** An answer over SSE; returns the metadata of its final `done` frame. */
async function askSse(key, question) {
  const res = await fetch(`${hub.url}/api/v1/ask/stream?question=${encodeURIComponent(question)}&topK=3`, {
    headers: { 'X-API-Key': key, Accept: 'text/event-stream' },
  });
  assert.equal(res.status, 200);
  const text = await res.text();
  for (const line of text.split('\n')) {
    if (!line.startsWith('data:')) continue;
    let frame;
    try {
      frame = JSON.parse(line.slice(5));
    } catch {
      continue;
    }
    if (frame.done) {
      assert.ok(frame.metadata && !frame.error, `the SSE answer ended with done: ${line}`);
      return frame.metadata;
    }
  }
  throw new Error(`no done frame in ${text.slice(-500)}`);
}

function count(key, metadata) {
  assert.ok(Number.isInteger(metadata.tokens) && metadata.tokens > 0, JSON.stringify(metadata));
  expected.set(key.id, (expected.get(key.id) || 0) + metadata.tokens);
}

before(async () => {
  hub = await new Hub({ pace: 2 }).start();
  await seed(hub);
  browser = await launch();
  globex = await hub.api('/api/v1/admin/tenants', { method: 'POST', body: { name: 'Globex' } });
  keys.ursula = await hub.createKey('ursula');
  keys.victor = await hub.createKey('victor');
  keys.gina = await hub.createKey('gina', { tenantId: globex.id });
  keys.globexAdmin = await hub.createKey('globex-admin', { admin: true, tenantId: globex.id });
});

after(async () => {
  await browser?.close();
  await hub?.dispose();
});

/** The usage table's rows as {key, tenant, outputTokens, cells} (from the cells' data). */
function usageRows(page) {
  return page.locator('#usage tbody tr[data-key]').evaluateAll((trs) => trs.map((tr) => {
    const cell = (field) => tr.querySelector(`td[data-field="${field}"]`);
    return {
      tenantId: cell('tenantId')?.dataset.value,
      keyId: cell('keyId')?.dataset.value,
      keyName: cell('keyId')?.textContent,
      outputTokens: Number(cell('outputTokens')?.dataset.value),
      answers: Number(cell('answers')?.dataset.value),
      shownOutput: cell('outputTokens')?.textContent,
    };
  }));
}

/** Polls the DOM until the table's output tokens per key are `want` (a Map of key id → n). */
// The page asks for a report at most every 10 s by itself (each one sums the range's records).
async function waitForTokens(page, want, { timeout = 30000 } = {}) {
  const deadline = Date.now() + timeout;
  let rows = [];
  for (;;) {
    rows = await usageRows(page);
    const got = new Map(rows.filter((r) => want.has(r.keyId)).map((r) => [r.keyId, r.outputTokens]));
    if ([...want].every(([id, n]) => got.get(id) === n)) return rows;
    if (Date.now() > deadline) {
      throw new Error(`the usage table did not show ${JSON.stringify([...want])}; it shows ${JSON.stringify(rows)}`);
    }
    await sleep(200);
  }
}

/** RFC 4180 enough for the hub's CSV (no field here holds a quote or a comma). */
function parseCsv(text) {
  const lines = text.split('\r\n').filter(Boolean);
  const header = lines[0].split(',');
  return lines.slice(1).map((line) => Object.fromEntries(line.split(',').map((v, i) => [header[i], v])));
}

test('answers made while the page is open show in the usage table with their done metadata\'s output tokens; sorting; CSV; budgets', async () => {
  const page = await newPage(browser);
  await openSignedIn(page, hub, hub.adminKey, '/admin');
  await page.locator('#usage-panel').waitFor();
  await page.locator('#usage-status[data-state="ok"]').waitFor();
  assert.equal(await page.locator('#usage-tenant-label').isVisible(), true, 'an operator may pick a tenant');
  const today = new Date().toISOString().slice(0, 10);
  assert.equal(await page.locator('#usage-from').inputValue(), `${today.slice(0, 8)}01`, 'this month by default');
  assert.equal(await page.locator('#usage-to').inputValue(), today);

  // Made now, while the page is open: the table follows them without a reload.
  count(keys.ursula, await askJson(keys.ursula.key, 'How tall is the Eiffel Tower?'));
  count(keys.ursula, await askJson(keys.ursula.key, 'When did construction of the tower begin?'));
  count(keys.victor, await askSse(keys.victor.key, 'Who was the chief engineer of the Golden Gate Bridge?'));
  count(keys.gina, await askJson(keys.gina.key, 'What colour is the Golden Gate Bridge?'));

  const rows = await waitForTokens(page, expected);
  const ursula = rows.find((r) => r.keyId === keys.ursula.id);
  assert.equal(ursula.answers, 2);
  assert.equal(ursula.keyName, 'ursula', 'keys are shown by name');
  assert.equal(ursula.shownOutput.replace(/\D/g, ''), String(expected.get(keys.ursula.id)));
  assert.equal(rows.find((r) => r.keyId === keys.gina.id).tenantId, globex.id);
  const total = [...expected.values()].reduce((a, b) => a + b, 0);
  assert.equal(Number(await page.locator('#usage tfoot td[data-field="outputTokens"]').getAttribute('data-value')), total);

  // Output tokens, largest first by default; a click reverses the order.
  const outputs = (list) => list.map((r) => r.outputTokens);
  const before = outputs(rows);
  assert.ok(new Set(before).size >= 2, `distinct counts to sort: ${before}`);
  assert.deepEqual(before, [...before].sort((a, b) => b - a));
  await page.locator('#usage th[data-field="outputTokens"] button').click();
  await page.locator('#usage th[data-field="outputTokens"][aria-sort="ascending"]').waitFor();
  const after = outputs(await usageRows(page));
  assert.deepEqual(after, [...before].sort((a, b) => a - b));
  assert.notDeepEqual(after, before);
  // By key name, A first.
  await page.locator('#usage th[data-field="keyId"] button').click();
  await page.locator('#usage th[data-field="keyId"][aria-sort="ascending"]').waitFor();
  const names = (await usageRows(page)).map((r) => r.keyName);
  assert.deepEqual(names, [...names].sort((a, b) => a.localeCompare(b)));
  assert.equal(await page.locator('#usage th[data-field="outputTokens"]').getAttribute('aria-sort'), null);

  // Grouped by model too: the form's choice is the report's and the download's.
  await page.locator('input[name="group"][value="model"]').check();
  await page.locator('#usage th[data-field="model"]').waitFor();
  const csvHref = await page.locator('#usage-csv').getAttribute('href');
  assert.match(csvHref, /groupBy=tenant%2Ckey%2Cmodel/);
  assert.match(csvHref, /format=csv/);
  await waitForTokens(page, expected);
  const tableRows = await usageRows(page);

  // The link downloads with the session cookie alone.
  const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#usage-csv').click()]);
  assert.match(download.suggestedFilename(), /^ragstream-usage-\d{4}-\d{2}-\d{2}-\d{4}-\d{2}-\d{2}\.csv$/);
  const csv = parseCsv(await readFile(await download.path(), 'utf8'));
  const key = (r) => `${r.tenantId}|${r.keyId}|${r.outputTokens}|${r.answers}`;
  assert.deepEqual(csv.map(key).sort(), tableRows.map(key).sort(), 'the CSV has the table\'s rows');
  assert.ok(csv.every((r) => r.model), 'and the model column');

  // A key's budget beside this month's use.
  await hub.api(`/api/v1/admin/keys/${keys.ursula.id}`, { method: 'PATCH', body: { monthlyOutputTokenBudget: 100000 } });
  await page.locator('#usage-form button[type="submit"]').click();
  const budget = page.locator(`#budget-list li[data-kind="key"][data-id="${keys.ursula.id}"]`);
  await budget.waitFor({ timeout: 10000 });
  assert.equal(Number(await budget.getAttribute('data-used')), expected.get(keys.ursula.id));
  assert.match(await budget.innerText(), /ursula/);
  assert.match(await budget.innerText(), /100,000/);

  await page.locator('#usage-panel').scrollIntoViewIfNeeded();
  await screenshot(page, 'admin-usage');

  // Signed out, the page keeps no report for the next key to see.
  await page.locator('#signout').click();
  await page.locator('dialog.signin[open]').waitFor();
  assert.equal(await page.locator('#usage tbody tr, #budget-list li').count(), 0);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a tenant admin\'s usage view shows its own tenant only', async () => {
  // Whatever else ran, gina has an answer of its own here.
  if (!expected.has(keys.gina.id)) count(keys.gina, await askJson(keys.gina.key, 'How long is the main span?'));
  const page = await newPage(browser);
  await openSignedIn(page, hub, keys.globexAdmin.key, '/admin');
  await page.locator('#role', { hasText: 'admin · Globex' }).waitFor();
  const rows = await waitForTokens(page, new Map([[keys.gina.id, expected.get(keys.gina.id)]]));
  assert.ok(rows.length >= 1);
  assert.deepEqual([...new Set(rows.map((r) => r.tenantId))], [globex.id], 'no other tenant\'s rows');
  assert.ok(!rows.some((r) => r.keyId === keys.ursula.id || r.keyId === keys.victor.id));
  assert.equal(await page.locator('#usage-tenant-label').isVisible(), false, 'no tenant choice');
  // Its CSV is scoped the same; asking for another tenant's is a 404.
  const href = await page.locator('#usage-csv').getAttribute('href');
  const csv = parseCsv(await page.evaluate(async (url) => (await fetch(url)).text(), href));
  assert.ok(csv.length >= 1 && csv.every((r) => r.tenantId === globex.id), JSON.stringify(csv));
  const other = await page.evaluate(async (url) => (await fetch(url)).status, `${href}&tenantId=default`);
  assert.equal(other, 404, 'another tenant\'s report is not found');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the usage view fits 375 px: the table scrolls inside its box, the page does not', async () => {
  const page = await newPage(browser, { viewport: { width: 375, height: 780 } });
  await openSignedIn(page, hub, hub.adminKey, '/admin');
  await page.locator('#usage tbody tr[data-key]').first().waitFor({ timeout: 20000 });
  await page.locator('#usage-panel').scrollIntoViewIfNeeded();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal page scrolling (overflow ${overflow}px)`);
  const wrap = await page.locator('#usage-panel .table-wrap').evaluate((node) => {
    const box = node.getBoundingClientRect();
    return { left: box.left, right: box.right, scrollWidth: node.scrollWidth, clientWidth: node.clientWidth };
  });
  assert.ok(wrap.left >= 0 && wrap.right <= 375, `the table's box fits: ${JSON.stringify(wrap)}`);
  assert.ok(wrap.scrollWidth > wrap.clientWidth, 'the wide table scrolls inside it');
  for (const sel of ['#usage-from', '#usage-to', '#usage-csv']) {
    const box = await page.locator(sel).boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= 375, `${sel} fits: ${JSON.stringify(box)}`);
  }
  await screenshot(page, 'admin-usage-phone');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
