// Makes docs/screenshot.png: the page in Chromium after generating three ads (a scene preset, three
// variants) with the default model, so the README shows the page as it is; and
// docs/screenshot-brush.png: the mask brush over a photo whose background is too busy to cut out,
// and docs/screenshot-brush-ad.png: the ad made from what was painted. This machine's only WebGPU adapter is SwiftShader, a
// software one, so the page runs on the CPU (and says so), as it would for a visitor without a GPU.
//
//   scripts/build-web.sh && cd tests/e2e && node screenshot.mjs [OUT [BRUSH_OUT]]

import path from 'node:path';
import { DIST, REPO, WEBGPU_ON, launch, startServer } from './harness.mjs';

const OUT = path.resolve(process.argv[2] || path.join(REPO, 'docs', 'screenshot.png'));
const BRUSH_OUT = path.resolve(process.argv[3] || path.join(REPO, 'docs', 'screenshot-brush.png'));
const BRUSH_AD_OUT = BRUSH_OUT.replace(/\.png$/, '-ad.png');
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

  // The brush: a ball on a beach, which the automatic cut-out refuses (the backdrop is not plain),
  // painted by hand, then the ad made from what was painted.
  await page.setInputFiles('#file', path.join(REPO, 'tests', 'fixtures', 'reference_beach.png'));
  const canvas = page.locator('#mask-editor .adc-mask-canvas');
  await canvas.waitFor({ state: 'visible', timeout: 60_000 });
  const brush = 24;
  await page.locator('#mask-editor .adc-mask-size').fill(String(brush));
  const box = await canvas.boundingBox();
  // The ball is an ellipse (centre and half-axes as fractions of the photo, read off the picture):
  // a stroke around its rim, a brush's radius inside, then rows that fill it, as a hand would.
  const [cx, cy, ax, ay] = [0.452, 0.495, 0.405, 0.245];
  const r = brush / 2;
  const at = (fx, fy) => [box.x + fx * box.width, box.y + fy * box.height];
  const rim = (t) => at(cx + (ax - r / box.width) * Math.cos(t), cy + (ay - r / box.height) * Math.sin(t));
  await page.mouse.move(...rim(0));
  await page.mouse.down();
  for (let i = 1; i <= 72; i++) await page.mouse.move(...rim((i / 72) * 2 * Math.PI));
  await page.mouse.up();
  for (let dy = -ay + (2 * r) / box.height; dy < ay - r / box.height; dy += (1.5 * r) / box.height) {
    const half = ax * Math.sqrt(Math.max(0, 1 - (dy / ay) ** 2)) - r / box.width;
    if (half <= 0) continue;
    await page.mouse.move(...at(cx - half, cy + dy));
    await page.mouse.down();
    await page.mouse.move(...at(cx + half, cy + dy), { steps: 12 });
    await page.mouse.up();
  }
  await page.mouse.move(...at(0.5, 0.95));
  await page.locator('#mask-editor').screenshot({ path: BRUSH_OUT });
  console.log(`wrote ${BRUSH_OUT}`);
  await page.locator('#mask-editor .adc-mask-apply').click();
  await page.waitForFunction(() => /mask from your brush/.test(document.getElementById('mask-info').textContent), null, { timeout: 60_000 });
  await page.selectOption('#preset', { label: 'Marble counter' });
  await page.selectOption('#variant-count', '1');
  await page.click('#generate');
  await page.waitForFunction(() => document.getElementById('result').dataset.ready === '1' &&
    document.getElementById('status').dataset.state === 'done', null, { timeout: 1_800_000, polling: 1000 });
  await page.locator('#result').screenshot({ path: BRUSH_AD_OUT });
  console.log(`wrote ${BRUSH_AD_OUT}`);
} finally {
  await b.close();
  server.proc.kill();
}
