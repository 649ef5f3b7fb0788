// Benchmark: the cut-out of a photo on a busy background in Chromium (issue 27): the default
// pack's cut-out network, on the CPU path (WebGPU off) and on WebGPU (?device=gpu: SwiftShader here),
// COUNT prepares of PHOTO in one page, the first cold; prints each one's wall time.
//
//   scripts/build-web.sh && cd tests/e2e && node bench-cutout.mjs PHOTO [COUNT]
//
// The native figure for the same photo: `adcanvas mask --product PHOTO --out m.png --device cpu`.
// Record what it prints, with the machine and date, in BENCHMARKS.md.

import fs from 'node:fs';
import os from 'node:os';
import { DIST, WEBGPU_OFF, WEBGPU_ON, launch, startServer } from './harness.mjs';

const PHOTO = process.argv[2];
const COUNT = Number(process.argv[3] || 3);
if (!PHOTO) throw new Error('usage: node bench-cutout.mjs PHOTO [COUNT]');

const server = await startServer(DIST);
try {
  for (const [flags, device] of [[WEBGPU_OFF, 'cpu'], [WEBGPU_ON, 'gpu']]) {
    const b = await launch(flags);
    try {
      const { page } = b;
      await page.goto(`${server.url}www/style.css`, { waitUntil: 'load' });
      const browser = await page.evaluate(() => /Chrome\/[\d.]+/.exec(navigator.userAgent)?.[0] ?? navigator.userAgent);
      const photo = Array.from(fs.readFileSync(PHOTO));
      const runs = await page.evaluate(async ({ photo, device, count }) => {
        const wasm = await import(new URL('/pkg/adcanvas.js', document.baseURI).href);
        await wasm.default();
        const studio = await wasm.Studio.open(new URL('/models/default/', document.baseURI).href, { device });
        const info = studio.model_info();
        const out = [];
        for (let i = 0; i < count; i++) {
          const started = performance.now();
          const prep = await studio.prepare(new Uint8Array(photo));
          out.push({ ms: performance.now() - started, source: prep.mask_source, width: prep.width, height: prep.height });
        }
        return { device: info.device, note: info.device_note, out };
      }, { photo, device, count: COUNT });
      console.log(`machine: ${os.arch()}, ${os.cpus().length} cores, ${os.cpus()[0].model}; ${browser}; ` +
        `date: ${new Date().toISOString().slice(0, 10)}; device ${runs.device}${runs.note ? ` (${runs.note})` : ''}`);
      runs.out.forEach((r, i) => console.log(`  prepare ${i + 1}${i === 0 ? ' (cold)' : ''}: ${(r.ms / 1000).toFixed(2)} s, ` +
        `${r.width}×${r.height}, mask from ${r.source}`));
    } finally {
      await b.close();
    }
  }
} finally {
  server.proc.kill();
}
