// The CSP matrix in Chromium: for each page policy and route mode, either the
// widget runs (panel "ok", page intact, no policy weakened), or the page goes
// out exactly as the origin sent it. A negative control (csp = "off") shows the
// policy really would block the widget without the proxy's handling.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  STATIC,
  htmlResponse,
  launchBrowser,
  newPage,
  nonce,
  pageHtml,
  panelStatus,
  sha256,
  startEmulator,
  startOrigin,
  startProxy,
  widgetFacts,
  withCleanup,
} from '../lib/harness.mjs';

const OWN_INLINE = "document.addEventListener('DOMContentLoaded',function(){document.getElementById('own-script').textContent='own script ran'});";

/** Start emulator, an origin serving `page()` at `/`, the proxy in `mode`, and a browser. */
async function site(cleanups, page, mode = 'auto') {
  const emulator = await startEmulator(cleanups);
  const origin = await startOrigin(cleanups, { ...STATIC, '/': page });
  const proxy = await startProxy(cleanups, { emulator, origin, csp: mode });
  const browser = await launchBrowser(cleanups);
  return { emulator, origin, proxy, browser };
}

/** The widget ran under the page's policy, and the page's own script too. */
async function assertWidgetRuns(page, { allowReportOnly = false } = {}) {
  const panel = await panelStatus(page, 'ok');
  const facts = await widgetFacts(page);
  assert.equal(facts.tags, 1);
  assert.equal(facts.panels, 1);
  assert.equal(panel.tokenSuffix, facts.token.slice(-6));
  assert.equal(facts.ownScript, 'own script ran');
  const enforced = facts.violations.filter((v) => v.disposition === 'enforce');
  assert.deepEqual(enforced, [], 'no enforced CSP violation');
  if (!allowReportOnly) assert.deepEqual(facts.violations, []);
  return facts;
}

/** The served policies, one string per header line. */
async function policies(resp, name = 'content-security-policy') {
  return (await resp.headersArray()).filter((h) => h.name.toLowerCase() === name).map((h) => h.value);
}

function assertNotWeakened(before, after) {
  for (const kw of ["'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'"]) {
    assert.equal(after.includes(kw), before.includes(kw), `${kw}: ${before} → ${after}`);
  }
  assert.equal(after.split('*').length, before.split('*').length, `no wildcard added: ${after}`);
}

test('no CSP: the widget runs', { timeout: 120_000 }, () =>
  withCleanup(async (cleanups) => {
    const { proxy, browser } = await site(cleanups, htmlResponse(pageHtml()));
    const { page } = await newPage(browser);
    const resp = await page.goto(proxy.url + '/');
    assert.deepEqual(await policies(resp), []);
    await assertWidgetRuns(page);
  }),
);

test("script-src 'self': the proxy adds the widget origin and the widget runs", { timeout: 120_000 }, () =>
  withCleanup(async (cleanups) => {
    const policy = "script-src 'self'; style-src 'self'; object-src 'none'";
    const { proxy, browser, emulator } = await site(cleanups, htmlResponse(pageHtml(), { 'content-security-policy': policy }));
    const { page } = await newPage(browser);
    const resp = await page.goto(proxy.url + '/');
    const [served] = await policies(resp);
    assert.equal(served, `script-src 'self' ${emulator.url}; style-src 'self'; object-src 'none'`);
    assertNotWeakened(policy, served);
    await assertWidgetRuns(page);
  }),
);

test("'nonce-…' 'strict-dynamic': the tag carries the page's nonce", { timeout: 120_000 }, () =>
  withCleanup(async (cleanups) => {
    let last = '';
    const page = () => {
      last = nonce();
      return htmlResponse(pageHtml({ scriptAttrs: ` nonce="${last}"` }), {
        'content-security-policy': `script-src 'nonce-${last}' 'strict-dynamic'; object-src 'none'; base-uri 'none'`,
      });
    };
    const { proxy, browser } = await site(cleanups, page);
    const { page: tab } = await newPage(browser);
    const resp = await tab.goto(proxy.url + '/');
    // The policy is served exactly as the origin wrote it.
    assert.deepEqual(await policies(resp), [`script-src 'nonce-${last}' 'strict-dynamic'; object-src 'none'; base-uri 'none'`]);
    await assertWidgetRuns(tab);
    // Browsers hide the nonce attribute after parsing; the property keeps it.
    assert.equal(await tab.evaluate(() => document.getElementById('operator-chat-panel-script').nonce), last);
  }),
);

test('a <meta> policy with nonces: the tag takes the nonce of the page\'s own script', { timeout: 120_000 }, () =>
  withCleanup(async (cleanups) => {
    let last = '';
    const page = () => {
      last = nonce();
      const meta = `<meta http-equiv="Content-Security-Policy" content="script-src 'nonce-${last}' 'strict-dynamic'; object-src 'none'">`;
      return htmlResponse(pageHtml({ head: meta, scriptAttrs: ` nonce="${last}"` }));
    };
    const { proxy, browser } = await site(cleanups, page);
    const { page: tab } = await newPage(browser);
    await tab.goto(proxy.url + '/');
    await assertWidgetRuns(tab);
    assert.equal(await tab.evaluate(() => document.getElementById('operator-chat-panel-script').nonce), last);
  }),
);

test('a <meta> policy without nonces: the page is served without the widget', { timeout: 120_000 }, () =>
  withCleanup(async (cleanups) => {
    const meta = `<meta http-equiv="Content-Security-Policy" content="script-src 'self'">`;
    const body = pageHtml({ head: meta });
    const { proxy, browser } = await site(cleanups, htmlResponse(body));
    const { page } = await newPage(browser);
    await page.goto(proxy.url + '/', { waitUntil: 'load' });
    const facts = await widgetFacts(page);
    assert.equal(facts.tags, 0, 'no widget tag');
    assert.equal(facts.ownScript, 'own script ran');
    assert.deepEqual(facts.violations, []);
    // Byte for byte what the origin sent.
    const r = await fetch(proxy.url + '/', { headers: { accept: 'text/html', 'sec-fetch-dest': 'document' } });
    assert.equal(await r.text(), body);
  }),
);

test('hash-only policy: page intact, skipped with reason csp', { timeout: 120_000 }, () =>
  withCleanup(async (cleanups) => {
    const policy = `script-src 'sha256-${sha256(OWN_INLINE)}'`;
    const body = pageHtml({ inline: OWN_INLINE });
    const { proxy, browser } = await site(cleanups, htmlResponse(body, { 'content-security-policy': policy }));
    const { page } = await newPage(browser);
    const resp = await page.goto(proxy.url + '/', { waitUntil: 'load' });
    assert.equal(await resp.headerValue('x-chathub-inject'), 'skipped; reason=csp');
    assert.deepEqual(await policies(resp), [policy]);
    assert.equal(await resp.text(), body);
    const facts = await widgetFacts(page);
    assert.equal(facts.tags, 0);
    assert.equal(facts.ownScript, 'own script ran');
    assert.deepEqual(facts.violations, []);
  }),
);

test('report-only policy: left alone, the widget runs', { timeout: 120_000 }, () =>
  withCleanup(async (cleanups) => {
    const policy = "script-src 'self'; report-uri /csp-report";
    const { proxy, browser } = await site(cleanups, htmlResponse(pageHtml(), { 'content-security-policy-report-only': policy }));
    const { page } = await newPage(browser);
    const resp = await page.goto(proxy.url + '/');
    assert.deepEqual(await policies(resp, 'content-security-policy-report-only'), [policy]);
    assert.deepEqual(await policies(resp), []);
    await assertWidgetRuns(page, { allowReportOnly: true });
  }),
);

test('csp = "amend": default-src only gets script-src and connect-src with the widget origin', { timeout: 120_000 }, () =>
  withCleanup(async (cleanups) => {
    const policy = "default-src 'self'";
    const { proxy, browser, emulator } = await site(cleanups, htmlResponse(pageHtml(), { 'content-security-policy': policy }), 'amend');
    const { page } = await newPage(browser);
    const resp = await page.goto(proxy.url + '/');
    const [served] = await policies(resp);
    const ws = emulator.url.replace('http://', 'ws://');
    assert.equal(served, `default-src 'self'; script-src 'self' ${emulator.url}; connect-src 'self' ${emulator.url} ${ws}`);
    assertNotWeakened(policy, served);
    await assertWidgetRuns(page);
  }),
);

test('csp = "nonce" with a nonce policy: the widget runs', { timeout: 120_000 }, () =>
  withCleanup(async (cleanups) => {
    const page = () => {
      const n = nonce();
      return htmlResponse(pageHtml({ scriptAttrs: ` nonce="${n}"` }), {
        'content-security-policy': `script-src 'nonce-${n}'; object-src 'none'`,
      });
    };
    const { proxy, browser } = await site(cleanups, page, 'nonce');
    const { page: tab } = await newPage(browser);
    await tab.goto(proxy.url + '/');
    await assertWidgetRuns(tab);
  }),
);

test('negative control: with csp = "off" the same policy blocks the widget', { timeout: 120_000 }, () =>
  withCleanup(async (cleanups) => {
    const policy = "script-src 'self'";
    const { proxy, browser } = await site(cleanups, htmlResponse(pageHtml(), { 'content-security-policy': policy }), 'off');
    const { page } = await newPage(browser);
    const resp = await page.goto(proxy.url + '/');
    assert.equal(await resp.headerValue('x-chathub-inject'), 'injected');
    assert.deepEqual(await policies(resp), [policy]);
    // The browser refuses the widget module: a violation, and no panel ever.
    await page.waitForFunction(
      () => window.__violations.some((v) => v.blocked.includes('/operator-chat-panel/widget-script.js')),
      null,
      { timeout: 15_000 },
    );
    await page.waitForLoadState('load');
    const facts = await widgetFacts(page);
    assert.equal(facts.tags, 1, 'the tag is there');
    assert.equal(facts.panels, 0, 'but the widget never ran');
    assert.equal(facts.ownScript, 'own script ran');
  }),
);
