// Benchmark: how long the page's main thread is held while the studio loads and makes its first
// ad, with the studio in its worker (the default) and on the page itself (`?studio=page`).
// Chromium's long tasks (main-thread tasks over 50 ms) are summed over each phase; a page whose
// main thread is held cannot scroll, type or repaint. Prints one line per mode and phase.
//
//   scripts/build-web.sh && cd tests/e2e && node bench-main-thread.mjs [SIZE] [STEPS]
//
// Record what it prints, with the machine and date, in BENCHMARKS.md.

import os from 'node:os';
import path from 'node:path';
import { REPO, DIST, WEBGPU_ON, launch, startServer } from './harness.mjs';

const SIZE = process.argv[2] || '64';
const STEPS = process.argv[3] || '2';
const PRODUCT = path.join(REPO, 'tests', 'fixtures', 'product_alpha_32.png');

function summary(tasks) {
  const total = tasks.reduce((a, t) => a + t, 0);
  const longest = tasks.reduce((a, t) => Math.max(a, t), 0);
  return `long tasks ${tasks.length}, held ${(total / 1000).toFixed(1)} s in all, longest ${(longest / 1000).toFixed(2)} s`;
}

const server = await startServer(DIST);
console.log(`machine: ${os.arch()}, ${os.cpus().length} cores, ${os.cpus()[0].model}; Chromium WebGPU on SwiftShader; ` +
  `date: ${new Date().toISOString().slice(0, 10)}; first ad at ${SIZE} px, ${STEPS} steps`);
try {
  for (const mode of ['worker', 'page']) {
    const b = await launch(WEBGPU_ON);
    try {
      const { page } = b;
      await page.addInitScript(() => {
        window.__longTasks = [];
        new PerformanceObserver((list) => {
          for (const e of list.getEntries()) window.__longTasks.push(e.duration);
        }).observe({ type: 'longtask', buffered: true });
      });
      const started = Date.now();
      await page.goto(`${server.url}?studio=${mode}&device=gpu`, { waitUntil: 'load' });
      await page.waitForFunction(() => ['ready', 'error'].includes(document.getElementById('status').dataset.state),
        null, { timeout: 600_000, polling: 250 });
      const loadSeconds = (Date.now() - started) / 1000;
      const runsIn = await page.evaluate(() => document.body.dataset.studio);
      const load = await page.evaluate(() => window.__longTasks.splice(0));
      await page.setInputFiles('#file', PRODUCT);
      await page.waitForFunction(() => document.getElementById('status').dataset.state === 'ready', null, { timeout: 60_000 });
      await page.evaluate(({ size, steps }) => {
        document.getElementById('size').value = size;
        document.getElementById('steps').value = steps;
        window.__longTasks.length = 0;
        // From inside the page: with the studio on the page, Playwright's click would wait on
        // the held main thread.
        setTimeout(() => document.getElementById('generate').click(), 0);
      }, { size: SIZE, steps: STEPS });
      const clicked = Date.now();
      await page.waitForFunction(() => document.getElementById('result').dataset.ready === '1' ||
        document.getElementById('status').dataset.state === 'error', null, { timeout: 1_200_000, polling: 500 });
      const generateSeconds = (Date.now() - clicked) / 1000;
      const generate = await page.evaluate(() => window.__longTasks.slice());
      console.log(`studio in ${runsIn}: load ${loadSeconds.toFixed(1)} s (${summary(load)}); ` +
        `first ad ${generateSeconds.toFixed(1)} s (${summary(generate)})`);
    } finally {
      await b.close();
    }
  }
} finally {
  server.proc.kill();
}
