// Benchmark: what a first visit downloads. A fresh Chromium profile opens the studio (on the CPU,
// which needs no adapter) and waits until the model is loaded; every response that came over the
// network (not from the service worker's cache) is counted at its size on the wire, as
// scripts/serve.py sent it (Brotli or gzip where build-web.sh left a compressed copy).
// Prints one line a file and the totals.
//
//   scripts/build-web.sh [--bundle] && cd tests/e2e && node bench-first-visit.mjs
//
// Record what it prints, with the machine and date, in BENCHMARKS.md.

import os from 'node:os';
import { DIST, WEBGPU_OFF, launch, startServer } from './harness.mjs';

const server = await startServer(DIST);
console.log(`machine: ${os.arch()}, ${os.cpus().length} cores; date: ${new Date().toISOString().slice(0, 10)}; dist: ${DIST}`);
const b = await launch(WEBGPU_OFF);
try {
  const { page, context } = b;
  const responses = [];
  context.on('response', (r) => responses.push(r));
  await page.goto(`${server.url}?device=cpu&warmup=off`, { waitUntil: 'load' });
  await page.waitForFunction(() => ['ready', 'error'].includes(document.getElementById('status').dataset.state),
    null, { timeout: 900_000, polling: 250 });
  const state = await page.evaluate(() => document.getElementById('status').dataset.state);
  if (state !== 'ready') throw new Error(`the studio did not load: ${await page.locator('#status').innerText()}`);
  const rows = [];
  for (const r of responses.filter((r) => !r.fromServiceWorker() && r.url().startsWith('http'))) {
    // What came over the wire (encoded); a revalidation answered from the HTTP cache carries none.
    const { responseBodySize } = await r.request().sizes();
    if (responseBodySize <= 0) continue;
    const url = new URL(r.url());
    rows.push({ path: url.pathname, bytes: responseBodySize, encoding: (await r.headerValue('content-encoding')) || '-' });
  }
  const part = (row) => (row.path.endsWith('.wasm') ? 'wasm' : row.path.includes('/models/') ? 'model' : 'page');
  const totals = { wasm: 0, page: 0, model: 0 };
  for (const row of rows.sort((a, b) => b.bytes - a.bytes)) {
    totals[part(row)] += row.bytes;
    console.log(`${(row.bytes / 1e6).toFixed(3).padStart(8)} MB  ${row.encoding.padEnd(5)} ${row.path}`);
  }
  const mb = (n) => `${(n / 1e6).toFixed(2)} MB`;
  console.log(`wasm ${mb(totals.wasm)}, page ${mb(totals.page)}, model pack ${mb(totals.model)}; ` +
    `first visit ${mb(totals.wasm + totals.page + totals.model)} in ${rows.length} responses`);
} finally {
  await b.close();
  server.proc.kill();
}
