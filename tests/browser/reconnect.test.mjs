// The hub dies and comes back on the same port and database: the page says so
// (reconnecting → connected), backs off, stays signed in (the session is in the database),
// asks an interrupted question again, and new questions work.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Hub, seed } from './lib/hub.mjs';
import { launch, newPage, openSignedIn, chooseTransport, ask, waitForState, sleep } from './lib/browser.mjs';

let hub;
let browser;

before(async () => {
  hub = await new Hub({ pace: 60 }).start();
  await seed(hub);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await hub?.dispose();
});

/** Every status the pill shows, in order, recorded inside the page. */
async function recordStatus(page) {
  await page.evaluate(() => {
    window.__statuses = [document.querySelector('#status').dataset.status];
    new MutationObserver(() => {
      const s = document.querySelector('#status').dataset.status;
      if (window.__statuses.at(-1) !== s) window.__statuses.push(s);
    }).observe(document.querySelector('#status'), { attributes: true, attributeFilter: ['data-status'] });
  });
}

for (const kind of ['sse', 'ws']) {
  test(`the ${kind === 'sse' ? 'SSE' : 'WebSocket'} client reconnects after the hub restarts`, async () => {
    const page = await newPage(browser);
    await openSignedIn(page, hub, hub.adminKey);
    await chooseTransport(page, kind);
    const first = await ask(page, 'When did the Golden Gate Bridge open?');
    await waitForState(first, 'done');
    await recordStatus(page);

    // Crash the hub while idle: the page notices (WS at once, SSE by its probe).
    await hub.stop('SIGKILL');
    await page.locator('#status[data-status="reconnecting"]').waitFor({ timeout: 12000 });
    assert.match(await page.locator('#status').innerText(), /Reconnecting/);
    await sleep(2500); // a few backoff rounds against a dead port
    await hub.start();
    await page.locator('#status[data-status="connected"]').waitFor({ timeout: 20000 });
    const statuses = await page.evaluate(() => window.__statuses);
    assert.deepEqual(statuses.slice(0, 1), ['connected']);
    assert.ok(statuses.includes('reconnecting'), `went through reconnecting: ${statuses}`);
    assert.equal(statuses.at(-1), 'connected');

    const second = await ask(page, 'How tall is the Eiffel Tower?');
    await waitForState(second, 'done');
    assert.match(await second.locator('.answer-body').innerText(), /330 metres/);

    // Crash it mid-answer: the answer says so, and is asked again once the hub is back.
    const third = await ask(page, 'Tell me about the construction, the height and the visiting levels of the Eiffel Tower');
    await third.locator('.answer[data-state="streaming"]').waitFor();
    await sleep(300);
    await hub.stop('SIGKILL');
    await third.locator('.answer[data-state="interrupted"]').waitFor({ timeout: 12000 });
    assert.match(await third.locator('.notice').innerText(), /Connection lost/);
    await hub.start();
    await waitForState(third, 'done', 30000);
    assert.match(await third.locator('.answer-body').innerText(), /330 metres/);
    assert.equal(await third.locator('.notice').isVisible(), false, 'the notice is gone once the answer is back');

    // The session cookie carried every reconnect: no ticket in any URL.
    assert.ok(!page.requests.some((u) => u.includes('ticket=')), 'no ticket in a URL');
    await page.context().close();
  });
}

test('the status shows offline when the browser goes offline, and recovers', async () => {
  const page = await newPage(browser);
  await openSignedIn(page, hub, hub.adminKey);
  await chooseTransport(page, 'ws');
  await page.context().setOffline(true);
  await page.locator('#status[data-status="offline"]').waitFor({ timeout: 10000 });
  assert.match(await page.locator('#status').innerText(), /Offline/);
  await page.context().setOffline(false);
  await page.locator('#status[data-status="connected"]').waitFor({ timeout: 20000 });
  const turn = await ask(page, 'What colour is the Golden Gate Bridge painted?');
  await waitForState(turn, 'done');
  await page.context().close();
});
