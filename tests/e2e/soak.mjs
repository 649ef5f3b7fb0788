// The soak test of issue 21: COUNT ads in a row in one page (64², one step, a new seed each), with
// the memory the page, the studio's wasm module and the whole browser hold sampled every 20 ads.
// Passes when, after the first 20 ads (caches, kernels and the allocator's pools filled), the
// wasm module's memory does not grow at all, the page's JS heap grows by under 16 MB and the
// browser's resident memory by under 160 MB. Figures go to docs/RELIABILITY.md.
//
//   cd tests/e2e && ADCANVAS_DIST=DIST node soak.mjs [COUNT=200] [DEVICE=gpu|cpu]

import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { DIST, REPO, WEBGPU_ON, launch, startServer } from './harness.mjs';

const COUNT = Number(process.argv[2] || 200);
const DEVICE = process.argv[3] || 'gpu';
const MB = 1 << 20;

/** Resident memory of every process of this browser (its profile folder is on their command lines). */
function browserRss(userDataDir) {
  const ps = execFileSync('ps', ['-eo', 'pid=,ppid=,rss=,args='], { encoding: 'utf8' });
  const procs = ps.trim().split('\n').map((l) => {
    const [pid, ppid, rss, ...args] = l.trim().split(/\s+/);
    return { pid: Number(pid), ppid: Number(ppid), rss: Number(rss) * 1024, args: args.join(' ') };
  });
  const roots = new Set(procs.filter((p) => p.args.includes(userDataDir)).map((p) => p.pid));
  let grew = true;
  while (grew) { // children (renderers, the GPU process) too
    grew = false;
    for (const p of procs) if (roots.has(p.ppid) && !roots.has(p.pid)) { roots.add(p.pid); grew = true; }
  }
  return procs.filter((p) => roots.has(p.pid)).reduce((sum, p) => sum + p.rss, 0);
}

const server = await startServer(DIST);
const b = await launch(WEBGPU_ON);
const rows = [];
try {
  const { page } = b;
  await page.goto(`${server.url}?device=${DEVICE}&sw=off`, { waitUntil: 'load' });
  await page.waitForFunction(() => document.getElementById('status').dataset.state === 'ready', null, { timeout: 600_000 });
  await page.setInputFiles('#file', path.join(REPO, 'tests', 'fixtures', 'product_alpha_32.png'));
  await page.waitForFunction(() => /Photo ready/.test(document.getElementById('status').textContent), null, { timeout: 60_000 });
  await page.selectOption('#size', '64');
  await page.fill('#steps', '1');
  await page.fill('#prompt', 'on a wooden table');
  const [worker] = page.workers();
  const sample = async (ads, seconds) => {
    const heap = await page.evaluate(() => performance.memory?.usedJSHeapSize ?? NaN);
    const wasm = worker ? await worker.evaluate(() => self.adcanvasWasmBytes?.() ?? NaN) : NaN;
    const row = { ads, seconds, heapMB: heap / MB, wasmMB: wasm / MB, rssMB: browserRss(b.userDataDir) / MB };
    rows.push(row);
    console.log(`${String(ads).padStart(4)} ads  ${seconds.toFixed(0).padStart(5)} s  JS heap ${row.heapMB.toFixed(1)} MB  wasm ${row.wasmMB.toFixed(1)} MB  browser RSS ${row.rssMB.toFixed(0)} MB`);
  };
  const start = Date.now();
  await sample(0, 0);
  for (let i = 1; i <= COUNT; i++) {
    await page.fill('#seed', String(i));
    await page.locator('#status').evaluate((e) => { e.dataset.state = 'test-pending'; });
    await page.click('#generate');
    await page.waitForFunction(() => ['done', 'error'].includes(document.getElementById('status').dataset.state), null, { timeout: 600_000, polling: 100 });
    const state = await page.locator('#status').getAttribute('data-state');
    if (state !== 'done') throw new Error(`ad ${i}: ${await page.locator('#status').textContent()}`);
    if (i % 20 === 0) {
      await page.evaluate(() => new Promise((r) => setTimeout(r, 500))); // let the page settle
      await sample(i, (Date.now() - start) / 1000);
    }
  }
} finally {
  await b.close();
  server.proc.kill();
}
const base = rows.find((r) => r.ads === 20) ?? rows[0];
const last = rows[rows.length - 1];
const growth = { heap: last.heapMB - base.heapMB, wasm: last.wasmMB - base.wasmMB, rss: last.rssMB - base.rssMB };
console.log(`from ad ${base.ads} to ad ${last.ads}: JS heap ${growth.heap.toFixed(1)} MB, wasm ${growth.wasm.toFixed(1)} MB, browser RSS ${growth.rss.toFixed(0)} MB`);
const ok = growth.wasm <= 0 && growth.heap < 16 && growth.rss < 160;
console.log(ok ? 'soak: within the bounds' : 'soak: MEMORY GREW PAST THE BOUNDS');
process.exit(ok ? 0 : 1);
