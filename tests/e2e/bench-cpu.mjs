// Benchmark: an ad on the CPU path in Chromium with WebGPU off (issue 30's browser half): the
// default model, COUNT ads in one page at SIZE² with STEPS steps (seeds 1, 2, …), the first cold
// (the wasm module's first run) and the rest warm; prints each ad's wall time and stages. WHERE:
// `page` (default) runs the studio on the page, on one thread with SIMD128; `worker` in the
// studio's worker without its helper (one core); `pair` in the worker with its helper, the two
// sharing each ad's guidance halves (two cores; www/studio-worker.js).
//
//   scripts/build-web.sh && cd tests/e2e && node bench-cpu.mjs [SIZE] [STEPS] [COUNT] [WHERE]
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
const WHERE = process.argv[5] || 'page';
if (!['page', 'worker', 'pair'].includes(WHERE)) throw new Error(`WHERE ${WHERE}: expected page, worker or pair`);
const PRODUCT = path.join(REPO, 'tests', 'fixtures', 'product_white.jpg');

const server = await startServer(DIST);
const b = await launch(WEBGPU_OFF);
try {
  const { page } = b;
  // A plain file of the same origin, not the app: the app would load its own studio alongside.
  await page.goto(`${server.url}www/style.css`, { waitUntil: 'load' });
  const browser = await page.evaluate(() => /Chrome\/[\d.]+/.exec(navigator.userAgent)?.[0] ?? navigator.userAgent);
  console.log(`machine: ${os.arch()}, ${os.cpus().length} cores, ${os.cpus()[0].model}; ` +
    `${browser} with WebGPU off; date: ${new Date().toISOString().slice(0, 10)}; ${COUNT} ads at ${SIZE}², ${STEPS} steps; ` +
    `studio on the ${WHERE === 'page' ? 'page' : WHERE === 'worker' ? 'worker, no helper' : 'worker with its helper'}`);
  const photo = Array.from(fs.readFileSync(PRODUCT));
  const runs = await page.evaluate(async ({ photo, size, steps, count, where }) => {
    let studio;
    const loadStarted = performance.now();
    if (where === 'page') {
      const wasm = await import(new URL('/pkg/adcanvas.js', document.baseURI).href);
      await wasm.default();
      const s = await wasm.Studio.open(new URL('/models/default/', document.baseURI).href, { device: 'auto' });
      studio = { info: s.model_info(), prepare: (b) => s.prepare(b), generate: (p) => s.generate(p, () => {}) };
    } else {
      const { startEngine } = await import(new URL('/www/studio.js', document.baseURI).href);
      const engine = await startEngine();
      const s = await engine.open('/models/default/', { device: 'auto', helper: where === 'pair' });
      studio = { info: s.info, prepare: (b) => s.prepare(b), generate: (p) => s.generate(p, () => {}) };
    }
    const info = studio.info;
    const load = performance.now() - loadStarted;
    await studio.prepare(new Uint8Array(photo));
    const out = [];
    for (let i = 0; i < count; i++) {
      const started = performance.now();
      const r = await studio.generate({ size, steps, seed: i + 1, prompt: 'on a marble counter, soft morning light' });
      out.push({ ms: performance.now() - started, timings: Object.fromEntries(Object.entries(r.timings_ms)) });
    }
    return { device: info.device, note: info.device_note, workers: info.workers ?? 1, load, ads: out };
  }, { photo, size: SIZE, steps: STEPS, count: COUNT, where: WHERE });
  console.log(`device: ${runs.device} (${runs.note}); workers: ${runs.workers}; model load ${(runs.load / 1000).toFixed(2)} s`);
  runs.ads.forEach((ad, i) => {
    const stages = Object.entries(ad.timings).map(([k, v]) => `${k} ${(v / 1000).toFixed(2)}`).join(', ');
    console.log(`ad ${i + 1}${i === 0 ? ' (cold)' : ''}: ${(ad.ms / 1000).toFixed(2)} s (${stages})`);
  });
  if (runs.device !== 'cpu') throw new Error(`expected the CPU path, got ${runs.device}`);
  if (runs.workers !== (WHERE === 'pair' ? 2 : 1)) throw new Error(`expected ${WHERE === 'pair' ? 2 : 1} workers, got ${runs.workers}`);
} finally {
  await b.close();
  server.proc.kill();
}
