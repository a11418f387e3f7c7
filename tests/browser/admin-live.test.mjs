// The admin page's live charts and upload progress against a real hub that takes a chart
// sample every second: the hub's recent history shows on a fresh page, the charts move after
// answers, a multi-megabyte upload (throttled through CDP) shows its bytes going out, then
// "chunking and indexing", then success; a file over the hub's limit shows why it was refused.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Hub, seed } from './lib/hub.mjs';
import { launch, newPage, openSignedIn, screenshot } from './lib/browser.mjs';

const MIB = 1024 * 1024;
let hub;
let browser;

before(async () => {
  hub = await new Hub({
    pace: 5,
    env: { RAGSTREAM_ADMIN_SAMPLE_SECS: '1', RAGSTREAM_MAX_DOCUMENT_BYTES: String(4 * MIB) },
  }).start();
  await seed(hub);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await hub?.dispose();
});

async function answer(question = 'How tall is the Eiffel Tower?') {
  const body = await hub.api('/api/v1/ask', { method: 'POST', body: { question } });
  assert.ok(body.answer, 'an answer');
}

/** The sum of a sample field over the hub's history. */
async function hubTotal(field) {
  const history = await hub.api('/api/v1/admin/history');
  return history.samples.reduce((a, s) => a + (Number(s[field]) || 0), 0);
}

async function waitFor(predicate, what, timeout = 15000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** data-* of one series' path in one chart. */
function series(page, chart, key) {
  return page.locator(`#charts [data-chart="${chart}"] path[data-series="${key}"]`);
}

test('a freshly opened admin page shows the last minutes at once, from the hub\'s history', async () => {
  await answer();
  await answer('When did the Golden Gate Bridge open?');
  await waitFor(async () => (await hubTotal('answers')) >= 2, 'the answers to be sampled');

  const page = await newPage(browser);
  await openSignedIn(page, hub, hub.adminKey, '/admin');
  const tokens = series(page, 'tokens', 'tokensPerSecond');
  await tokens.waitFor({ state: 'attached' });
  // The first feed event carries the history: the tokens of the answers made before the
  // page was opened are drawn without waiting for a live sample.
  await page.waitForFunction(() => {
    const path = document.querySelector('#charts [data-chart="tokens"] path[data-series="tokensPerSecond"]');
    return path && Number(path.dataset.sum) > 0 && /L/.test(path.getAttribute('d'));
  }, null, { timeout: 5000 });
  assert.ok(Number(await page.locator('#charts').getAttribute('data-samples')) >= 2);
  for (const [chart, key] of [['streams', 'streams'], ['ttft', 'ttftMsP50'], ['ttft', 'ttftMsP95'], ['errors', 'errorsPerMinute']]) {
    assert.match(await series(page, chart, key).getAttribute('d'), /^M/, `${chart} ${key} is drawn`);
  }
  assert.match(await page.locator('[data-chart="ttft"] figcaption').innerText(), /p50 .* · p95 /);
  assert.match(await page.locator('[data-chart="tokens"] svg title').textContent(), /last 3 minutes/, 'a second a sample: 180 samples are 3 minutes');
  assert.equal(await page.locator('#charts-title').innerText(), 'LAST 3 MINUTES');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the charts move after traffic', async () => {
  const page = await newPage(browser);
  await openSignedIn(page, hub, hub.adminKey, '/admin');
  await page.locator('#status[data-feed="connected"]').waitFor({ timeout: 10000 });
  const tokens = series(page, 'tokens', 'tokensPerSecond');
  await tokens.waitFor({ state: 'attached' });
  // Quiet for a sample first, so the answers below land in samples of their own.
  const quietFrom = await page.locator('[data-chart="tokens"] svg').getAttribute('data-last-seq');
  await page.waitForFunction((seq) => {
    const svg = document.querySelector('[data-chart="tokens"] svg');
    return svg.dataset.lastSeq && svg.dataset.lastSeq !== seq;
  }, quietFrom, { timeout: 10000 });
  const before = {
    sum: Number(await tokens.getAttribute('data-sum')),
    seq: Number(await page.locator('[data-chart="tokens"] svg').getAttribute('data-last-seq')),
  };

  for (let i = 0; i < 3; i += 1) await answer();
  // A live sample a second: the answers' tokens reach the chart without a reload.
  await page.waitForFunction((sum) => {
    const path = document.querySelector('#charts [data-chart="tokens"] path[data-series="tokensPerSecond"]');
    return Number(path.dataset.sum) > sum;
  }, before.sum, { timeout: 15000 });
  const after = Number(await page.locator('[data-chart="tokens"] svg').getAttribute('data-last-seq'));
  assert.ok(after > before.seq, 'a newer sample is drawn');
  // The samples after the quiet one: answers, so a first token and a peak of streams.
  const fresh = await page.evaluate((seq) => {
    const ttft = document.querySelector('[data-chart="ttft"] path[data-series="ttftMsP50"]');
    const streams = document.querySelector('[data-chart="streams"] path[data-series="streams"]');
    return { ttft: ttft.getAttribute('d'), streams: Number(streams.dataset.sum), seq };
  }, before.seq);
  assert.match(fresh.ttft, /^M/);
  assert.ok(fresh.streams > 0);
  assert.match(await page.locator('[data-chart="tokens"] .chart-now').innerText(), /\d/);
  await page.locator('#charts').scrollIntoViewIfNeeded();
  await screenshot(page, 'admin-charts-desktop');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the charts fit a phone screen', async () => {
  const page = await newPage(browser, { viewport: { width: 375, height: 780 } });
  await openSignedIn(page, hub, hub.adminKey, '/admin');
  await page.locator('#charts [data-chart="errors"] svg[data-samples]').waitFor();
  await page.waitForFunction(() => Number(document.querySelector('#charts').dataset.samples) > 0);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling (overflow ${overflow}px)`);
  const box = await page.locator('[data-chart="tokens"] svg').boundingBox();
  assert.ok(box.width > 250 && box.x >= 0 && box.x + box.width <= 375, `the chart fits: ${JSON.stringify(box)}`);
  // Axis labels stay legible: at least 7 CSS pixels tall once scaled.
  const label = await page.locator('[data-chart="tokens"] .grid text').first().boundingBox();
  assert.ok(label.height >= 7, `labels ${label.height}px tall`);
  await page.locator('#charts').scrollIntoViewIfNeeded();
  await screenshot(page, 'admin-charts-phone');
  await page.context().close();
});

/** Drops files the page makes itself (megabytes need not cross the protocol). */
async function dropGenerated(page, files) {
  const dataTransfer = await page.evaluateHandle((list) => {
    const dt = new DataTransfer();
    for (const f of list) {
      const line = 'The platypus hunts underwater with its eyes closed, by electroreception in its bill.\n';
      const text = `# ${f.title}\n\n${line.repeat(Math.ceil(f.bytes / line.length))}`.slice(0, f.bytes);
      dt.items.add(new File([text], f.name, { type: 'text/markdown' }));
    }
    return dt;
  }, files);
  for (const type of ['dragenter', 'dragover', 'drop']) {
    await page.dispatchEvent('#dropzone', type, { dataTransfer });
  }
}

/** Records every state and byte count each upload row shows. */
async function watchUploads(page) {
  await page.evaluate(() => {
    window.__uploads = {};
    const note = () => {
      for (const li of document.querySelectorAll('#uploads li.upload')) {
        const seen = (window.__uploads[li.dataset.file] ||= { states: [], sent: [], details: [] });
        if (seen.states.at(-1) !== li.dataset.state) seen.states.push(li.dataset.state);
        if (li.dataset.sent && seen.sent.at(-1) !== Number(li.dataset.sent)) seen.sent.push(Number(li.dataset.sent));
        const detail = li.querySelector('.detail').textContent;
        if (seen.details.at(-1) !== detail) seen.details.push(detail);
      }
    };
    new MutationObserver(note).observe(document.querySelector('#uploads'), { subtree: true, childList: true, attributes: true, characterData: true });
  });
}

test('a multi-megabyte upload shows its progress, then chunking and indexing, then success', async () => {
  const page = await newPage(browser);
  await openSignedIn(page, hub, hub.adminKey, '/admin');
  await page.locator('#documents tbody tr[data-key]').first().waitFor();
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  // 1 MiB/s up: the 3 MiB go out over about three seconds.
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: MIB,
  });
  await watchUploads(page);
  const size = 3 * MIB;
  await dropGenerated(page, [{ name: 'big-platypus.md', title: 'Big platypus', bytes: size }]);

  const row = page.locator('#uploads li.upload[data-file="big-platypus.md"]');
  await row.locator('.detail', { hasText: /^sending .* of 3\.0 MiB \(\d+%\)$/ }).waitFor({ timeout: 10000 });
  await page.locator('#uploads li.upload[data-state="indexing"]').waitFor({ timeout: 30000 });
  await row.and(page.locator('[data-state="done"]')).waitFor({ timeout: 60000 });
  assert.match(await row.innerText(), /Added “big-platypus” \([\d,]+ chunks\)/);
  const seen = await page.evaluate(() => window.__uploads['big-platypus.md']);
  assert.deepEqual(seen.states.filter((s) => s !== 'queued'), ['uploading', 'indexing', 'done']);
  const partial = seen.sent.filter((n) => n > 0 && n < size);
  assert.ok(partial.length >= 2, `the bytes sent grew in steps: ${JSON.stringify(seen.sent)}`);
  assert.ok(partial.every((n, i) => i === 0 || n >= partial[i - 1]), 'never backwards');
  assert.ok(seen.details.some((d) => /^chunking and indexing/.test(d)));
  await page.locator('#documents tbody tr', { hasText: 'big-platypus' }).waitFor();
  await page.locator('#uploads').scrollIntoViewIfNeeded();
  await screenshot(page, 'admin-upload-done');
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a file the hub refuses shows its own error, and the others of the drop are added', async () => {
  const page = await newPage(browser);
  await openSignedIn(page, hub, hub.adminKey, '/admin');
  await page.locator('#documents tbody tr[data-key]').first().waitFor();
  await watchUploads(page);
  await dropGenerated(page, [
    { name: 'small-a.md', title: 'Small A', bytes: 2000 },
    { name: 'too-big.md', title: 'Too big', bytes: 5 * MIB },
    { name: 'small-b.md', title: 'Small B', bytes: 3000 },
  ]);
  const refused = page.locator('#uploads li.upload[data-file="too-big.md"]');
  await refused.and(page.locator('[data-state="error"]')).waitFor({ timeout: 30000 });
  assert.equal(await refused.getAttribute('data-code'), 'payload_too_large');
  assert.match(await refused.innerText(), /too-big\.md\s+could not be uploaded: Too large \(413\): the body is over the limit of 4194304 bytes/);
  for (const name of ['small-a.md', 'small-b.md']) {
    await page.locator(`#uploads li.upload[data-file="${name}"][data-state="done"]`).waitFor({ timeout: 20000 });
  }
  const listed = await hub.api('/api/v1/documents?limit=200');
  const titles = listed.documents.map((d) => d.title);
  assert.ok(titles.includes('small-a') && titles.includes('small-b'), 'the small files were stored');
  assert.ok(!titles.includes('too-big'));
  await page.locator('#uploads').scrollIntoViewIfNeeded();
  await screenshot(page, 'admin-upload-refused');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('an upload of several files that one spoils is sent again file by file, so each gets its own verdict', async () => {
  const page = await newPage(browser);
  await openSignedIn(page, hub, hub.adminKey, '/admin');
  await page.locator('#documents tbody tr[data-key]').first().waitFor();
  const dataTransfer = await page.evaluateHandle(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['# Wombat\n\nWombats leave cube-shaped droppings.\n'], 'wombat.md', { type: 'text/markdown' }));
    // Not UTF-8: the hub refuses the whole upload (400 invalid_utf8).
    dt.items.add(new File([new Uint8Array([0x23, 0x20, 0xff, 0xfe, 0x0a])], 'latin.md', { type: 'text/markdown' }));
    return dt;
  });
  await page.evaluate(() => {
    window.__posts = 0;
    const open = XMLHttpRequest.prototype.open;
    XMLHttpRequest.prototype.open = function (method, ...rest) {
      if (method === 'POST') window.__posts += 1;
      return open.call(this, method, ...rest);
    };
  });
  for (const type of ['dragenter', 'dragover', 'drop']) {
    await page.dispatchEvent('#dropzone', type, { dataTransfer });
  }
  const bad = page.locator('#uploads li.upload[data-file="latin.md"][data-state="error"]');
  await bad.waitFor({ timeout: 20000 });
  assert.equal(await bad.getAttribute('data-code'), 'invalid_utf8');
  assert.match(await bad.innerText(), /could not be uploaded: the text is not valid UTF-8/);
  await page.locator('#uploads li.upload[data-file="wombat.md"][data-state="done"]').waitFor({ timeout: 20000 });
  assert.equal(await page.evaluate(() => window.__posts), 3, 'the pair, then each alone');
  assert.ok((await hub.api('/api/v1/documents?limit=200')).documents.some((d) => d.title === 'wombat'));
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
