// A document full of markup is quoted back by the answer: it must show as text, run nothing,
// and fetch nothing. The page's CSP would block an inline handler anyway, so the test also
// checks what CSP does not stop: an <img> element would request /x (img-src 'self').

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Hub } from './lib/hub.mjs';
import { launch, newPage, openSignedIn, chooseTransport, ask, waitForState, screenshot, sleep } from './lib/browser.mjs';

let hub;
let browser;

const HOSTILE = `# Zebrafish markup notes

The zebrafish markup sample quotes <img src=x onerror="window.__pwned=1;alert(1)"> inside its zebrafish sentence about the hostile image tag and keeps going for a while

The zebrafish script sample quotes <script>window.__pwned=2;alert(2)</script> inside its zebrafish sentence about the hostile script tag and keeps going for a while

The zebrafish picture sample quotes ![zebrafish diagram](x) and a [zebrafish link](javascript:alert(3)) inside its zebrafish sentence about markdown images and links

The zebrafish emphasis sample quotes hostile **bold zebrafish text** and \`inline zebrafish code\` inside its zebrafish sentence about formatting that should still render
`;

before(async () => {
  hub = await new Hub({ pace: 5 }).start();
  await hub.addDocument('Zebrafish <b>markup</b> notes', HOSTILE);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await hub?.dispose();
});

for (const kind of ['sse', 'ws', 'json']) {
  test(`markup quoted back by an answer renders inert (${kind})`, async () => {
    const page = await newPage(browser);
    await openSignedIn(page, hub, hub.adminKey);
    await chooseTransport(page, kind);
    const turn = await ask(page, 'What do the zebrafish samples quote about hostile image, script and markdown tags?');
    await waitForState(turn, 'done');
    await sleep(300);
    const body = turn.locator('.answer-body');
    const text = await body.innerText();

    // The markup is there, as text a person can read.
    assert.ok(text.includes('<img src=x onerror='), `the img tag shows as text: ${text}`);
    assert.ok(text.includes('<script>window.__pwned=2;alert(2)</script>'), 'the script tag shows as text');
    // ...and never as elements.
    const elements = await page.evaluate(() => ({
      img: document.querySelectorAll('#conversation img').length,
      script: document.querySelectorAll('#conversation script').length,
      handlers: [...document.querySelectorAll('#conversation *')].filter((e) => [...e.attributes].some((a) => a.name.startsWith('on'))).length,
      jsLinks: [...document.querySelectorAll('#conversation a[href]')].filter((a) => /^\s*javascript:/i.test(a.getAttribute('href'))).length,
      pwned: window.__pwned,
    }));
    assert.deepEqual(elements, { img: 0, script: 0, handlers: 0, jsLinks: 0, pwned: undefined });
    assert.deepEqual(page.dialogs, [], 'no alert() ran');
    // A Markdown image became a link to read, not a request.
    assert.ok(await body.locator('a.image-link').count() >= 1, 'markdown images become links');
    // Nothing asked for /x: neither the raw <img> nor the Markdown image.
    const toX = page.requests.filter((u) => new URL(u).pathname === '/x');
    assert.deepEqual(toX, [], 'no request to /x');
    // Markdown that is not HTML still renders.
    assert.ok(await body.locator('strong').count() >= 1, 'bold renders');
    assert.ok(await body.locator('code').count() >= 1, 'inline code renders');
    // The source title and passage are shown as text too.
    const sources = turn.locator('.sources-list');
    assert.ok((await sources.innerText()).includes('Zebrafish <b>markup</b> notes'), 'the title is text');
    assert.equal(await sources.locator('b, img, script').count(), 0);
    assert.deepEqual(page.errors, []);
    if (kind === 'sse') await screenshot(page, 'chat-xss-inert');
    await page.context().close();
  });
}
