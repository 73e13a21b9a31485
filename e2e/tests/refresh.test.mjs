// Token refresh on a page left open: with a 40 s token the proxy's helper
// script fetches a fresh token from inject.token_path before the old one runs
// out and swaps the widget tag; the panel validates the new token without the
// page reloading, and there is still exactly one widget tag and one panel.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  STATIC,
  htmlResponse,
  launchBrowser,
  newPage,
  pageHtml,
  panelStatus,
  startEmulator,
  startOrigin,
  startProxy,
  widgetFacts,
  withCleanup,
} from '../lib/harness.mjs';

test('the panel gets a fresh token before the old one expires, without a reload', { timeout: 180_000 }, () =>
  withCleanup(async (cleanups) => {
    const emulator = await startEmulator(cleanups);
    const policy = "default-src 'self'";
    const origin = await startOrigin(cleanups, {
      ...STATIC,
      '/': htmlResponse(pageHtml(), { 'content-security-policy': policy }),
    });
    const proxy = await startProxy(cleanups, {
      emulator,
      origin,
      inject: { refresh_helper: true },
      // Short-lived tokens; the cache renews in the last 20 s and never hands
      // out one with less than 5 s left.
      token: { lifetime: '40s', refresh_ahead: '20s', safety_margin: '5s' },
    });
    const browser = await launchBrowser(cleanups);
    const { page } = await newPage(browser);
    await page.goto(proxy.url + '/');
    const first = await panelStatus(page, 'ok');
    const before = await widgetFacts(page);
    assert.equal(first.tokenSuffix, before.token.slice(-6));
    const helper = await page.$eval('#chathub-proxy-helper', (s) => ({ ...s.dataset }));
    assert.ok(Date.parse(helper.expiresAt) > Date.now(), `expiry handed to the helper: ${helper.expiresAt}`);
    assert.equal(helper.tokenPath, '/api/chathub/token');
    await page.evaluate(() => {
      window.__samePage = true;
    });

    // Wait (up to well past the first token's life) for the panel to show a new token.
    await page.waitForFunction(
      (old) => {
        const p = document.getElementById('chathub-panel');
        return p && p.dataset.status === 'ok' && p.dataset.tokenSuffix && p.dataset.tokenSuffix !== old;
      },
      first.tokenSuffix,
      { timeout: 120_000, polling: 500 },
    );
    const after = await widgetFacts(page);
    assert.notEqual(after.token, before.token);
    assert.equal(after.suffix, after.token.slice(-6), 'the panel validated the new tag\'s token');
    assert.equal(after.tags, 1, 'still exactly one widget tag');
    assert.equal(after.panels, 1, 'still exactly one panel');
    assert.match(after.src, /[?&]v=\d+$/, 'the new tag has a cache-busting src');
    assert.equal(await page.evaluate(() => window.__samePage), true, 'no reload');
    assert.equal(await page.evaluate(() => window.__pageScript), 1, "the page's own script ran once");
    assert.deepEqual(after.violations, []);
  }),
);
