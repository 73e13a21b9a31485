// Widget load failure: with inject.fallback_html configured, the contact block
// appears when the widget module cannot load (here: the widget URL answers
// 404), through the proxy's same-origin helper script, under a policy that
// allows no inline script at all.

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

const FALLBACK = '<p class="contact">Chat is unavailable right now. Call us: +1 555 0100</p>';

async function site(cleanups, widgetPath) {
  const emulator = await startEmulator(cleanups);
  const origin = await startOrigin(cleanups, {
    ...STATIC,
    '/': htmlResponse(pageHtml(), { 'content-security-policy': "default-src 'self'" }),
  });
  const proxy = await startProxy(cleanups, {
    emulator,
    origin,
    widgetUrl: emulator.url + widgetPath,
    inject: { fallback_html: FALLBACK },
  });
  const browser = await launchBrowser(cleanups);
  return { proxy, browser };
}

test('the fallback contact shows when the widget URL answers 404', { timeout: 120_000 }, () =>
  withCleanup(async (cleanups) => {
    const { proxy, browser } = await site(cleanups, '/operator-chat-panel/no-such-widget.js');
    const { page } = await newPage(browser);
    await page.goto(proxy.url + '/');
    const box = await page.waitForSelector('#chathub-fallback-contact', { state: 'visible', timeout: 15_000 });
    assert.equal(await box.getAttribute('data-reason'), 'widget_error');
    assert.equal((await box.textContent()).trim(), 'Chat is unavailable right now. Call us: +1 555 0100');
    const facts = await widgetFacts(page);
    assert.equal(facts.panels, 0);
    assert.equal(facts.ownScript, 'own script ran');
    assert.deepEqual(facts.violations, [], 'no inline script needed');
    assert.equal(await page.locator('#chathub-fallback-contact').count(), 1);
  }),
);

test('the fallback stays hidden when the widget loads', { timeout: 120_000 }, () =>
  withCleanup(async (cleanups) => {
    const { proxy, browser } = await site(cleanups, '/operator-chat-panel/widget-script.js');
    const { page } = await newPage(browser);
    await page.goto(proxy.url + '/');
    await panelStatus(page, 'ok');
    await page.waitForLoadState('load');
    assert.equal(await page.locator('#chathub-fallback-contact').count(), 0);
    // The template itself is inert and invisible.
    assert.equal(await page.locator('template#chathub-fallback').count(), 1);
  }),
);
