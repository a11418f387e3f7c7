// The admin page against a real hub: 403 for a non-admin key, drag-and-drop upload that the
// chat then answers from, the live view of a running answer and the button that ends it,
// tenants and keys.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Hub, seed } from './lib/hub.mjs';
import {
  launch, newPage, openSignedIn, chooseTransport, ask, waitForState, screenshot, sleep, PHONE,
} from './lib/browser.mjs';

let hub;
let browser;

before(async () => {
  hub = await new Hub({ pace: 100 }).start();
  await seed(hub);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await hub?.dispose();
});

const PLATYPUS = `# Platypus field notes

The platypus is a semiaquatic, egg-laying mammal endemic to eastern Australia, including Tasmania.
Platypuses hunt underwater with their eyes closed, finding shrimp and insect larvae by electroreception in their bills.
A male platypus has a venomous spur on each hind foot.
`;

/** Drops files on the drop zone the way a browser does: dragenter, dragover, drop. */
async function dropFiles(page, selector, files) {
  const dataTransfer = await page.evaluateHandle((list) => {
    const dt = new DataTransfer();
    for (const f of list) dt.items.add(new File([f.text], f.name, { type: f.type }));
    return dt;
  }, files);
  for (const type of ['dragenter', 'dragover', 'drop']) {
    await page.dispatchEvent(selector, type, { dataTransfer });
  }
}

test('a non-admin key sees a plain 403 explanation', async () => {
  const key = await hub.createKey('erin');
  const page = await newPage(browser);
  await openSignedIn(page, hub, key.key, '/admin');
  const panel = page.locator('#forbidden');
  await panel.waitFor();
  assert.match(await panel.innerText(), /not an admin key/);
  assert.match(await panel.innerText(), /403 Forbidden/);
  assert.equal(await page.locator('#live').isVisible(), false);
  assert.equal(await page.locator('#documents-panel').isVisible(), false);
  await page.locator('#switch-key').click();
  await page.locator('dialog.signin[open]').waitFor();
  await page.context().close();
});

test('a document dropped on the admin page is uploaded, listed, and answers questions in the chat', async () => {
  const page = await newPage(browser);
  await openSignedIn(page, hub, hub.adminKey, '/admin');
  await page.locator('#documents tbody tr[data-key]').first().waitFor();
  const before = await page.locator('#documents tbody tr[data-key]').count();

  await dropFiles(page, '#dropzone', [
    { name: 'platypus.md', type: 'text/markdown', text: PLATYPUS },
    { name: 'notes.pdf', type: 'application/pdf', text: '%PDF-1.4' },
  ]);
  const done = page.locator('#uploads li[data-state="done"]');
  await done.waitFor({ timeout: 10000 });
  assert.match(await done.innerText(), /Added “platypus”/);
  assert.match(await page.locator('#uploads li[data-state="error"]').innerText(), /notes\.pdf: only \.md and \.txt/);
  await page.locator('#documents tbody tr', { hasText: 'platypus' }).waitFor();
  assert.equal(await page.locator('#documents tbody tr[data-key]').count(), before + 1);
  const listed = await hub.api('/api/v1/documents');
  assert.ok(listed.documents.some((d) => d.title === 'platypus'), 'the hub has the document');

  // The chat, in the same tab (same session), answers from it.
  await page.goto(`${hub.url}/`);
  await page.locator('#status[data-status="connected"]').waitFor();
  const turn = await ask(page, 'How do platypuses hunt underwater?');
  await waitForState(turn, 'done', 30000);
  assert.match(await turn.locator('.answer-body').innerText(), /electroreception/);
  assert.match(await turn.locator('.sources-list').innerText(), /platypus/);

  // Deleting it takes two clicks and removes it.
  await page.goto(`${hub.url}/admin`);
  const row = page.locator('#documents tbody tr', { hasText: 'platypus' });
  await row.waitFor();
  await row.locator('button', { hasText: 'Delete' }).click();
  await row.locator('button', { hasText: 'Really delete?' }).click();
  await row.waitFor({ state: 'detached' });
  assert.ok(!(await hub.api('/api/v1/documents')).documents.some((d) => d.title === 'platypus'));
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the live view shows a running answer, and End stops it with a message to its reader', async (t) => {
  const probe = await fetch(`${hub.url}/api/v1/admin/streams`, { headers: { 'X-API-Key': hub.adminKey } });
  if (probe.status === 404) {
    t.skip('this hub has no /api/v1/admin/streams (admin live view endpoints not built in)');
    return;
  }
  const admin = await newPage(browser);
  await openSignedIn(admin, hub, hub.adminKey, '/admin');
  await admin.locator('#status[data-feed="connected"]').waitFor({ timeout: 10000 });
  assert.equal(await admin.locator('#status').innerText(), 'Live');

  const reader = await newPage(browser);
  await openSignedIn(reader, hub, hub.adminKey);
  await chooseTransport(reader, 'ws');
  const turn = await ask(reader, 'Tell me about the construction, the height and the visiting levels of the Eiffel Tower');
  await turn.locator('.answer[data-state="streaming"]').waitFor();

  // Within a couple of seconds the live view shows it.
  const row = admin.locator('#streams tbody tr[data-key]');
  await row.first().waitFor({ timeout: 10000 });
  assert.match(await row.first().innerText(), /ws|websocket/i);
  await admin.locator('[data-card="streams"] .value', { hasText: '1' }).waitFor();
  assert.match(await admin.locator('[data-card="connections"]').innerText(), /1 WebSocket/);
  assert.match(await admin.locator('#by-tenant').innerText(), /default\s+1/);
  await screenshot(admin, 'admin-desktop', { fullPage: true });

  await row.first().locator('button', { hasText: 'End' }).click();
  await waitForState(turn, 'error', 10000);
  assert.match(await turn.locator('.notice').innerText(), /An administrator ended this answer/);
  await hub.waitForStats((s) => s.activeStreams === 0, { what: 'the ended stream to be released' });
  await admin.locator('#streams tbody tr.empty').waitFor({ timeout: 10000 });
  await sleep(1500);
  assert.match(await admin.locator('[data-card="answers"]').innerText(), /Answers/);
  assert.deepEqual(admin.errors, []);
  assert.deepEqual(reader.errors, []);
  await admin.context().close();
  await reader.context().close();
});

test('closing a connection from the admin page makes its chat page reconnect', async () => {
  const admin = await newPage(browser);
  await openSignedIn(admin, hub, hub.adminKey, '/admin');
  const reader = await newPage(browser);
  await openSignedIn(reader, hub, hub.adminKey);
  await chooseTransport(reader, 'ws');
  await reader.evaluate(() => {
    window.__statuses = [];
    new MutationObserver(() => window.__statuses.push(document.querySelector('#status').dataset.status))
      .observe(document.querySelector('#status'), { attributes: true, attributeFilter: ['data-status'] });
  });
  const row = admin.locator('#connections tbody tr[data-key]', { hasText: 'ws' });
  await row.waitFor({ timeout: 10000 });
  await row.locator('button', { hasText: 'Close' }).click();
  await reader.waitForFunction(() => window.__statuses.includes('reconnecting'), null, { timeout: 10000 });
  await reader.locator('#status[data-status="connected"]').waitFor({ timeout: 10000 });
  const turn = await ask(reader, 'When did the Golden Gate Bridge open?');
  await waitForState(turn, 'done', 30000);
  await admin.context().close();
  await reader.context().close();
});

test('tenants and keys: create a tenant, a key shown once, sign in with it, revoke it', async () => {
  const page = await newPage(browser);
  await openSignedIn(page, hub, hub.adminKey, '/admin');
  await page.locator('#tenant-name').fill('Acme Robotics');
  await page.locator('#tenant-name').press('Enter');
  await page.locator('#tenants tbody tr', { hasText: 'Acme Robotics' }).waitFor();
  assert.equal(await page.locator('#keys-tenant option:checked').innerText(), 'Acme Robotics');

  await page.locator('#key-name').fill('robot-1');
  await page.locator('#key-form button[type="submit"]').click();
  await page.locator('#new-secret').waitFor();
  const secret = await page.locator('#new-secret-value').inputValue();
  assert.match(secret, /^rsk_[0-9a-f]{64}$/);
  assert.match(await page.locator('#new-secret').innerText(), /shown only once/);
  const keyRow = page.locator('#keys tbody tr', { hasText: 'robot-1' });
  await keyRow.waitFor();
  assert.match(await keyRow.innerText(), /user/);
  await screenshot(page, 'admin-keys');
  await page.locator('#hide-secret').click();
  assert.equal(await page.locator('#new-secret').isVisible(), false);
  assert.equal(await page.locator('#new-secret-value').inputValue(), '', 'the key is gone from the page');

  // The new key works in the chat (its tenant has no documents yet).
  const chat = await newPage(browser);
  await openSignedIn(chat, hub, secret);
  assert.match(await chat.locator('#welcome').innerText(), /No documents are loaded for your tenant yet/);
  await chat.context().close();

  await keyRow.locator('button', { hasText: 'Revoke' }).click();
  await keyRow.locator('button', { hasText: 'Really revoke?' }).click();
  await page.locator('#keys tbody tr', { hasText: 'robot-1' }).locator('.badge.revoked').waitFor();
  const check = await fetch(`${hub.url}/api/v1/documents`, { headers: { 'X-API-Key': secret } });
  assert.equal(check.status, 401, 'the revoked key no longer works');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a tenant admin sees its own tenant only; the operator sees every tenant and may create tenants', async () => {
  const globex = await hub.api('/api/v1/admin/tenants', { method: 'POST', body: { name: 'Globex' } });
  const admin = await hub.createKey('globex-admin', { admin: true, tenantId: globex.id });
  await hub.createKey('globex-user', { tenantId: globex.id });

  const page = await newPage(browser);
  await openSignedIn(page, hub, admin.key, '/admin');
  await page.locator('#role', { hasText: 'admin · Globex' }).waitFor();
  await page.locator('#keys tbody tr', { hasText: 'globex-user' }).waitFor();
  assert.equal(await page.locator('#tenant-form').isVisible(), false, 'no tenant creation');
  assert.equal(await page.locator('#key-operator-label').isVisible(), false, 'no operator keys');
  assert.deepEqual(await page.locator('#tenants tbody tr[data-key]').allInnerTexts().then((rows) => rows.map((r) => r.split('\t')[0])), ['Globex']);
  assert.deepEqual(await page.locator('#keys-tenant option').allInnerTexts(), ['Globex']);
  assert.equal(await page.locator('#keys tbody tr', { hasText: 'bootstrap' }).count(), 0, 'no key of another tenant');

  // It administers its own tenant: a key made here belongs to Globex.
  await page.locator('#key-name').fill('globex-2');
  await page.locator('#key-form button[type="submit"]').click();
  await page.locator('#new-secret').waitFor();
  const listed = await hub.api(`/api/v1/admin/keys?tenantId=${globex.id}`);
  assert.ok(listed.keys.some((k) => k.name === 'globex-2'), 'the key is Globex\'s');
  await screenshot(page, 'admin-tenant-admin');
  assert.deepEqual(page.errors, []);
  await page.context().close();

  const operator = await newPage(browser);
  await openSignedIn(operator, hub, hub.adminKey, '/admin');
  await operator.locator('#role', { hasText: 'operator' }).waitFor();
  await operator.locator('#tenants tbody tr', { hasText: 'Globex' }).waitFor();
  assert.equal(await operator.locator('#tenant-form').isVisible(), true);
  assert.equal(await operator.locator('#key-operator-label').isVisible(), true);
  assert.ok((await operator.locator('#tenants tbody tr[data-key]').count()) >= 2, 'every tenant');
  await operator.context().close();
});

test('the admin page fits a phone screen', async () => {
  const page = await newPage(browser, { viewport: PHONE });
  await openSignedIn(page, hub, hub.adminKey, '/admin');
  await page.locator('#cards .card').first().waitFor();
  await sleep(1200);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling (overflow ${overflow}px)`);
  await screenshot(page, 'admin-phone');
  await screenshot(page, 'admin-phone-full', { fullPage: true });
  await page.context().close();
});
