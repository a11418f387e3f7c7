// The pages against the paginated document list: the admin page shows a page and a
// "Show more" button, a drop of more files than one upload may carry goes up in several,
// and the chat's welcome counts every document, not just the first page.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Hub } from './lib/hub.mjs';
import { launch, newPage, openSignedIn } from './lib/browser.mjs';

let hub;
let browser;

before(async () => {
  hub = await new Hub().start();
  for (let i = 0; i < 53; i += 1) {
    await hub.addDocument(`Note ${i}`, `# Note ${i}\n\nThe number of this note is ${i}.\n`);
  }
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await hub?.dispose();
});

test('the admin page lists a page of documents and shows more on request', async () => {
  const page = await newPage(browser);
  await openSignedIn(page, hub, hub.adminKey, '/admin');
  const rows = page.locator('#documents tbody tr[data-key]');
  const more = page.locator('#documents-more');
  await more.waitFor();
  assert.equal(await rows.count(), 50);
  assert.match(await more.innerText(), /Show more \(3 older\)/);

  await more.click();
  await more.waitFor({ state: 'hidden' });
  assert.equal(await rows.count(), 53);
  assert.ok(await page.locator('#documents tbody tr', { hasText: 'Note 0' }).isVisible());
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a drop of more files than one upload carries goes up in several uploads', async () => {
  const page = await newPage(browser);
  await openSignedIn(page, hub, hub.adminKey, '/admin');
  await page.locator('#documents tbody tr[data-key]').first().waitFor();
  const files = Array.from({ length: 23 }, (_, i) => ({ name: `dropped-${i}.md`, text: `# Dropped ${i}\n\nDropped file ${i}.\n` }));
  const dataTransfer = await page.evaluateHandle((list) => {
    const dt = new DataTransfer();
    for (const f of list) dt.items.add(new File([f.text], f.name, { type: 'text/markdown' }));
    return dt;
  }, files);
  for (const type of ['dragenter', 'dragover', 'drop']) {
    await page.dispatchEvent('#dropzone', type, { dataTransfer });
  }
  // One line per file, each done once its upload is.
  await page.waitForFunction(() => document.querySelectorAll('#uploads li[data-state="done"]').length === 23, null, { timeout: 20000 });
  assert.equal(await page.locator('#uploads li[data-state="error"]').count(), 0);
  const uploads = page.requests.filter((url) => url === `${hub.url}/api/v1/documents`);
  assert.equal(uploads.length, 2, 'two uploads: 20 files, then 3');
  const listed = await hub.api('/api/v1/documents?limit=1');
  assert.equal(listed.total, 53 + 23);
  await page.context().close();
});

test('the chat welcome counts every document of the tenant', async () => {
  const page = await newPage(browser);
  await openSignedIn(page, hub, hub.adminKey, '/');
  const { total } = await hub.api('/api/v1/documents?limit=1');
  await page.locator('#welcome', { hasText: 'documents loaded' }).waitFor();
  assert.match(await page.locator('#welcome').innerText(), new RegExp(`${total} documents loaded`));
  assert.equal(await page.locator('#suggestions li').count(), 4);
  await page.context().close();
});
