// Benchmark: what the page's warm-up (compiling an ad's GPU kernels while the seller picks a photo,
// `warmUp` in www/app.js) saves on the first ad. Two fresh browsers on WebGPU (SwiftShader here):
// one with `?warmup=off`, whose first ad compiles its kernels; one that waits for the warm-up to
// finish, as a seller choosing a photo would, before its first ad. Each then makes a second ad
// (another seed), whose kernels are compiled: the warm time. Prints one line each.
//
//   scripts/build-web.sh && cd tests/e2e && node bench-warm-up.mjs [SIZE] [STEPS] [off|on]
//
// Record what it prints, with the machine and date, in BENCHMARKS.md.

import os from 'node:os';
import path from 'node:path';
import { REPO, DIST, WEBGPU_ON, launch, startServer } from './harness.mjs';

const SIZE = process.argv[2] || '64';
const STEPS = process.argv[3] || '2';
const PRODUCT = path.join(REPO, 'tests', 'fixtures', 'product_alpha_32.png');
const PROMPT = 'a jar on a marble table';
const MODES = process.argv[4] ? [process.argv[4]] : ['off', 'on'];

const server = await startServer(DIST);
console.log(`machine: ${os.arch()}, ${os.cpus().length} cores, ${os.cpus()[0].model}; Chromium WebGPU on SwiftShader; ` +
  `date: ${new Date().toISOString().slice(0, 10)}; first ad at ${SIZE} px, ${STEPS} steps, prompt '${PROMPT}'`);
try {
  for (const warmUp of MODES) {
    const b = await launch(WEBGPU_ON);
    try {
      const { page } = b;
      // The form's settings as a returning seller's: the warm-up compiles for them.
      await page.addInitScript(({ size, steps, prompt }) => {
        localStorage.setItem('adcanvas.settings', JSON.stringify({ size, steps, prompt }));
      }, { size: SIZE, steps: STEPS, prompt: PROMPT });
      const started = Date.now();
      await page.goto(`${server.url}?device=gpu&warmup=${warmUp}`, { waitUntil: 'load' });
      await page.waitForFunction(() => ['ready', 'error'].includes(document.getElementById('status').dataset.state),
        null, { timeout: 600_000, polling: 250 });
      const loadSeconds = (Date.now() - started) / 1000;
      let warmed = 'off';
      if (warmUp === 'on') {
        await page.waitForFunction(() => ['done', 'stopped', 'failed'].includes(document.body.dataset.warmUp),
          null, { timeout: 1_200_000, polling: 500 });
        const ms = await page.evaluate(() => Number(document.body.dataset.warmUpMs || 0));
        warmed = `${await page.evaluate(() => document.body.dataset.warmUp)} after ${(ms / 1000).toFixed(1)} s`;
      }
      await page.setInputFiles('#file', PRODUCT);
      await page.waitForFunction(() => document.getElementById('status').dataset.state === 'ready', null, { timeout: 60_000 });
      const clicked = Date.now();
      await page.click('#generate');
      await page.waitForFunction(() => document.getElementById('result').dataset.ready === '1' ||
        document.getElementById('status').dataset.state === 'error', null, { timeout: 1_200_000, polling: 500 });
      const generateSeconds = (Date.now() - clicked) / 1000;
      const state = await page.evaluate(() => document.getElementById('status').dataset.state);
      // A second ad, another seed: its kernels are compiled and cached.
      await page.fill('#seed', '2');
      await page.locator('#status').evaluate((e) => { e.dataset.state = 'test-pending'; });
      const again = Date.now();
      await page.click('#generate');
      await page.waitForFunction(() => ['done', 'error'].includes(document.getElementById('status').dataset.state),
        null, { timeout: 1_200_000, polling: 250 });
      const secondSeconds = (Date.now() - again) / 1000;
      const secondState = await page.evaluate(() => document.getElementById('status').dataset.state);
      console.log(`warm-up ${warmUp}: load ${loadSeconds.toFixed(1)} s; warm-up ${warmed}; ` +
        `first ad ${generateSeconds.toFixed(1)} s (${state}); second ad ${secondSeconds.toFixed(1)} s (${secondState})`);
    } finally {
      await b.close();
    }
  }
} finally {
  server.proc.kill();
}
