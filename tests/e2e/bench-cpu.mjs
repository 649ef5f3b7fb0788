// Benchmark: an ad on the CPU path in Chromium with WebGPU off (issue 30's browser half): the
// default model, COUNT ads in one page at SIZE² with STEPS steps (seeds 1, 2, …), the first cold
// (the wasm module's first run) and the rest warm; prints each ad's wall time and stages. The
// studio runs on the page here, as the page's worker would run it, on one thread with SIMD128.
//
//   scripts/build-web.sh && cd tests/e2e && node bench-cpu.mjs [SIZE] [STEPS] [COUNT]
//
// scripts/bench_browser_cpu.sh runs this beside the native CLI's CPU path at one thread.
// Record what it prints, with the machine and date, in BENCHMARKS.md.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO, DIST, WEBGPU_OFF, launch, startServer } from './harness.mjs';

const SIZE = Number(process.argv[2] || 256);
const STEPS = Number(process.argv[3] || 20);
const COUNT = Number(process.argv[4] || 3);
const PRODUCT = path.join(REPO, 'tests', 'fixtures', 'product_white.jpg');

const server = await startServer(DIST);
const b = await launch(WEBGPU_OFF);
try {
  const { page } = b;
  // A plain file of the same origin, not the app: the app would load its own studio alongside.
  await page.goto(`${server.url}www/style.css`, { waitUntil: 'load' });
  const browser = await page.evaluate(() => /Chrome\/[\d.]+/.exec(navigator.userAgent)?.[0] ?? navigator.userAgent);
  console.log(`machine: ${os.arch()}, ${os.cpus().length} cores, ${os.cpus()[0].model}; ` +
    `${browser} with WebGPU off; date: ${new Date().toISOString().slice(0, 10)}; ${COUNT} ads at ${SIZE}², ${STEPS} steps`);
  const photo = Array.from(fs.readFileSync(PRODUCT));
  const runs = await page.evaluate(async ({ photo, size, steps, count }) => {
    const wasm = await import(new URL('/pkg/adcanvas.js', document.baseURI).href);
    await wasm.default();
    const loadStarted = performance.now();
    const studio = await wasm.Studio.open(new URL('/models/default/', document.baseURI).href, { device: 'auto' });
    const info = studio.model_info();
    const load = performance.now() - loadStarted;
    await studio.prepare(new Uint8Array(photo));
    const out = [];
    for (let i = 0; i < count; i++) {
      const started = performance.now();
      const r = await studio.generate({ size, steps, seed: i + 1, prompt: 'on a marble counter, soft morning light' }, () => {});
      out.push({ ms: performance.now() - started, timings: Object.fromEntries(Object.entries(r.timings_ms)) });
    }
    return { device: info.device, note: info.device_note, load, ads: out };
  }, { photo, size: SIZE, steps: STEPS, count: COUNT });
  console.log(`device: ${runs.device} (${runs.note}); model load ${(runs.load / 1000).toFixed(2)} s`);
  runs.ads.forEach((ad, i) => {
    const stages = Object.entries(ad.timings).map(([k, v]) => `${k} ${(v / 1000).toFixed(2)}`).join(', ');
    console.log(`ad ${i + 1}${i === 0 ? ' (cold)' : ''}: ${(ad.ms / 1000).toFixed(2)} s (${stages})`);
  });
  if (runs.device !== 'cpu') throw new Error(`expected the CPU path, got ${runs.device}`);
} finally {
  await b.close();
  server.proc.kill();
}
