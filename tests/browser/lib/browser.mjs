// Debian's chromium driven by playwright-core (which never downloads a browser here).

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './hub.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const OUTPUT = join(REPO, 'test-output', 'browser');

export const DESKTOP = { width: 1280, height: 860 };
export const PHONE = { width: 390, height: 780 };

/** A fresh headless chromium (playwright gives it a new temporary user-data-dir). */
export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * A page in its own context (own localStorage and sessionStorage) that records page errors,
 * console errors, and every request, so tests can assert none went where they should not.
 */
export async function newPage(browser, { viewport = DESKTOP } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.errors = [];
  page.requests = [];
  page.dialogs = [];
  page.on('pageerror', (e) => page.errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) page.errors.push(`console: ${m.text()}`);
  });
  page.on('request', (r) => page.requests.push(r.url()));
  page.on('websocket', (ws) => page.requests.push(ws.url()));
  page.on('dialog', (d) => {
    page.dialogs.push(`${d.type()}: ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  return page;
}

export async function screenshot(page, name, { fullPage = false } = {}) {
  mkdirSync(OUTPUT, { recursive: true });
  const path = join(OUTPUT, `${name}.png`);
  await page.screenshot({ path, fullPage });
  return path;
}

/** Opens a page of the hub and signs in with a key through the sign-in dialog. */
export async function openSignedIn(page, hub, key, path = '/') {
  await page.goto(`${hub.url}${path}`);
  await page.locator('#api-key').fill(key);
  await page.locator('dialog.signin button[type="submit"]').click();
  await page.locator('dialog.signin').waitFor({ state: 'detached' });
}

export async function chooseTransport(page, kind) {
  await page.locator(`label[for="transport-${kind}"]`).click();
  await page.locator('#status[data-status="connected"]').waitFor({ timeout: 15000 });
}

/** Types a question and presses Enter; returns a locator for the new answer. */
export async function ask(page, question) {
  const before = await page.locator('article.turn').count();
  await page.locator('#question').fill(question);
  await page.locator('#question').press('Enter');
  const turn = page.locator('article.turn').nth(before);
  await turn.waitFor();
  return turn;
}

export async function waitForState(turn, state, timeout = 20000) {
  await turn.locator(`.answer[data-state="${state}"]`).waitFor({ timeout });
}

/** Records the answer text of the last turn after every DOM change, until it is done. */
export async function recordGrowth(page) {
  await page.evaluate(() => {
    window.__growth = [];
    const observer = new MutationObserver(() => {
      const body = document.querySelector('article.turn:last-of-type .answer-body');
      const answer = document.querySelector('article.turn:last-of-type .answer');
      if (!body || !answer) return;
      const text = body.textContent;
      const last = window.__growth[window.__growth.length - 1];
      if (!last || last.text !== text || last.state !== answer.dataset.state) {
        window.__growth.push({ text, state: answer.dataset.state, at: performance.now() });
      }
    });
    observer.observe(document.querySelector('#conversation'), { subtree: true, childList: true, characterData: true, attributes: true });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
