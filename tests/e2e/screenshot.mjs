// Makes docs/screenshot.png: the page in Chromium after generating one ad with the default model,
// so the README shows the page as it is. This machine's only WebGPU adapter is SwiftShader, a
// software one, so the page runs on the CPU (and says so), as it would for a visitor without a GPU.
//
//   scripts/build-web.sh && cd tests/e2e && node screenshot.mjs [OUT]

import path from 'node:path';
import { DIST, REPO, WEBGPU_ON, launch, startServer } from './harness.mjs';

const OUT = path.resolve(process.argv[2] || path.join(REPO, 'docs', 'screenshot.png'));
const server = await startServer(DIST);
const b = await launch(WEBGPU_ON);
try {
  const { page } = b;
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto(server.url, { waitUntil: 'load' });
  await page.waitForFunction(() => document.getElementById('status').dataset.state === 'ready', null, { timeout: 300_000 });
  await page.setInputFiles('#file', path.join(REPO, 'tests', 'fixtures', 'product_alpha_128.png'));
  await page.waitForFunction(() => /Photo ready/.test(document.getElementById('status').textContent), null, { timeout: 60_000 });
  await page.fill('#prompt', 'a bottle on the beach at sunset');
  await page.selectOption('#size', '256');
  await page.fill('#steps', '20');
  await page.fill('#seed', '42');
  await page.click('#generate');
  await page.waitForFunction(() => document.getElementById('result').dataset.ready === '1' ||
    document.getElementById('status').dataset.state === 'error', null, { timeout: 1_800_000, polling: 1000 });
  const status = await page.locator('#status').textContent();
  if (!/Done/.test(status)) throw new Error(`generation did not finish: ${status}`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: OUT, fullPage: true });
  console.log(`wrote ${OUT}`);
} finally {
  await b.close();
  server.proc.kill();
}
