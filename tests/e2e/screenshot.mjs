// Makes docs/screenshot.png: the page in Chromium after generating three ads (a scene preset, three
// variants) with the default model, so the README shows the page as it is; and
// docs/screenshot-brush.png: the mask brush over a photo whose background is too busy to cut out. This machine's only WebGPU adapter is SwiftShader, a
// software one, so the page runs on the CPU (and says so), as it would for a visitor without a GPU.
//
//   scripts/build-web.sh && cd tests/e2e && node screenshot.mjs [OUT [BRUSH_OUT]]

import path from 'node:path';
import { DIST, REPO, WEBGPU_ON, launch, startServer } from './harness.mjs';

const OUT = path.resolve(process.argv[2] || path.join(REPO, 'docs', 'screenshot.png'));
const BRUSH_OUT = path.resolve(process.argv[3] || path.join(REPO, 'docs', 'screenshot-brush.png'));
const server = await startServer(DIST);
const b = await launch(WEBGPU_ON);
try {
  const { page } = b;
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto(server.url, { waitUntil: 'load' });
  await page.waitForFunction(() => document.getElementById('status').dataset.state === 'ready', null, { timeout: 300_000 });
  await page.setInputFiles('#file', path.join(REPO, 'tests', 'fixtures', 'product_alpha_128.png'));
  await page.waitForFunction(() => /Photo ready/.test(document.getElementById('status').textContent), null, { timeout: 60_000 });
  await page.selectOption('#preset', { label: 'Beach at sunset' });
  await page.selectOption('#size', '256');
  await page.fill('#steps', '20');
  await page.fill('#seed', '42');
  await page.selectOption('#variant-count', '3');
  await page.click('#generate');
  await page.waitForFunction(() => document.querySelectorAll('#variants li').length === 3 ||
    document.getElementById('status').dataset.state === 'error', null, { timeout: 1_800_000, polling: 1000 });
  const status = await page.locator('#status').textContent();
  if (!/Done/.test(status)) throw new Error(`generation did not finish: ${status}`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: OUT, fullPage: true });
  console.log(`wrote ${OUT}`);

  // The brush: a photo the automatic cut-out refuses, with the product half painted.
  await page.setInputFiles('#file', path.join(REPO, 'tests', 'fixtures', 'busy.jpg'));
  const canvas = page.locator('#mask-editor .adc-mask-canvas');
  await canvas.waitFor({ state: 'visible', timeout: 60_000 });
  await page.locator('#mask-editor .adc-mask-size').fill('90');
  const box = await canvas.boundingBox();
  await page.mouse.move(box.x + box.width * 0.35, box.y + box.height * 0.45);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.6, box.y + box.height * 0.55, { steps: 8 });
  await page.mouse.up();
  await page.locator('#mask-editor').screenshot({ path: BRUSH_OUT });
  console.log(`wrote ${BRUSH_OUT}`);
} finally {
  await b.close();
  server.proc.kill();
}
