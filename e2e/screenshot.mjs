// Takes docs/demo.png: the built-in demo (`chathub-proxy demo`) in Chromium,
// with the ChatHub EMULATOR panel showing. Run by hand after a build:
//   node screenshot.mjs            (from e2e/)
// Not part of `node --test`.

import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { BIN, CHROMIUM_ARGS } from './lib/harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.resolve(here, '../docs/demo.png');

const demo = spawn(BIN, ['demo', '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
try {
  const url = await new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`demo did not start:\n${text}`)), 30_000);
    demo.stdout.on('data', (d) => {
      text += d;
      const m = text.match(/Open (http:\/\/127\.0\.0\.1:\d+\/)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    demo.on('exit', (c) => reject(new Error(`demo exited with ${c}:\n${text}`)));
  });
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(url);
    await page.waitForSelector('#chathub-panel[data-status="ok"]', { state: 'visible', timeout: 15_000 });
    mkdirSync(path.dirname(out), { recursive: true });
    await page.screenshot({ path: out });
    console.log(`wrote ${out}`);
  } finally {
    await browser.close();
  }
} finally {
  demo.kill('SIGTERM');
}
