// The widget in a real browser, through the real proxy: the module runs, reads
// its token, the ChatHub EMULATOR validates it, the panel shows once, the
// page's own script and layout are unaffected, and each browser context gets
// its own session and token.

import assert from 'node:assert/strict';
import http from 'node:http';
import zlib from 'node:zlib';
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

test('the widget module runs, its token validates, one panel shows, the page is intact', { timeout: 120_000 }, () =>
  withCleanup(async (cleanups) => {
    const emulator = await startEmulator(cleanups);
    const origin = await startOrigin(cleanups, { ...STATIC, '/': htmlResponse(pageHtml()) });
    const proxy = await startProxy(cleanups, { emulator, origin });
    const browser = await launchBrowser(cleanups);

    // The page straight from the origin, for comparison.
    const direct = await newPage(browser);
    await direct.page.goto(origin.url + '/');
    const before = await widgetFacts(direct.page);
    assert.equal(before.tags, 0);
    assert.equal(before.ownScript, 'own script ran');

    const { page } = await newPage(browser);
    const resp = await page.goto(proxy.url + '/');
    assert.equal(resp.status(), 200);
    assert.equal(await resp.headerValue('x-chathub-inject'), 'injected');

    const panel = await panelStatus(page, 'ok');
    const facts = await widgetFacts(page);
    assert.equal(facts.tags, 1, 'exactly one widget tag');
    assert.equal(facts.panels, 1, 'exactly one panel');
    assert.ok(facts.token && facts.token.length > 20, `a real token: ${facts.token}`);
    assert.equal(panel.tokenSuffix, facts.token.slice(-6), 'the panel validated the token of its own tag');
    assert.match(await page.textContent('#chathub-panel'), /Operator: (Jane|Omar)/);
    assert.ok((await emulator.calls('/api/widget/validate')) >= 1, 'the emulator was asked');
    assert.ok((await emulator.calls('/operator-chat-panel/widget-script.js')) >= 1, 'the module was fetched');

    // The page's own script ran once, and its layout did not move.
    assert.equal(facts.ownScript, 'own script ran');
    assert.equal(await page.evaluate(() => window.__pageScript), 1);
    assert.deepEqual(facts.content, before.content);
    assert.deepEqual(facts.violations, []);
  }),
);

test('a second browser context gets its own session and token', { timeout: 120_000 }, () =>
  withCleanup(async (cleanups) => {
    const emulator = await startEmulator(cleanups);
    const origin = await startOrigin(cleanups, { ...STATIC, '/': htmlResponse(pageHtml()) });
    const proxy = await startProxy(cleanups, { emulator, origin });
    const browser = await launchBrowser(cleanups);

    const seen = [];
    for (let i = 0; i < 2; i++) {
      const { context, page } = await newPage(browser);
      await page.goto(proxy.url + '/');
      await panelStatus(page, 'ok');
      const facts = await widgetFacts(page);
      const cookies = await context.cookies(proxy.url);
      const session = cookies.find((c) => c.name === 'chathub_sid');
      assert.ok(session, `session cookie set: ${JSON.stringify(cookies.map((c) => c.name))}`);
      assert.equal(session.httpOnly, true);
      // Same context, second page load: same session, same token.
      await page.reload();
      await panelStatus(page, 'ok');
      assert.equal((await widgetFacts(page)).token, facts.token);
      seen.push({ session: session.value, token: facts.token });
    }
    assert.notEqual(seen[0].session, seen[1].session);
    assert.notEqual(seen[0].token, seen[1].token);
  }),
);

test('a gzip page reaches Chromium spliced: the origin\'s compressed bytes, the tag, all of the page', { timeout: 120_000 }, () =>
  withCleanup(async (cleanups) => {
    // Enough varied text for several deflate blocks, hidden so the layout holds.
    const rows = 3000;
    const filler = Array.from({ length: rows }, (_, i) => `<p>row ${i}: ${(i * 7919) % 10007} items</p>`).join('\n');
    const html = pageHtml().replace('</main>', `</main>\n<div hidden id="filler">${filler}</div>`);
    const gz = zlib.gzipSync(Buffer.from(html), { level: 9 });
    const emulator = await startEmulator(cleanups);
    const origin = await startOrigin(cleanups, { ...STATIC, '/': htmlResponse(gz, { 'content-encoding': 'gzip' }) });
    const proxy = await startProxy(cleanups, { emulator, origin });
    const browser = await launchBrowser(cleanups);

    const { page } = await newPage(browser);
    const resp = await page.goto(proxy.url + '/');
    assert.equal(resp.status(), 200);
    assert.equal(await resp.headerValue('x-chathub-inject'), 'injected');
    assert.equal(await resp.headerValue('content-encoding'), 'gzip');
    await panelStatus(page, 'ok');
    const facts = await widgetFacts(page);
    assert.equal(facts.tags, 1, 'exactly one widget tag');
    assert.equal(facts.ownScript, 'own script ran');
    assert.equal(await page.evaluate(() => document.querySelectorAll('#filler p').length), rows, 'the whole page arrived');
    // What went over the wire: the origin's compressed bytes up to the tag.
    // (node:http, not fetch, which would decode it.)
    const body = await new Promise((resolve, reject) => {
      http
        .get(proxy.url + '/', { headers: { 'accept-encoding': 'gzip' } }, (res) => {
          const parts = [];
          res.on('data', (d) => parts.push(d));
          res.on('end', () => resolve(Buffer.concat(parts)));
        })
        .on('error', reject);
    });
    assert.ok(body.length < gz.length + 1024, `${body.length} bytes for an origin body of ${gz.length}`);
    // The first half is the origin's own, but for one bit: at level 9 this
    // page is a single deflate block, the final one, and blocks now follow
    // it, so its BFINAL bit (the first bit after the 10-byte header) is clear.
    const half = (b) => Buffer.from(b.subarray(0, gz.length >> 1));
    const [ours, theirs] = [half(body), half(gz)];
    assert.equal(ours[10] | 1, theirs[10] | 1);
    ours[10] = theirs[10];
    assert.ok(ours.equals(theirs), 'the first half is the origin\'s own');
  }),
);
