// Shared pieces of the browser tests: the proxy binary and the ChatHub
// EMULATOR as child processes, small node http origins, and Debian's Chromium
// through playwright-core. Everything listens on 127.0.0.1 port 0; each test
// starts its own servers and stops them when it ends.

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));

/**
 * The proxy binary: $E2E_PROXY_BIN, else the debug build scripts/test makes.
 * (Not CHATHUB_PROXY_*: the proxy reads that prefix as configuration.)
 */
export const BIN = process.env.E2E_PROXY_BIN || path.resolve(here, '../../target/debug/chathub-proxy');

/** The environment for child processes: ours, minus any CHATHUB_PROXY_* config overrides. */
function childEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('CHATHUB_PROXY_')) env[k] = v;
  }
  return { ...env, ...extra };
}

/** The emulator's demo company password, passed the way real ones are: by environment. */
const PASSWORD_ENV = 'E2E_CHATHUB_PASSWORD';
const PASSWORD = 'demo-password';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
];

/** How long to wait for something the browser should do soon. */
export const SOON = 15_000;

/**
 * Run `fn` with a cleanup list; everything pushed onto it is stopped at the
 * end, in reverse order, whether the test passed or not.
 */
export async function withCleanup(fn) {
  const cleanups = [];
  try {
    return await fn(cleanups);
  } finally {
    for (const c of cleanups.reverse()) {
      try {
        await c();
      } catch {
        // already gone
      }
    }
  }
}

/** Spawn `args` and resolve with the first match of `pattern` in its `stream` output. */
function spawnAndWait(args, { stream, pattern, env, what }) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, args, {
      env: childEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let done = false;
    const timer = setTimeout(() => finish(new Error(`${what} did not start within 30 s:\n${out}`)), 30_000);
    function finish(err, value) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        child.kill('SIGKILL');
        reject(err);
      } else {
        resolve(value);
      }
    }
    const watch = (s) =>
      s.on('data', (d) => {
        out += d.toString();
        const m = out.match(pattern);
        if (m && s === child[stream]) finish(null, { child, match: m, output: () => out });
      });
    watch(child.stdout);
    watch(child.stderr);
    child.on('error', (e) => finish(e));
    child.on('exit', (code) => finish(new Error(`${what} exited with ${code}:\n${out}`)));
  });
}

function stopper(child) {
  return () =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      child.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      child.kill('SIGTERM');
    });
}

/** `chathub-proxy emulator --listen 127.0.0.1:0`; it prints its URL. */
export async function startEmulator(cleanups) {
  const { child, match } = await spawnAndWait(['emulator', '--listen', '127.0.0.1:0'], {
    stream: 'stdout',
    pattern: /on (http:\/\/127\.0\.0\.1:\d+)/,
    what: 'emulator',
  });
  const url = match[1];
  cleanups.push(stopper(child));
  return {
    url,
    widgetUrl: `${url}/operator-chat-panel/widget-script.js`,
    /** How many times the emulator answered `path`. */
    async calls(p) {
      const r = await fetch(`${url}/__emulator/calls`);
      const body = await r.json();
      return Number(body[p] ?? body.calls?.[p] ?? 0);
    },
  };
}

/**
 * A small origin. `pages` maps a path to a function `(req) => ({status, headers, body})`
 * or to such an object. Everything else is 404.
 */
export async function startOrigin(cleanups, pages) {
  const server = http.createServer((req, res) => {
    const p = new URL(req.url, 'http://x').pathname;
    const page = pages[p];
    if (!page) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
      return;
    }
    const { status = 200, headers = {}, body = '' } = typeof page === 'function' ? page(req) : page;
    res.writeHead(status, headers);
    res.end(body);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise((r) => {
        server.close(r);
        server.closeAllConnections(); // the proxy's pooled keep-alive connections
      }),
  );
  return { url: `http://127.0.0.1:${server.address().port}` };
}

function tomlString(s) {
  return JSON.stringify(s); // a TOML basic string is JSON-compatible for our inputs
}

/**
 * The proxy with a generated config: every host goes to `origin`, tokens come
 * from the emulator's demo company. `inject` and `token` add keys to those
 * sections; `csp` is the route's mode.
 */
export async function startProxy(cleanups, { emulator, origin, csp = 'auto', inject = {}, token = {}, widgetUrl }) {
  const dir = mkdtempSync(path.join(tmpdir(), 'chathub-e2e-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const kv = (o) =>
    Object.entries(o)
      .map(([k, v]) => `${k} = ${typeof v === 'string' ? tomlString(v) : JSON.stringify(v)}`)
      .join('\n');
  const config = `
default_route = "site"

[server]
listen = ["127.0.0.1:0"]
grace_period = "1s"

[admin]
listen = ""

[log]
format = "json"
filter = "info"

[inject]
widget_url = ${tomlString(widgetUrl ?? emulator.widgetUrl)}
debug_header = true
${kv(inject)}

[token]
budget = "10s"
${kv(token)}

[accounts.emu]
base_url = ${tomlString(emulator.url)}
login = "demo"
password_env = "${PASSWORD_ENV}"

[[routes]]
name = "site"
hosts = ["127.0.0.1", "localhost"]
upstream = ${tomlString(origin.url)}
account = "emu"
organization = "Customer Support"
operator = { rule = "first-active" }
csp = ${tomlString(csp)}
`;
  const file = path.join(dir, 'proxy.toml');
  writeFileSync(file, config);
  const { child, output } = await spawnAndWait(['run', '--config', file], {
    stream: 'stderr',
    pattern: /"message":"proxy listening"[^\n]*/,
    env: { [PASSWORD_ENV]: PASSWORD, RUST_LOG: 'info' },
    what: 'proxy',
  });
  const line = output().split('\n').find((l) => l.includes('proxy listening'));
  const addr = JSON.parse(line).addr;
  cleanups.push(stopper(child));
  return { url: `http://${addr}`, config, logs: output };
}

/** Debian's Chromium, headless. */
export async function launchBrowser(cleanups) {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
  cleanups.push(() => browser.close());
  return browser;
}

/** A fresh context and page that records CSP violations and console errors. */
export async function newPage(browser) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.addInitScript(() => {
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__violations.push({ directive: e.effectiveDirective, blocked: e.blockedURI, disposition: e.disposition });
    });
  });
  const console = [];
  page.on('console', (m) => console.push(`${m.type()}: ${m.text()}`));
  return { context, page, console };
}

export function nonce() {
  return randomBytes(12).toString('base64');
}

export function sha256(text) {
  return createHash('sha256').update(text).digest('base64');
}

/** The page's own script (external): it must keep working next to the widget. */
export const APP_JS = `
window.__pageScript = (window.__pageScript || 0) + 1;
document.addEventListener('DOMContentLoaded', function () {
  document.getElementById('own-script').textContent = 'own script ran';
});
`;

export const STYLE_CSS = `
body { margin: 0; font: 16px/1.4 sans-serif; }
#content { width: 600px; margin: 20px auto; padding: 10px; border: 2px solid #333; }
#content .col { display: inline-block; width: 280px; height: 120px; }
`;

/**
 * A test page. `head` goes into <head> before the page's script; `scriptAttrs`
 * onto the page's own <script src>; `inline` replaces the external script by an
 * inline one with that text.
 */
export function pageHtml({ head = '', scriptAttrs = '', inline } = {}) {
  const script = inline !== undefined ? `<script${scriptAttrs}>${inline}</script>` : `<script src="/static/app.js"${scriptAttrs}></script>`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
${head}
<title>E2E test page</title>
<link rel="stylesheet" href="/static/style.css">
${script}
</head>
<body>
<main id="content">
  <h1>Test page</h1>
  <p id="own-script">own script did not run</p>
  <div class="col" id="left">left</div><div class="col" id="right">right</div>
</main>
</body>
</html>
`;
}

/** The origin's static files, shared by every test site. */
export const STATIC = {
  '/static/app.js': { headers: { 'content-type': 'text/javascript; charset=utf-8' }, body: APP_JS },
  '/static/style.css': { headers: { 'content-type': 'text/css; charset=utf-8' }, body: STYLE_CSS },
};

/** A page response with optional CSP headers. */
export function htmlResponse(body, headers = {}) {
  return { headers: { 'content-type': 'text/html; charset=utf-8', ...headers }, body };
}

/** Wait for the widget panel to report `status`; returns its dataset. */
export async function panelStatus(page, status = 'ok', timeout = SOON) {
  const el = await page.waitForSelector(`#chathub-panel[data-status="${status}"]`, { state: 'visible', timeout });
  return el.evaluate((p) => ({ ...p.dataset }));
}

/** Facts about the widget on the page. */
export async function widgetFacts(page) {
  return page.evaluate(() => {
    const tags = document.querySelectorAll('script[id="operator-chat-panel-script"]');
    const panel = document.getElementById('chathub-panel');
    return {
      tags: tags.length,
      panels: document.querySelectorAll('#chathub-panel').length,
      token: tags[0] ? tags[0].getAttribute('token') : null,
      src: tags[0] ? tags[0].getAttribute('src') : null,
      status: panel ? panel.dataset.status : null,
      suffix: panel ? panel.dataset.tokenSuffix : null,
      ownScript: document.getElementById('own-script')?.textContent,
      violations: window.__violations || [],
      content: (() => {
        const r = document.getElementById('content')?.getBoundingClientRect();
        return r ? { x: r.x, y: r.y, w: r.width, h: r.height } : null;
      })(),
    };
  });
}
