// Browser tests for the adcanvas page: Debian Chromium + WebGPU on SwiftShader, driven by playwright-core.
// SwiftShader is a software (fallback) adapter, so the page's default device (auto) runs these on the
// CPU path; the tests of the GPU path ask for it with ?device=gpu (or { device: 'gpu' }).
//
//   scripts/build-web.sh                      # builds dist/ (index.html, www/, pkg/, models/)
//   cd tests/e2e && npm ci && npm test        # = node --test app.test.mjs
//
// Environment:
//   ADCANVAS_DIST      directory to serve (default: <repo>/dist)
//   ADCANVAS_CHROMIUM  browser binary (default: /usr/bin/chromium)
//   ADCANVAS_FIXTURES  fixture directory (default: <repo>/tests/fixtures)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PNG } from 'pngjs';
import { execFileSync } from 'node:child_process';
import { DIST, REPO, WEBGPU_OFF, WEBGPU_ON, launch, startServer } from './harness.mjs';

const FIXTURES = path.resolve(process.env.ADCANVAS_FIXTURES || path.join(REPO, 'tests', 'fixtures'));
const PRODUCT = path.join(FIXTURES, 'product_alpha_32.png');
const CORRUPT = path.join(FIXTURES, 'corrupt.png');
// A cut-out as style reference: its alpha is the foreground PFV hides.
const REFERENCE_CUTOUT = path.join(FIXTURES, 'product_alpha_128.png');
// A busy scene: its foreground cannot be found automatically.
const REFERENCE_BUSY = path.join(FIXTURES, 'reference_beach.png');

const MINUTE = 60_000;
const GENERATE_TIMEOUT = 20 * MINUTE; // SwiftShader is very slow, and this machine's speed varies 4× between days
const LOAD_TIMEOUT = 5 * MINUTE;      // wasm compile + model pack download + pipeline setup

// ---------- static server ----------

let server = null;
let baseUrl = null;

before(async () => {
  if (!fs.existsSync(path.join(DIST, 'index.html')) || !fs.existsSync(path.join(DIST, 'pkg', 'adcanvas.js'))) {
    throw new Error(`build the web app first: scripts/build-web.sh (no index.html + pkg/adcanvas.js in ${DIST})`);
  }
  for (const f of [PRODUCT, CORRUPT]) {
    if (!fs.existsSync(f)) throw new Error(`missing test fixture: ${f}`);
  }
  ({ proc: server, url: baseUrl } = await startServer(DIST));
});

after(() => {
  if (server && server.exitCode === null) server.kill();
});
process.on('exit', () => {
  if (server && server.exitCode === null) server.kill();
});

// ---------- browser helpers ----------

async function statusOf(page) {
  return page.locator('#status').evaluate((e) => ({ state: e.dataset.state, text: e.textContent.trim() }));
}

/** Wait until #status has one of the given states; fail with the status text on 'error'. */
async function waitForState(page, states, timeout, what) {
  await page.waitForFunction(
    (wanted) => {
      const s = document.getElementById('status')?.dataset.state;
      return wanted.includes(s) || s === 'error';
    },
    states,
    { timeout, polling: 250 },
  );
  const st = await statusOf(page);
  if (!states.includes(st.state)) {
    assert.fail(`${what}: status is '${st.state}': ${st.text}`);
  }
  return st;
}

/** Waits until the page shows its ad or stops with an error or a cancel; returns the status. */
async function waitForAd(page) {
  await page.waitForFunction(
    () => document.getElementById('result').dataset.ready === '1' ||
      ['error', 'cancelled'].includes(document.getElementById('status').dataset.state),
    null,
    { timeout: GENERATE_TIMEOUT, polling: 250 },
  );
  return statusOf(page);
}

/** Open the page (with `query`, e.g. '?device=gpu') and wait until the model pack is loaded (state 'ready'). */
async function openReady(page, consoleLines, query = '') {
  await page.goto(baseUrl + query, { waitUntil: 'load' });
  try {
    await waitForState(page, ['ready'], LOAD_TIMEOUT, 'loading the page');
  } catch (err) {
    err.message += `\nconsole:\n${consoleLines.join('\n')}`;
    throw err;
  }
}

async function uploadAndWait(page, file) {
  // Mark the status so that the 'ready' left over from before the upload does not count:
  // the page overwrites data-state as soon as it starts preparing the file.
  await page.locator('#status').evaluate((e) => { e.dataset.state = 'test-pending'; });
  await page.setInputFiles('#file', file);
  // 'loading' while preparing, then 'ready' or 'error'.
  await page.waitForFunction(
    () => {
      const s = document.getElementById('status').dataset.state;
      return s === 'ready' || s === 'error';
    },
    null,
    { timeout: MINUTE, polling: 100 },
  );
  return statusOf(page);
}

/** Uploads the product and sets a small ad: 64², `steps` steps, seed 7, `prompt`. */
async function setUpSmallAd(page, steps, prompt) {
  const up = await uploadAndWait(page, PRODUCT);
  assert.equal(up.state, 'ready', `uploading the product failed: ${up.text}`);
  await page.selectOption('#size', '64');
  await page.fill('#steps', String(steps));
  await page.fill('#seed', '7');
  await page.fill('#prompt', prompt);
}

/** The cut-out preview's size and alpha channel, read back through a canvas. */
async function previewAlpha(page) {
  const { width, height, data } = await previewRgba(page);
  return { width, height, alpha: data.filter((_, i) => i % 4 === 3) };
}

/** The entries of a zip whose files are stored (not deflated), in order: [{ name, data }]. */
function readStoredZip(buf) {
  const out = [];
  let at = 0;
  while (buf.readUInt32LE(at) === 0x04034b50) {
    const flags = buf.readUInt16LE(at + 6);
    const method = buf.readUInt16LE(at + 8);
    const size = buf.readUInt32LE(at + 18);
    const nameLen = buf.readUInt16LE(at + 26);
    const extraLen = buf.readUInt16LE(at + 28);
    assert.equal(method, 0, 'entries are stored');
    assert.equal(flags & 8, 0, 'sizes are in the local headers');
    const name = buf.toString('utf8', at + 30, at + 30 + nameLen);
    const start = at + 30 + nameLen + extraLen;
    out.push({ name, data: buf.subarray(start, start + size) });
    at = start + size;
  }
  assert.equal(buf.readUInt32LE(at), 0x02014b50, 'the central directory follows the entries');
  return out;
}

function decodePng(buf) {
  return PNG.sync.read(buf);
}

// The native CLI that `cargo test --release` builds (scripts/test.sh runs those tests first).
const CLI = process.env.ADCANVAS_BIN
  || path.join(process.env.CARGO_TARGET_DIR || path.join(REPO, 'target'), 'release', 'adcanvas');

/** Asserts that `adcanvas generate ARGS` on the CPU, with the pack the page serves, makes the page's
 * ad `image` ({ width, height, data: RGBA }). wasm's f32 arithmetic (SIMD128, no fused multiply-add)
 * and the native build's (AVX2/FMA) round differently, so a pixel may differ by a level or so (0.000 on average, 1 at most, measured);
 * an ad from another seed, prompt or pack differs by tens. */
function assertSameAsCli(image, args, what) {
  assert.ok(fs.existsSync(CLI), `the native CLI is not built: ${CLI} (cargo build --release, or set ADCANVAS_BIN)`);
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'adcanvas-cli-')), 'ad.png');
  execFileSync(CLI, ['generate', ...args, '--device', 'cpu', '--model', path.join(DIST, 'models', 'default'), '--out', out],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  const cli = decodePng(fs.readFileSync(out));
  assert.deepEqual([cli.width, cli.height], [image.width, image.height], `${what}: the CLI's ad has the page's size`);
  let sum = 0, max = 0, n = 0;
  for (let o = 0; o < cli.data.length; o += 4) {
    for (let c = 0; c < 3; c++) {
      const d = Math.abs(cli.data[o + c] - image.data[o + c]);
      sum += d; max = Math.max(max, d); n++;
    }
  }
  const mean = sum / n;
  console.log(`# ${what}: page vs CLI, mean ${mean.toFixed(3)} levels, max ${max}`);
  assert.ok(mean <= 0.25 && max <= 8, `${what}: the page's ad and the CLI's differ by ${mean.toFixed(2)} levels on average, ${max} at most`);
  return { mean, max };
}

/** Asserts that every opaque pixel of the fixture `product` (a decoded PNG) is exact in `image`
 * ({ width, data: RGBA }) at `placement` ({ x, y, w, h }) at scale 1. */
function assertProductExact(image, product, placement, what) {
  const { x, y, w, h } = placement;
  assert.deepEqual([w, h], [product.width, product.height], `${what}: product placed at scale 1`);
  let opaque = 0;
  const mismatches = [];
  for (let j = 0; j < product.height; j++) {
    for (let i = 0; i < product.width; i++) {
      const f = (j * product.width + i) * 4;
      if (product.data[f + 3] !== 255) continue;
      opaque++;
      const o = ((y + j) * image.width + x + i) * 4;
      const want = [...product.data.slice(f, f + 3)];
      const got = [...image.data.slice(o, o + 3)];
      if (want.some((v, c) => v !== got[c])) mismatches.push(`(${i},${j}) product ${want} ad ${got}`);
    }
  }
  assert.ok(opaque > 0, `${what}: the product has opaque pixels`);
  assert.equal(mismatches.length, 0, `${what}: ${mismatches.length}/${opaque} product pixels differ:\n${mismatches.slice(0, 10).join('\n')}`);
}

// ---------- tests ----------

test('WebGPU on: generates an ad that keeps the product pixels exact', { timeout: LOAD_TIMEOUT + GENERATE_TIMEOUT + 2 * MINUTE }, async () => {
  const b = await launch(WEBGPU_ON);
  const requests = [];
  const responses = [];
  b.context.on('request', (req) => requests.push(req.url()));
  b.context.on('response', (res) => responses.push(res));
  try {
    const { page } = b;
    // SwiftShader is a software adapter, which auto passes over for the CPU: this test is the GPU path's.
    await openReady(page, b.consoleLines, '?device=gpu');
    assert.equal(await page.locator('#webgpu-error').isVisible(), false, '#webgpu-error must be hidden when WebGPU works');
    assert.equal(await page.evaluate(() => document.body.dataset.device), 'gpu', 'the studio runs on WebGPU');
    // The default model is the trained one: no "untrained" or "prompt not used" warning,
    // and the size starts at the model's own resolution.
    const notices = await page.locator('#model-label').innerText();
    assert.ok(!/not been trained|prompt not used/.test(notices), `unexpected model notice: ${notices}`);
    assert.equal(await page.locator('#size').inputValue(), '256', 'size starts at the model\'s native 256 px');
    // serve.py sent the wasm module in Brotli (build-web.sh's .br copy; Chromium accepts br), once
    // (to the studio's worker, through the service worker, which keeps it; the page itself does not
    // load it), and it ran.
    const wasm = responses.filter((r) => r.url().endsWith('.wasm') && !r.fromServiceWorker());
    assert.equal(wasm.length, 1, `one wasm module fetched: ${wasm.map((r) => r.url())}`);
    const encoding = await wasm[0].headerValue('content-encoding');
    const sent = Number(await wasm[0].headerValue('content-length'));
    const size = fs.statSync(path.join(DIST, 'pkg', 'adcanvas_bg.wasm')).size;
    assert.ok(encoding === 'br' && sent * 6 < size, `wasm not sent in Brotli: ${encoding}, ${sent} of ${size} bytes`);

    const up = await uploadAndWait(page, PRODUCT);
    assert.equal(up.state, 'ready', `uploading the product failed: ${up.text}`);
    assert.equal(await page.locator('#mask-preview').isVisible(), true, 'mask preview is shown after upload');
    const maskLoaded = await page.locator('#mask-preview').evaluate(
      (img) => img.decode().then(() => img.naturalWidth > 0, () => false),
    );
    assert.ok(maskLoaded, 'mask preview image decodes');

    // A style reference: the page shows the option for this model; PFV hides the cut-out's object.
    assert.equal(await page.locator('#reference-field').isVisible(), true, 'the default model takes a style reference');
    assert.equal(await page.locator('#depth-field').isVisible(), true, 'the default model has depth guidance');
    assert.equal(await page.locator('#depth').isChecked(), true, 'depth guidance is on by default');
    await page.setInputFiles('#reference', REFERENCE_CUTOUT);
    await page.waitForFunction(() => /Style reference/.test(document.getElementById('status').textContent), null, { timeout: MINUTE });
    assert.equal((await statusOf(page)).state, 'ready', 'the reference is accepted');

    await page.selectOption('#size', '64');
    await page.fill('#steps', '2');
    await page.fill('#seed', '7');
    await page.fill('#prompt', 'on a wooden table in a sunny kitchen, product photography');
    assert.equal(await page.locator('#cancel').isDisabled(), true, 'Cancel is disabled before generating');
    assert.equal(await page.locator('#download').isDisabled(), true, 'Download is disabled before a result');
    // The studio runs in a worker, so the page's main thread stays free while the GPU's
    // kernels compile (tens of seconds on SwiftShader): Playwright's click, which waits for
    // the page to handle the input, returns, and so does a question asked right after it.
    assert.equal(await page.evaluate(() => document.body.dataset.studio), 'worker', 'the studio runs in a worker');
    assert.equal(await page.locator('#generate').isEnabled(), true, 'Generate is enabled after upload');
    await page.click('#generate');
    assert.equal(await page.locator('#cancel').isEnabled(), true, 'Cancel is enabled while generating');

    const st = await waitForAd(page);
    const ready = await page.locator('#result').getAttribute('data-ready');
    assert.equal(ready, '1', `generation did not finish: status '${st.state}': ${st.text}\nconsole:\n${b.consoleLines.join('\n')}`);
    assert.equal(st.state, 'done', `status after generation: ${st.text}`);
    assert.equal(await page.locator('#cancel').isDisabled(), true, 'Cancel is disabled after generating');
    assert.equal(await page.locator('#download').isEnabled(), true, 'Download is enabled after a result');
    assert.equal(await page.locator('#generate').isEnabled(), true, 'Generate is enabled again');
    assert.equal(await page.evaluate(() => window.__adcanvas.depth_used), true, 'the ControlNet read the product\'s depth');
    const usedRef = await page.evaluate(() => window.__adcanvas.reference);
    assert.ok(usedRef && usedRef.patches === 64 && usedRef.hidden_patches > 0 && usedRef.tokens === 1 + 64 - usedRef.hidden_patches,
      `the reference went through PFV: ${JSON.stringify(usedRef)}`);

    // Canvas geometry: attributes = image size, CSS box = same size (no scaling).
    const geom = await page.locator('#result').evaluate((c) => {
      const r = c.getBoundingClientRect();
      return { w: c.width, h: c.height, cssW: r.width, cssH: r.height, placement: c.dataset.placement };
    });
    assert.equal(geom.w, 64);
    assert.equal(geom.h, 64);
    assert.equal(geom.cssW, 64, 'canvas CSS width equals its pixel width');
    assert.equal(geom.cssH, 64, 'canvas CSS height equals its pixel height');

    const shot = decodePng(await page.locator('#result').screenshot({ animations: 'disabled', scale: 'css' }));
    assert.equal(shot.width, geom.w, 'screenshot width = canvas width');
    assert.equal(shot.height, geom.h, 'screenshot height = canvas height');

    const [x, y, w, h] = geom.placement.split(',').map(Number);
    assert.ok([x, y, w, h].every(Number.isInteger), `data-placement is x,y,w,h integers: ${geom.placement}`);
    const fixture = decodePng(fs.readFileSync(PRODUCT));
    assert.equal(w, fixture.width, 'product placed at scale 1 (width)');
    assert.equal(h, fixture.height, 'product placed at scale 1 (height)');
    assert.ok(x >= 0 && y >= 0 && x + w <= shot.width && y + h <= shot.height, `placement inside the image: ${geom.placement}`);

    const px = (img, i, j) => {
      const o = (j * img.width + i) * 4;
      return [img.data[o], img.data[o + 1], img.data[o + 2], img.data[o + 3]];
    };

    // 1. Every opaque product pixel is exact in the screenshot.
    let opaque = 0;
    const mismatches = [];
    for (let j = 0; j < fixture.height; j++) {
      for (let i = 0; i < fixture.width; i++) {
        const f = px(fixture, i, j);
        if (f[3] !== 255) continue;
        opaque++;
        const s = px(shot, x + i, y + j);
        if (s[0] !== f[0] || s[1] !== f[1] || s[2] !== f[2]) mismatches.push(`(${i},${j}) fixture ${f.slice(0, 3)} screen ${s.slice(0, 3)}`);
      }
    }
    assert.ok(opaque > 0, 'fixture has opaque pixels');
    assert.equal(mismatches.length, 0, `${mismatches.length}/${opaque} product pixels differ:\n${mismatches.slice(0, 10).join('\n')}`);

    // 2. The background is generated, not a constant fill; the canvas is not blank.
    const colours = new Set();
    const sum = [0, 0, 0];
    const sq = [0, 0, 0];
    let n = 0;
    for (let j = 0; j < shot.height; j++) {
      for (let i = 0; i < shot.width; i++) {
        if (i >= x && i < x + w && j >= y && j < y + h) continue;
        const s = px(shot, i, j);
        colours.add((s[0] << 16) | (s[1] << 8) | s[2]);
        for (let c = 0; c < 3; c++) { sum[c] += s[c]; sq[c] += s[c] * s[c]; }
        n++;
      }
    }
    assert.ok(n > 0, 'there are background pixels');
    const std = sum.map((s, c) => Math.sqrt(Math.max(0, sq[c] / n - (s / n) ** 2)));
    assert.ok(colours.size > 8 || Math.max(...std) > 2,
      `background looks like a constant fill: ${colours.size} colours, std ${std.map((v) => v.toFixed(2))}`);
    const all = new Set();
    for (let o = 0; o < shot.data.length; o += 4) all.add((shot.data[o] << 16) | (shot.data[o + 1] << 8) | shot.data[o + 2]);
    assert.ok(all.size > 1, 'canvas is not blank');

    // 3. window.__adcanvas agrees with the screenshot (every pixel; the image is opaque).
    const last = await page.evaluate(() => {
      const r = window.__adcanvas;
      return r && { width: r.width, height: r.height, placement: r.placement, notes: r.notes, rgba: Array.from(r.rgba) };
    });
    assert.ok(last, 'window.__adcanvas is set');
    assert.deepEqual(last.notes, [], 'a product of half the ad\'s height needs no note about its size');
    assert.equal(last.width, shot.width);
    assert.equal(last.height, shot.height);
    assert.deepEqual([last.placement.x, last.placement.y, last.placement.w, last.placement.h], [x, y, w, h]);
    assert.equal(last.rgba.length, shot.width * shot.height * 4);
    const diff = [];
    for (let o = 0; o < last.rgba.length; o += 4) {
      assert.equal(last.rgba[o + 3], 255, 'result is opaque');
      if (last.rgba[o] !== shot.data[o] || last.rgba[o + 1] !== shot.data[o + 1] || last.rgba[o + 2] !== shot.data[o + 2]) {
        const p = o / 4;
        diff.push(`(${p % shot.width},${Math.floor(p / shot.width)}) rgba ${last.rgba.slice(o, o + 3)} screen ${[...shot.data.slice(o, o + 3)]}`);
      }
    }
    assert.equal(diff.length, 0, `${diff.length} pixels of __adcanvas.rgba differ from the screenshot:\n${diff.slice(0, 10).join('\n')}`);

    // 4. Nothing left the page's origin (no CDNs, no telemetry, no uploads).
    const origin = new URL(page.url()).origin;
    const foreign = requests.filter((u) => !u.startsWith('data:') && new URL(u).origin !== origin);
    assert.ok(requests.length > 0, 'requests were recorded');
    assert.deepEqual(foreign, [], 'every request goes to the page origin');

    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');
  } finally {
    await b.close();
  }
});

test('several photos at once: each gets an ad as it lands, and Download all zips them', { timeout: LOAD_TIMEOUT + 2 * GENERATE_TIMEOUT + 2 * MINUTE }, async () => {
  const b = await launch(WEBGPU_ON);
  try {
    const { page } = b;
    await openReady(page, b.consoleLines);
    await page.selectOption('#size', '64');
    await page.fill('#steps', '2');
    await page.fill('#prompt', 'on a wooden table');
    const photos = [PRODUCT, path.join(FIXTURES, 'product_white.jpg'), REFERENCE_CUTOUT];
    await page.setInputFiles('#file', photos);
    const readRows = () => page.locator('#batch-list li').evaluateAll((lis) => lis.map((li) => ({
      state: li.dataset.state, note: li.querySelector('.batch-note').textContent,
    })));
    try {
      await page.waitForFunction(() => {
        const rows = [...document.querySelectorAll('#batch-list li')];
        return rows.length === 3 && rows.every((li) => ['done', 'failed', 'skipped'].includes(li.dataset.state));
      }, null, { timeout: 2 * GENERATE_TIMEOUT, polling: 500 }); // three ads: 1193 s here beside a build
    } catch (err) {
      err.message += `\nrows: ${JSON.stringify(await readRows())}\nstatus: ${JSON.stringify(await statusOf(page))}` +
        `\nconsole:\n${b.consoleLines.slice(-20).join('\n')}`;
      throw err;
    }
    const rows = await readRows();
    assert.deepEqual(rows.map((r) => r.state), ['done', 'done', 'done'], JSON.stringify(rows));
    const status = await statusOf(page);
    assert.match(status.text, /Made 3 of 3 ads/);
    // The canvas shows the last ad; the zip holds every ad under its photo's name.
    const shown = await page.evaluate(() => Array.from(window.__adcanvas.rgba));
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#batch-zip')]);
    assert.equal(download.suggestedFilename(), 'adcanvas-ads.zip');
    const entries = readStoredZip(fs.readFileSync(await download.path()));
    assert.deepEqual(entries.map((e) => e.name), ['product_alpha_32-ad.png', 'product_white-ad.png', 'product_alpha_128-ad.png']);
    for (const e of entries) {
      const png = decodePng(e.data);
      assert.deepEqual([png.width, png.height], [64, 64], `${e.name} is 64 × 64`);
    }
    assert.deepEqual(Array.from(decodePng(entries[2].data).data), shown, 'the zip holds the last ad as shown');
    // Each row's thumbnail is that ad's PNG, byte for byte.
    const thumbs = await page.locator('#batch-list img').evaluateAll((imgs) => Promise.all(imgs.map(
      async (img) => Array.from(new Uint8Array(await (await fetch(img.src)).arrayBuffer())))));
    thumbs.forEach((t, i) => assert.ok(Buffer.from(t).equals(entries[i].data), `row ${i}'s ad differs from the zip's`));
    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');
  } finally {
    await b.close();
  }
});

test('q8 weights kept quantised on the GPU give the same ad as expanded ones, and the CPU path the same again', { timeout: 2 * LOAD_TIMEOUT + 2 * GENERATE_TIMEOUT }, async () => {
  const b = await launch(WEBGPU_ON);
  try {
    const { page } = b;
    await page.goto(baseUrl, { waitUntil: 'load' });
    const photo = Array.from(fs.readFileSync(PRODUCT));
    const got = await page.evaluate(async (photo) => {
      const wasm = await import(new URL('pkg/adcanvas.js', document.baseURI).href);
      await wasm.default();
      const run = async (mode, device = 'gpu') => {
        const studio = await wasm.Studio.open(new URL('models/default/', document.baseURI).href, { device, quantized_weights: mode });
        const info = studio.model_info();
        await studio.prepare(new Uint8Array(photo));
        const r = await studio.generate({ size: 64, steps: 2, seed: 7, prompt: 'on a marble table' }, () => {});
        return { mode: info.quantized_weights, device: info.device, mb: info.device_weights_mb, rgba: Array.from(r.rgba) };
      };
      let refused = null;
      try {
        await wasm.Studio.open('models/default/', { quantized_weights: 'int8' });
      } catch (e) {
        refused = String(e && e.message || e);
      }
      return {
        expanded: await run('expand'), kept: await run('keep'), cpu: await run('auto', 'cpu'),
        auto: (await wasm.Studio.open('models/default/', { device: 'gpu' })).model_info().quantized_weights, refused,
      };
    }, photo);
    assert.equal(got.expanded.mode, 'expand');
    assert.equal(got.expanded.device, 'gpu');
    assert.equal(got.cpu.device, 'cpu');
    assert.equal(got.kept.mode, 'keep');
    assert.equal(got.auto, 'expand', 'auto expands the small default model');
    assert.match(got.refused || '', /quantized_weights "int8": expected auto, keep or expand/);
    assert.ok(got.kept.mb < got.expanded.mb / 3, `GPU weights kept ${got.kept.mb} MB vs expanded ${got.expanded.mb} MB`);
    assert.equal(got.kept.rgba.length, 64 * 64 * 4);
    let maxDiff = 0;
    let differing = 0;
    got.kept.rgba.forEach((v, i) => {
      const d = Math.abs(v - got.expanded.rgba[i]);
      if (d > 0) differing++;
      maxDiff = Math.max(maxDiff, d);
    });
    // The same weight values either way; only the GPU's operation order may differ (1e-6 in
    // the UNet natively), which can flip a rounding.
    console.error(`kept vs expanded in Chromium: max channel difference ${maxDiff}, ${differing} of ${got.kept.rgba.length} values differ; GPU weights ${got.kept.mb.toFixed(1)} vs ${got.expanded.mb.toFixed(1)} MB`);
    assert.ok(maxDiff <= 2, `kept vs expanded: max channel difference ${maxDiff}, ${differing} values differ`);
    // The CPU path (wasm SIMD128) against the GPU's: the same model to float rounding.
    const cpuDiff = got.cpu.rgba.reduce((m, v, i) => Math.max(m, Math.abs(v - got.expanded.rgba[i])), 0);
    const cpuDiffering = got.cpu.rgba.filter((v, i) => v !== got.expanded.rgba[i]).length;
    console.error(`CPU vs GPU in Chromium: max channel difference ${cpuDiff}, ${cpuDiffering} of ${got.cpu.rgba.length} values differ`);
    assert.equal(got.cpu.rgba.length, got.expanded.rgba.length);
    assert.ok(cpuDiff <= 2, `CPU vs GPU: max channel difference ${cpuDiff}, ${cpuDiffering} values differ`);
    assert.deepEqual(b.pageErrors.map(String), [], `no uncaught page errors; console:\n${b.consoleLines.join('\n')}`);
  } finally {
    await b.close();
  }
});

test('WebGPU off: the ad is made on the CPU, the page says so, the product pixels are exact', { timeout: LOAD_TIMEOUT + GENERATE_TIMEOUT + 2 * MINUTE }, async () => {
  const b = await launch(WEBGPU_OFF);
  try {
    const { page } = b;
    await openReady(page, b.consoleLines);
    // Precondition: this browser really has no usable WebGPU.
    const hasWebgpu = await page.evaluate(async () => {
      if (!navigator.gpu) return false;
      return (await navigator.gpu.requestAdapter()) !== null;
    });
    assert.equal(hasWebgpu, false, 'test setup: WebGPU should be unavailable with these flags');
    assert.equal(await page.locator('#webgpu-error').isVisible(), false, 'no error: the CPU path runs instead');
    assert.equal(await page.evaluate(() => document.body.dataset.device), 'cpu');
    assert.equal(await page.evaluate(() => document.body.dataset.studio), 'worker', 'the CPU works in the worker, not on the page');
    const notices = await page.locator('#model-label').innerText();
    assert.match(notices, /CPU/, `the page says it runs on the CPU: ${notices}`);
    assert.match(notices, /WebGPU|GPU adapter/, `and why: ${notices}`);
    // This machine has two cores: a helper worker shares each ad (www/studio-worker.js).
    assert.match(notices, /two cores/, `and on how many cores: ${notices}`);

    await setUpSmallAd(page, 4, 'on a wooden table in a sunny kitchen, product photography');
    // The status counts down once two steps have run.
    const countdown = page.waitForFunction(() => /about [\d.]+ s left/.test(document.getElementById('status').textContent),
      null, { timeout: GENERATE_TIMEOUT, polling: 20 }).then(() => true, () => false);
    await page.click('#generate');
    const st = await waitForAd(page);
    assert.equal(st.state, 'done', `status after generation: ${st.text}\nconsole:\n${b.consoleLines.join('\n')}`);
    assert.match(st.text, /on the CPU/, st.text);
    assert.ok(await countdown, 'the status said how long was left');
    const ad = await page.evaluate(() => {
      const r = window.__adcanvas;
      return { width: r.width, height: r.height, placement: r.placement, data: Array.from(r.rgba), helperSteps: r.helper_steps };
    });
    assert.deepEqual([ad.width, ad.height], [64, 64]);
    assert.equal(ad.helperSteps, 4, 'the helper worker computed a guidance half of every step');
    assertProductExact(ad, decodePng(fs.readFileSync(PRODUCT)), ad.placement, 'the CPU ad');
    const colours = new Set();
    for (let o = 0; o < ad.data.length; o += 4) colours.add((ad.data[o] << 16) | (ad.data[o + 1] << 8) | ad.data[o + 2]);
    assert.ok(colours.size > 64, `the background is generated: ${colours.size} colours`);
    // The native CLI makes the same ad from the same photo, prompt, seed and settings (the page's
    // defaults are generate's): one pipeline and one pack, in the browser and on the command line,
    // in one process or, here, two workers each computing one guidance half.
    assertSameAsCli(ad, ['--product', PRODUCT, '--prompt', 'on a wooden table in a sunny kitchen, product photography',
      '--size', '64', '--steps', '4', '--seed', '7'], 'the CPU ad');
    // From now on the page says how long an ad takes here, before it is made.
    const again = await uploadAndWait(page, PRODUCT);
    assert.match(again.text, /An ad at 64 × 64 with 4 steps takes about [\d.]+ s on this computer's CPU/, again.text);

    // The helper dies mid-ad without a word (it closes itself after sending its second half, so
    // no error event reaches the studio's worker): the studio's worker stops waiting for it,
    // computes the missing halves itself, and makes the same ad to the byte; later ads do not
    // wait for the lost helper.
    const named = await Promise.all(page.workers().map(async (w) => [await w.evaluate(() => self.name), w]));
    const helper = named.find(([name]) => name === 'adcanvas helper')?.[1];
    assert.ok(helper, `the helper worker is listed: ${named.map(([n]) => n)}`);
    await helper.evaluate(() => {
      const post = MessagePort.prototype.postMessage;
      let halves = 0;
      MessagePort.prototype.postMessage = function (data, transfer) {
        post.call(this, data, transfer);
        if (data?.half && ++halves === 2) self.close();
      };
    });
    await setUpSmallAd(page, 6, 'on a wooden table in a sunny kitchen, product photography');
    await page.click('#generate');
    const alone = await waitForAd(page);
    assert.equal(alone.state, 'done', `status after the helper died: ${alone.text}\nconsole:\n${b.consoleLines.join('\n')}`);
    const rescued = await page.evaluate(() => ({ ...window.__adcanvas, data: Array.from(window.__adcanvas.rgba), helperSteps: window.__adcanvas.helper_steps }));
    assert.ok(rescued.helperSteps >= 1 && rescued.helperSteps < 6, `the helper computed some halves, not all: ${rescued.helperSteps}`);
    assertProductExact(rescued, decodePng(fs.readFileSync(PRODUCT)), rescued.placement, 'the ad whose helper died');
    assertSameAsCli(rescued, ['--product', PRODUCT, '--prompt', 'on a wooden table in a sunny kitchen, product photography',
      '--size', '64', '--steps', '6', '--seed', '7'], 'the ad whose helper died');
    assert.ok(b.consoleLines.some((l) => /did not answer/.test(l)), `the worker says why it went on alone:\n${b.consoleLines.join('\n')}`);
    await page.click('#generate');
    const after = await waitForAd(page);
    assert.equal(after.state, 'done', after.text);
    assert.equal(await page.evaluate(() => window.__adcanvas.helper_steps), 0, 'the next ad does not pair with the lost helper');

    // Asked for the GPU only (?device=gpu), the page explains what is missing instead.
    await page.goto(`${baseUrl}?device=gpu`, { waitUntil: 'load' });
    const box = page.locator('#webgpu-error');
    await box.waitFor({ state: 'visible', timeout: MINUTE });
    const text = (await box.textContent()).trim();
    assert.match(text, /WebGPU/, `#webgpu-error mentions WebGPU: ${text}`);
    assert.match(text, /chrome|edge|firefox|safari|browser|enable|flag|update|driver/i,
      `#webgpu-error says how to get WebGPU: ${text}`);
    assert.equal(await page.locator('#generate').isDisabled(), true, 'Generate is disabled without WebGPU');
    assert.equal((await statusOf(page)).state, 'error');
    // Give late promise rejections a moment to surface.
    await page.waitForTimeout(500);
    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');
  } finally {
    await b.close();
  }
});

test('a photo on a busy background: the cut-out network finds the product, as the CLI does, and an ad is made', { timeout: LOAD_TIMEOUT + GENERATE_TIMEOUT + 2 * MINUTE }, async () => {
  // A held-out photographic ad (a product and a photograph the network never trained on), whose
  // exact alpha is known; the border-grown mask refuses it (tests/cutout_network.rs).
  const photo = path.join(FIXTURES, 'busy_photos', 'heldout_17.jpg');
  const exact = decodePng(fs.readFileSync(path.join(FIXTURES, 'busy_photos', 'heldout_17_alpha.png')));
  // A server of its own, to see when the network's file is downloaded.
  const own = await startServer(DIST, 0, { verbose: true });
  const b = await launch(WEBGPU_OFF);
  try {
    const { page } = b;
    await page.goto(own.url, { waitUntil: 'load' });
    await waitForState(page, ['ready'], LOAD_TIMEOUT, 'loading the page');
    const segmenterGets = () => own.requests.filter((l) => /"GET \/models\/default\/segmenter\.safetensors/.test(l)).length;
    assert.equal(segmenterGets(), 0, 'the cut-out network is not part of the first visit\'s download');
    const up = await uploadAndWait(page, photo);
    assert.equal(up.state, 'ready', `the busy photo was refused: ${up.text}`);
    assert.equal(segmenterGets(), 1, 'the first busy photo fetches the cut-out network, once');
    assert.match(await page.locator('#mask-info').textContent(), /cut-out network/);
    const { width, height, alpha } = await previewAlpha(page);
    assert.deepEqual([width, height], [exact.width, exact.height]);
    let both = 0, either = 0;
    for (let i = 0; i < alpha.length; i++) {
      const ours = alpha[i] >= 128, truth = exact.data[4 * i] >= 128;
      both += ours && truth; either += ours || truth;
    }
    // 0.84 natively too (tests/cutout_network.rs holds the network's quality on four such photos).
    assert.ok(both / either >= 0.8, `IoU with the exact alpha ${(both / either).toFixed(3)}`);
    // The CLI cuts the same photo out the same way (its network on the native CPU path).
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'adcanvas-cutout-'));
    execFileSync(CLI, ['mask', '--product', photo, '--out', path.join(dir, 'mask.png'), '--cutout', path.join(dir, 'cutout.png'),
      '--device', 'cpu', '--model', path.join(DIST, 'models', 'default')], { stdio: ['ignore', 'ignore', 'pipe'] });
    const cli = decodePng(fs.readFileSync(path.join(dir, 'cutout.png')));
    let differ = 0;
    for (let i = 0; i < alpha.length; i++) differ += Math.abs(cli.data[4 * i + 3] - alpha[i]) > 2;
    assert.ok(differ <= alpha.length / 200, `${differ} of ${alpha.length} cut-out pixels differ between the page and the CLI`);

    await page.selectOption('#size', '64');
    await page.fill('#steps', '2');
    await page.fill('#prompt', 'on a wooden table in a sunny kitchen');
    await page.click('#generate');
    const st = await waitForAd(page);
    assert.equal(st.state, 'done', `${st.text}\nconsole:\n${b.consoleLines.join('\n')}`);
    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');
  } finally {
    await b.close();
    own.proc.kill();
  }
});

test('a GPU lost mid-run: the page keeps the photo and settings and goes on on the CPU', { timeout: 2 * LOAD_TIMEOUT + GENERATE_TIMEOUT }, async () => {
  const b = await launch(WEBGPU_ON);
  try {
    const { page } = b;
    await openReady(page, b.consoleLines, '?device=gpu');
    assert.equal(await page.evaluate(() => document.body.dataset.device), 'gpu');
    await setUpSmallAd(page, 2, 'on a wooden table');
    // The studio's worker loses its GPU: every submission to the queue fails from now on.
    const [worker] = page.workers();
    assert.ok(worker, 'the studio runs in a worker');
    await worker.evaluate(() => {
      GPUQueue.prototype.submit = function () { throw new Error('test: the GPU device was lost'); };
    });
    await page.click('#generate');
    const crashed = await waitForAd(page);
    assert.equal(crashed.state, 'error', crashed.text);
    assert.match(crashed.text, /stopped.*photo and settings are kept/s, crashed.text);
    assert.equal(await page.locator('#generate').isDisabled(), true, 'no Generate on a lost engine');
    const link = page.locator('#continue-on-cpu-link');
    await link.waitFor({ state: 'visible', timeout: MINUTE });

    await link.click();
    await page.waitForFunction(() => /Photo ready/.test(document.getElementById('status').textContent), null,
      { timeout: LOAD_TIMEOUT, polling: 250 });
    assert.equal(new URL(page.url()).searchParams.get('device'), 'cpu');
    assert.equal(await page.evaluate(() => document.body.dataset.device), 'cpu');
    assert.deepEqual(
      await page.evaluate(() => ['size', 'steps', 'seed', 'prompt'].map((id) => document.getElementById(id).value)),
      ['64', '2', '7', 'on a wooden table'], 'the settings came along');
    await page.click('#generate');
    const st = await waitForAd(page);
    assert.equal(st.state, 'done', `${st.text}\nconsole:\n${b.consoleLines.join('\n')}`);
    const ad = await page.evaluate(() => {
      const r = window.__adcanvas;
      return { width: r.width, height: r.height, placement: r.placement, data: Array.from(r.rgba) };
    });
    assertProductExact(ad, decodePng(fs.readFileSync(PRODUCT)), ad.placement, 'the ad made on the CPU after the crash');
  } finally {
    await b.close();
  }
});

test('the GPU device destroyed mid-generation: a message, and the page reloads on the CPU with the photo and settings', { timeout: 2 * LOAD_TIMEOUT + GENERATE_TIMEOUT }, async () => {
  const b = await launch(WEBGPU_ON);
  try {
    const { page } = b;
    await openReady(page, b.consoleLines, '?device=gpu');
    await setUpSmallAd(page, 2, 'on a wooden table');
    // The device itself goes away the next time the studio records GPU work, as when the driver
    // resets or the tab's GPU process dies: device.destroy(), and `lost` resolves.
    const [worker] = page.workers();
    await worker.evaluate(() => {
      const record = GPUDevice.prototype.createCommandEncoder;
      GPUDevice.prototype.createCommandEncoder = function (...args) {
        this.destroy();
        return record.apply(this, args);
      };
    });
    await page.click('#generate');
    const lost = await waitForAd(page);
    assert.equal(lost.state, 'error', lost.text);
    assert.match(lost.text, /photo and settings are kept/, lost.text);
    const link = page.locator('#continue-on-cpu-link');
    await link.waitFor({ state: 'visible', timeout: MINUTE });
    await link.click();
    await page.waitForFunction(() => /Photo ready/.test(document.getElementById('status').textContent), null,
      { timeout: LOAD_TIMEOUT, polling: 250 });
    assert.equal(await page.evaluate(() => document.body.dataset.device), 'cpu');
    assert.equal(await page.locator('#prompt').inputValue(), 'on a wooden table', 'the prompt came along');
    await page.click('#generate');
    const st = await waitForAd(page);
    assert.equal(st.state, 'done', st.text);
    assert.equal(new URL(page.url()).searchParams.get('device'), 'cpu');
  } finally {
    await b.close();
  }
});

/** Drags the mask editor's brush (`size` screen px) through `points`, given as fractions of the
 * editor's view of the photo. */
async function paint(page, editor, points, size) {
  await editor.locator('.adc-mask-size').fill(String(size));
  // Each point goes through `hover`, which scrolls the canvas into view and waits for it to stand
  // still: the page's layout can still be settling (a preview image loading) when the editor opens,
  // and a pointer aimed by an earlier bounding box then lands beside the canvas.
  const canvas = editor.locator('.adc-mask-canvas');
  const box = await canvas.boundingBox();
  const at = ([fx, fy]) => ({ position: { x: fx * box.width, y: fy * box.height } });
  await canvas.hover(at(points[0]));
  await page.mouse.down();
  for (let k = 1; k < points.length; k++) {
    const [a, b] = [points[k - 1], points[k]];
    for (let s = 1; s <= 4; s++) await canvas.hover(at([a[0] + (b[0] - a[0]) * s / 4, a[1] + (b[1] - a[1]) * s / 4]));
  }
  await page.mouse.up();
  await editor.locator('.adc-mask-undo:enabled').waitFor({ timeout: 10_000 })
    .catch(() => { throw new Error('the stroke never reached the brush canvas (Undo stayed disabled)'); });
}

/** The cut-out preview's RGBA (what the studio keeps of the photo), read back through a canvas. */
async function previewRgba(page) {
  return page.locator('#mask-preview').evaluate(async (img) => {
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    return { width: c.width, height: c.height, data: Array.from(ctx.getImageData(0, 0, c.width, c.height).data) };
  });
}

/** The "product covers N% of the photo" figure of the mask caption. */
async function maskArea(page) {
  const text = await page.locator('#mask-info').textContent();
  const m = /covers ([\d.]+)%/.exec(text);
  assert.ok(m, `mask caption: ${text}`);
  return Number(m[1]);
}

test('the brush: a photo the cut-out refuses is painted by hand and made into an ad; a cut-out is touched up, with undo', { timeout: LOAD_TIMEOUT + GENERATE_TIMEOUT + 3 * MINUTE }, async () => {
  const b = await launch(WEBGPU_ON);
  try {
    const { page } = b;
    await openReady(page, b.consoleLines);
    const editor = page.locator('#mask-editor');

    // A busy photo: the automatic cut-out refuses it, and the brush opens over it instead.
    const busy = await uploadAndWait(page, path.join(FIXTURES, 'busy.jpg'));
    assert.equal(busy.state, 'error');
    assert.match(busy.text, /(not plain enough|not sure where the product ends|No product found).*paint over the product below/s, busy.text);
    assert.equal(await editor.locator('.adc-mask-canvas').isVisible(), true, 'the brush is offered');
    assert.equal(await page.locator('#generate').isDisabled(), true, 'nothing to generate from yet');
    // Nothing painted: "Use this mask" is refused with the reason, and the editor stays.
    await editor.locator('.adc-mask-apply').click();
    await page.waitForFunction(() => /painted mask: No product found/.test(document.getElementById('status').textContent), null, { timeout: MINUTE });
    assert.equal(await editor.locator('.adc-mask-canvas').isVisible(), true, 'the editor stays for another try');

    // A dab and a short stroke in the middle of the photo (96 × 72): small enough to be placed
    // in a 64² ad at its own size, so that every fully painted pixel can be checked exactly.
    await paint(page, editor, [[0.45, 0.5], [0.55, 0.5]], 60);
    await editor.locator('.adc-mask-apply').click();
    await page.waitForFunction(() => /mask from your brush/.test(document.getElementById('mask-info').textContent), null, { timeout: MINUTE });
    assert.equal((await statusOf(page)).state, 'ready');
    assert.equal(await editor.locator('.adc-mask-canvas').isVisible(), false, 'the editor closes once the mask is taken');
    const cut = await previewRgba(page);
    assert.deepEqual([cut.width, cut.height], [96, 72], 'the mask is painted at the photo\'s size');
    let [x0, y0, x1, y1, solid] = [cut.width, cut.height, -1, -1, 0];
    for (let j = 0; j < cut.height; j++) {
      for (let i = 0; i < cut.width; i++) {
        const a = cut.data[(j * cut.width + i) * 4 + 3];
        if (a === 255) solid++;
        if (a >= 3) [x0, y0, x1, y1] = [Math.min(x0, i), Math.min(y0, j), Math.max(x1, i), Math.max(y1, j)];
      }
    }
    assert.ok(solid >= 60, `the painted product has ${solid} fully covered pixels`);
    assert.ok(x0 > 20 && x1 < 76 && y0 > 15 && y1 < 57, `painted where the brush went: (${x0},${y0})–(${x1},${y1})`);

    await page.selectOption('#size', '64');
    await page.fill('#steps', '2');
    await page.fill('#seed', '7');
    await page.fill('#prompt', 'on a wooden table');
    await page.click('#generate');
    const done = await waitForAd(page);
    assert.equal(done.state, 'done', `generation: ${done.text}`);
    const ad = await page.evaluate(() => ({ ...window.__adcanvas, rgba: Array.from(window.__adcanvas.rgba) }));
    const p = ad.placement;
    assert.deepEqual([p.w, p.h], [x1 - x0 + 1, y1 - y0 + 1], 'the painted part is the product, placed at its own size');
    let differ = 0;
    for (let j = y0; j <= y1; j++) {
      for (let i = x0; i <= x1; i++) {
        const f = (j * cut.width + i) * 4;
        if (cut.data[f + 3] !== 255) continue;
        const o = ((p.y + j - y0) * ad.width + p.x + i - x0) * 4;
        if ([0, 1, 2].some((c) => ad.rgba[o + c] !== cut.data[f + c])) differ++;
      }
    }
    assert.equal(differ, 0, `${differ} of ${solid} painted product pixels differ in the ad`);

    // An automatic cut-out touched up: a stroke erased and undone leaves the mask as it was;
    // a stroke erased and kept takes a band out of the product.
    const white = await uploadAndWait(page, path.join(FIXTURES, 'product_white.jpg'));
    assert.equal(white.state, 'ready', white.text);
    const before = await maskArea(page);
    await page.click('#mask-edit');
    await editor.locator('.adc-mask-erase').click();
    await paint(page, editor, [[0.2, 0.5], [0.8, 0.5]], 30);
    await editor.locator('.adc-mask-undo').click();
    await editor.locator('.adc-mask-apply').click();
    await page.waitForFunction(() => /mask from your brush/.test(document.getElementById('mask-info').textContent), null, { timeout: MINUTE });
    const undone = await maskArea(page);
    assert.ok(Math.abs(undone - before) <= 0.2, `undo gives the cut-out back: ${before}% → ${undone}%`);
    await page.click('#mask-edit');
    await editor.locator('.adc-mask-erase').click();
    await paint(page, editor, [[0.2, 0.5], [0.8, 0.5]], 30);
    await editor.locator('.adc-mask-apply').click();
    await page.waitForFunction((was) => /mask from your brush/.test(document.getElementById('mask-info').textContent) &&
      !document.getElementById('mask-info').textContent.includes(`covers ${was}%`), undone.toFixed(1), { timeout: MINUTE });
    const erased = await maskArea(page);
    assert.ok(erased < undone - 2, `erasing a band takes it from the product: ${undone}% → ${erased}%`);
    const band = await previewRgba(page);
    const mid = (Math.round(band.height / 2) * band.width + Math.round(band.width / 2)) * 4 + 3;
    assert.equal(band.data[mid], 0, 'the middle of the erased band is background');
    assert.equal((await statusOf(page)).state, 'ready');
    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');
  } finally {
    await b.close();
  }
});

/** Decodes an image file's bytes in the page: `{ width, height }`. */
async function decodeInPage(page, bytes, type) {
  return page.evaluate(async ([data, mime]) => {
    const bitmap = await createImageBitmap(new Blob([new Uint8Array(data)], { type: mime }));
    return { width: bitmap.width, height: bitmap.height };
  }, [Array.from(bytes), type]);
}

test('studio controls: a pasted photo, a scene preset, a placement, the sampler, and JPEG/WebP downloads', { timeout: LOAD_TIMEOUT + 2 * GENERATE_TIMEOUT + 2 * MINUTE }, async () => {
  const b = await launch(WEBGPU_ON);
  try {
    const { page } = b;
    await openReady(page, b.consoleLines);

    // Ctrl+V of a copied image (Chromium names clipboard images image.png).
    await page.locator('#status').evaluate((e) => { e.dataset.state = 'test-pending'; });
    await page.evaluate((data) => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(data)], 'image.png', { type: 'image/png' }));
      document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true }));
    }, Array.from(fs.readFileSync(PRODUCT)));
    await waitForState(page, ['ready'], MINUTE, 'preparing the pasted photo');
    assert.equal(await page.locator('#file-name').textContent(), 'pasted-image.png');
    assert.match(await page.locator('#mask-info').textContent(), /32 × 32 px · mask from the transparency/);

    // A scene preset fills the prompt, which stays editable.
    await page.selectOption('#preset', { label: 'Beach at sunset' });
    assert.equal(await page.inputValue('#prompt'), 'on the sand of a beach at sunset, warm golden light');

    // The placements, as sizes this model makes (native 256, a multiple of 32).
    const placements = await page.locator('#placements option').evaluateAll((os) => os.map((o) => [o.dataset.placement, o.value]));
    assert.deepEqual(placements, [
      ['feed', '256x256'], ['portrait', '256x320'], ['story', '256x448'], ['video', '448x256'], ['link', '480x256'],
      ['feed-large', '512x512'], ['portrait-large', '512x640'], ['story-large', '512x896'], ['video-large', '896x512'],
      ['link-large', '960x512'],
    ]);
    await page.selectOption('#size', { label: '9:16 story / reel · 256 × 448' });
    await page.fill('#steps', '2');
    await page.fill('#seed', '7');
    await page.click('#generate');
    let done = await waitForAd(page);
    assert.equal(done.state, 'done', done.text);
    const first = await page.evaluate(() => ({ ...window.__adcanvas, rgba: Array.from(window.__adcanvas.rgba) }));
    assert.deepEqual([first.width, first.height], [256, 448], 'a story-sized ad');
    assertProductExact({ width: first.width, data: first.rgba }, decodePng(fs.readFileSync(PRODUCT)), first.placement, 'story ad');

    // Downloads: PNG, JPEG and WebP, named by prompt and seed, each a real image of the ad's size.
    for (const [format, type, magic] of [['png', 'image/png', '89504e47'], ['jpg', 'image/jpeg', 'ffd8ff'], ['webp', 'image/webp', '52494646']]) {
      await page.selectOption('#format', format);
      assert.equal(await page.locator('#quality-field').isVisible(), format !== 'png', `quality slider for ${format}`);
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
      assert.equal(download.suggestedFilename(), `adcanvas-on-the-sand-of-a-beach-at-sunset-warm-golden-light-seed7.${format}`);
      const bytes = fs.readFileSync(await download.path());
      assert.equal(bytes.subarray(0, magic.length / 2).toString('hex'), magic, `${format} file`);
      assert.deepEqual(await decodeInPage(page, bytes, type), { width: 256, height: 448 }, `${format} decodes`);
      if (format === 'png') {
        const png = decodePng(bytes);
        assert.deepEqual([...png.data], first.rgba, 'the PNG is the ad, pixel for pixel');
      }
    }

    // The sampler and guidance reach the pipeline: same seed, another sampler, another ad.
    await page.locator('#advanced summary').click();
    await page.selectOption('#scheduler', 'euler');
    await page.fill('#guidance', '5');
    await page.click('#generate');
    done = await waitForAd(page);
    assert.equal(done.state, 'done', done.text);
    const second = await page.evaluate(() => Array.from(window.__adcanvas.rgba));
    let changed = 0;
    for (let i = 0; i < second.length; i++) changed += second[i] !== first.rgba[i] ? 1 : 0;
    assert.ok(changed > second.length / 10, `another sampler makes another background (${changed} values differ)`);
    // Out of range: the form refuses it before anything runs.
    await page.fill('#guidance', '40');
    await page.click('#generate');
    assert.equal(await page.locator('#guidance').evaluate((e) => e.validity.rangeOverflow), true);
    assert.equal((await statusOf(page)).state, 'done', 'no generation started');
    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');
  } finally {
    await b.close();
  }
});

/** The cached copy of `file` (a path under the site) hashed in the page, or null. */
async function cachedSha256(page, file) {
  return page.evaluate(async (f) => {
    const r = await (await caches.open('adcanvas-v1')).match(new URL(f, location.href).href);
    if (!r) return null;
    const d = await crypto.subtle.digest('SHA-256', await r.arrayBuffer());
    return Array.from(new Uint8Array(d), (x) => x.toString(16).padStart(2, '0')).join('');
  }, file);
}

test('offline: a second visit loads the app and the model from the cache with the server gone; a corrupt cached file is fetched again', { timeout: 3 * LOAD_TIMEOUT + GENERATE_TIMEOUT + 2 * MINUTE }, async () => {
  // A server of its own, to stop: the page's origin (and so its service worker) is this one alone.
  let own = await startServer(DIST);
  const port = new URL(own.url).port;
  const b = await launch(WEBGPU_ON);
  const manifest = JSON.parse(fs.readFileSync(path.join(DIST, 'models', 'default', 'manifest.json'), 'utf8'));
  try {
    const { page } = b;
    await page.addInitScript(() => {
      window.__statuses = [];
      addEventListener('DOMContentLoaded', () => {
        const status = document.getElementById('status');
        new MutationObserver(() => window.__statuses.push(status.textContent)).observe(status, { childList: true, characterData: true, subtree: true });
      });
    });
    const load = async (url) => {
      await page.goto(url, { waitUntil: 'load' });
      await waitForState(page, ['ready'], LOAD_TIMEOUT, `loading ${url}`);
      return page.evaluate(() => window.__statuses);
    };

    // First visit: the downloads are counted in bytes and kept.
    let statuses = await load(own.url);
    const mb = (manifest.files.text_encoder.bytes / 1048576).toFixed(1);
    assert.ok(statuses.some((t) => new RegExp(`Downloading text_encoder\\.safetensors: [\\d.]+ of ${mb} MB`).test(t)),
      `byte-level progress on the first visit:\n${statuses.join('\n')}`);
    assert.equal(await page.evaluate(() => Boolean(navigator.serviceWorker.controller)), true, 'the service worker serves the page');
    for (const [component, entry] of Object.entries(manifest.files)) {
      // The cut-out network is fetched (and kept) with the first busy photo only.
      const want = component === 'segmenter' ? null : entry.sha256;
      assert.equal(await cachedSha256(page, `models/default/${entry.file}`), want, `${entry.file} is kept, checked`);
    }
    assert.ok(await cachedSha256(page, 'pkg/adcanvas_bg.wasm'), 'the wasm module is kept');

    // The server gone: the page, the module and the model come from the cache, and an ad is made.
    own.proc.kill();
    await new Promise((resolve) => own.proc.once('exit', resolve));
    statuses = await load(own.url);
    assert.ok(!statuses.some((t) => /Downloading/.test(t)), 'nothing is downloaded');
    await setUpSmallAd(page, 2, 'on a marble counter');
    await page.click('#generate');
    const done = await waitForAd(page);
    assert.equal(done.state, 'done', `an ad offline: ${done.text}`);
    const ad = await page.evaluate(() => ({ ...window.__adcanvas, rgba: Array.from(window.__adcanvas.rgba) }));
    assertProductExact({ width: ad.width, data: ad.rgba }, decodePng(fs.readFileSync(PRODUCT)), ad.placement, 'offline ad');
    // A busy photo offline, the cut-out network never fetched: the reason, and the brush.
    const busy = await uploadAndWait(page, path.join(FIXTURES, 'busy_photos', 'heldout_17.jpg'));
    assert.equal(busy.state, 'error');
    assert.match(busy.text, /not plain enough.*cut-out network for busy backgrounds could not be loaded.*paint over the product below/s, busy.text);
    // The page sets the error, then opens the brush on the decoded photo: wait for it, not a race.
    await page.locator('#mask-editor').waitFor({ state: 'visible', timeout: MINUTE });

    // A cached file gone bad is found by its hash, dropped and fetched again.
    await page.evaluate(async () => {
      const cache = await caches.open('adcanvas-v1');
      const url = new URL('models/default/unet.safetensors', location.href).href;
      const r = await cache.match(url);
      const bytes = new Uint8Array(await r.arrayBuffer());
      bytes[bytes.length >> 1] ^= 0xff;
      await cache.put(url, new Response(bytes, { headers: r.headers }));
    });
    assert.notEqual(await cachedSha256(page, 'models/default/unet.safetensors'), manifest.files.unet.sha256);
    own = await startServer(DIST, port);
    statuses = await load(own.url);
    assert.ok(statuses.some((t) => /Downloading unet\.safetensors/.test(t)), `the bad file is fetched again:\n${statuses.join('\n')}`);
    assert.ok(!statuses.some((t) => /Downloading text_encoder/.test(t)), 'the good ones are not');
    assert.equal(await cachedSha256(page, 'models/default/unet.safetensors'), manifest.files.unet.sha256, 'and kept, good');
    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');
  } finally {
    await b.close();
    if (own.proc.exitCode === null) own.proc.kill();
  }
});

/** Mean absolute difference of two RGBA arrays' colour channels. */
function meanDiff(a, b) {
  let sum = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    if (i % 4 === 3) continue;
    sum += Math.abs(a[i] - b[i]);
    n++;
  }
  return sum / n;
}

test('variants: two ads per run, one picked; more like this keeps its look; refine stays closer still', { timeout: LOAD_TIMEOUT + 2 * GENERATE_TIMEOUT + 2 * MINUTE }, async () => {
  const b = await launch(WEBGPU_ON);
  try {
    const { page } = b;
    await openReady(page, b.consoleLines);
    await setUpSmallAd(page, 8, 'on a wooden table');
    await page.selectOption('#variant-count', '2');
    const product = decodePng(fs.readFileSync(PRODUCT));
    const shownAd = () => page.evaluate(() => ({ ...window.__adcanvas, rgba: Array.from(window.__adcanvas.rgba) }));

    await page.click('#generate');
    await page.waitForFunction(() => document.querySelectorAll('#variants li').length === 2 && document.getElementById('status').dataset.state !== 'generating',
      null, { timeout: GENERATE_TIMEOUT, polling: 250 });
    assert.equal((await statusOf(page)).state, 'done', (await statusOf(page)).text);
    assert.deepEqual(await page.locator('#variants li span').allTextContents(), ['seed 7', 'seed 8']);
    const second = await shownAd();
    assert.equal(second.seed, 8, 'the last ad made is shown');
    await page.locator('#variants li button').first().click();
    const first = await shownAd();
    assert.equal(first.seed, 7, 'a picked ad is shown');
    const apart = meanDiff(first.rgba, second.rgba);
    assert.ok(apart > 3, `the two variants differ (mean difference ${apart.toFixed(1)})`);
    for (const [ad, what] of [[first, 'variant 1'], [second, 'variant 2']]) {
      assertProductExact({ width: ad.width, data: ad.rgba }, product, ad.placement, what);
    }
    // The download is the picked ad.
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    assert.equal(download.suggestedFilename(), 'adcanvas-on-a-wooden-table-seed7.png');
    assert.deepEqual([...decodePng(fs.readFileSync(await download.path())).data], first.rgba);

    // More like this: two ads from the picked one's pixels, closer to it than the variants are to each other.
    await page.click('#more-like-this');
    await page.waitForFunction(() => document.querySelectorAll('#variants li').length === 3 && document.getElementById('status').dataset.state !== 'generating',
      null, { timeout: GENERATE_TIMEOUT, polling: 250 });
    assert.equal((await statusOf(page)).state, 'done', (await statusOf(page)).text);
    assert.deepEqual(await page.locator('#variants li span').allTextContents(), ['seed 7', 'seed 108, from seed 7', 'seed 209, from seed 7']);
    const like = await shownAd();
    assertProductExact({ width: like.width, data: like.rgba }, product, like.placement, 'more like this');
    const near = meanDiff(like.rgba, first.rgba);
    // (From noise, another seed's ad is as far as the two variants are: 31 against 38 here, before
    // "more like this" started from the picked ad's pixels.)
    assert.ok(near < 0.5 * apart, `a variation (${near.toFixed(1)}) is much closer to its ad than another seed's ad is (${apart.toFixed(1)})`);

    // Refine: the first ad once more at a low strength, nearer still.
    await page.locator('#variants li button').first().click();
    await page.click('#refine');
    await page.waitForFunction(() => document.querySelectorAll('#variants li').length === 4 && document.getElementById('status').dataset.state !== 'generating',
      null, { timeout: GENERATE_TIMEOUT, polling: 250 });
    const refined = await shownAd();
    assert.equal(refined.seed, 7);
    const nearer = meanDiff(refined.rgba, first.rgba);
    assert.ok(nearer > 0.2 && nearer < near, `refined (${nearer.toFixed(1)}) changes the ad, less than a variation does (${near.toFixed(1)})`);
    assertProductExact({ width: refined.width, data: refined.rgba }, product, refined.placement, 'refined');
    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');
  } finally {
    await b.close();
  }
});

test('progress: step previews of the ad appear on the canvas before it is done', { timeout: LOAD_TIMEOUT + GENERATE_TIMEOUT + MINUTE }, async () => {
  const b = await launch(WEBGPU_ON);
  try {
    const { page } = b;
    await openReady(page, b.consoleLines);
    await setUpSmallAd(page, 10, 'on the sand of a beach at sunset');
    // Each preview drawn, with the step it showed and what the canvas held then.
    await page.evaluate(() => {
      window.__previews = [];
      const canvas = document.getElementById('result');
      new MutationObserver(() => {
        if (!canvas.dataset.preview || canvas.dataset.ready === '1') return;
        const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let sum = 0;
        let sq = 0;
        for (let i = 0; i < px.length; i += 4) { sum += px[i + 1]; sq += px[i + 1] * px[i + 1]; }
        const n = px.length / 4;
        window.__previews.push({ step: Number(canvas.dataset.preview), width: canvas.width, height: canvas.height,
          spread: Math.sqrt(sq / n - (sum / n) ** 2), status: document.getElementById('status').dataset.state });
      }).observe(canvas, { attributes: true, attributeFilter: ['data-preview'] });
    });
    await page.click('#generate');
    const done = await waitForAd(page);
    assert.equal(done.state, 'done', done.text);
    const previews = await page.evaluate(() => window.__previews);
    // 10 steps, a preview every 2: after steps 2, 4, 6 and 8 (the last step shows the ad itself).
    assert.deepEqual(previews.map((p) => p.step), [2, 4, 6, 8], JSON.stringify(previews));
    for (const p of previews) {
      assert.deepEqual([p.width, p.height, p.status], [64, 64, 'generating'], 'drawn at the ad\'s size while it is being made');
      assert.ok(p.spread > 1, `a picture, not a flat fill (spread ${p.spread.toFixed(2)})`);
    }
    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');
  } finally {
    await b.close();
  }
});

test('warm-up: asked for on WebGPU, the page compiles an ad\'s kernels before a photo is chosen; the ad after it is the seller\'s', { timeout: LOAD_TIMEOUT + 2 * GENERATE_TIMEOUT + MINUTE }, async () => {
  const b = await launch(WEBGPU_ON);
  try {
    const { page } = b;
    // A returning seller's settings: the warm-up compiles an ad of these.
    await page.addInitScript(() => {
      localStorage.setItem('adcanvas.settings', JSON.stringify({ size: '64', steps: '2', seed: '7', prompt: 'a jar on a marble table' }));
    });
    // On a software adapter the warm-up is off unless asked for (?warmup=on).
    await openReady(page, b.consoleLines, '?device=gpu&warmup=on');
    await page.waitForFunction(() => ['done', 'stopped', 'failed'].includes(document.body.dataset.warmUp), null,
      { timeout: GENERATE_TIMEOUT, polling: 250 });
    const warm = await page.evaluate(() => ({ state: document.body.dataset.warmUp, ms: Number(document.body.dataset.warmUpMs) }));
    assert.equal(warm.state, 'done', `the warm-up finished: ${JSON.stringify(warm)}\nconsole:\n${b.consoleLines.join('\n')}`);
    assert.ok(warm.ms > 0, `the warm-up took time: ${warm.ms} ms`);
    console.log(`# warm-up: ${(warm.ms / 1000).toFixed(1)} s`);
    // Its made-up product is not the studio's: there is none until the seller chooses one.
    assert.equal(await page.locator('#generate').isEnabled(), false, 'Generate waits for a photo after the warm-up');
    const up = await uploadAndWait(page, PRODUCT);
    assert.equal(up.state, 'ready', `uploading the product failed: ${up.text}`);
    const clicked = Date.now();
    await page.click('#generate');
    const st = await waitForAd(page);
    assert.equal(st.state, 'done', `status after generation: ${st.text}`);
    console.log(`# the first ad after the warm-up: ${((Date.now() - clicked) / 1000).toFixed(1)} s`);
    const ad = await page.evaluate(() => {
      const r = window.__adcanvas;
      return { width: r.width, height: r.height, placement: r.placement, data: Array.from(r.rgba) };
    });
    assert.deepEqual([ad.width, ad.height], [64, 64], 'the ad has the settings\' size');
    assertProductExact(ad, decodePng(fs.readFileSync(PRODUCT)), ad.placement, 'the ad after the warm-up');
    const colours = new Set();
    for (let o = 0; o < ad.data.length; o += 4) colours.add((ad.data[o] << 16) | (ad.data[o + 1] << 8) | ad.data[o + 2]);
    assert.ok(colours.size > 64, `the background is generated: ${colours.size} colours`);
    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');
  } finally {
    await b.close();
  }
});

test('privacy: only GETs of the app\'s own files, never a body, the model not fetched again, and the page runs under its CSP', { timeout: 2 * LOAD_TIMEOUT + GENERATE_TIMEOUT + MINUTE }, async () => {
  // A server of its own whose log is every request it answered.
  const own = await startServer(DIST, 0, { verbose: true });
  const b = await launch(WEBGPU_ON);
  try {
    const { page } = b;
    const seen = [];
    b.context.on('request', (r) => seen.push({ url: r.url(), method: r.method(), body: r.postDataBuffer()?.length ?? 0 }));
    await page.addInitScript(() => {
      window.__violations = [];
      addEventListener('securitypolicyviolation', (e) => window.__violations.push(`${e.effectiveDirective} ${e.blockedURI}`));
    });
    const response = await page.goto(own.url, { waitUntil: 'load' });
    assert.match(response.headers()['content-security-policy'] || '', /connect-src 'self'/, 'the page is sent with its CSP');
    await waitForState(page, ['ready'], LOAD_TIMEOUT, 'loading the page');
    await setUpSmallAd(page, 2, 'on a marble counter');
    await page.click('#generate');
    const done = await waitForAd(page);
    assert.equal(done.state, 'done', done.text);
    await Promise.all([page.waitForEvent('download'), page.click('#download')]);

    const origin = new URL(own.url).origin;
    const foreign = seen.filter((r) => !r.url.startsWith(`${origin}/`) && !/^(blob|data):/.test(r.url));
    assert.deepEqual(foreign, [], 'no request leaves the studio\'s own origin');
    assert.deepEqual(seen.filter((r) => r.method !== 'GET' || r.body > 0), [], 'only GETs, never a body');
    const logged = own.requests.slice();
    assert.ok(logged.length > 5 && logged.every((l) => /"GET \/(|index\.html|sw\.js|www\/[\w.-]+|pkg\/[\w./-]+|models\/default\/[\w.-]+)(\?[^ ]*)? HTTP/.test(l)),
      `the server answered only the app's own files:\n${logged.join('\n')}`);

    // A second visit: the model comes from the cache, the server is never asked for it.
    own.requests.length = 0;
    await page.reload({ waitUntil: 'load' });
    await waitForState(page, ['ready'], LOAD_TIMEOUT, 'the second visit');
    assert.deepEqual(own.requests.filter((l) => /\.safetensors|tokenizer\.json|adcanvas_bg\.wasm /.test(l)), [],
      'no model file or wasm module is downloaded again');
    assert.deepEqual(await page.evaluate(() => window.__violations), [], 'nothing the studio does is refused by its CSP');
    // And the policy holds: a script on the page that tried to send the photo elsewhere is stopped.
    const sent = await page.evaluate(() => fetch('https://collector.example/upload', { method: 'POST', body: 'photo' })
      .then(() => 'sent', () => 'blocked'));
    assert.equal(sent, 'blocked');
    assert.ok((await page.evaluate(() => window.__violations)).some((v) => v.startsWith('connect-src')), 'refused by connect-src');
    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');
  } finally {
    await b.close();
    own.proc.kill();
  }
});

test('corrupt upload shows an error and the page stays usable', { timeout: LOAD_TIMEOUT + 2 * MINUTE }, async () => {
  const b = await launch(WEBGPU_ON);
  try {
    const { page } = b;
    await openReady(page, b.consoleLines);

    const bad = await uploadAndWait(page, CORRUPT);
    assert.equal(bad.state, 'error', `corrupt.png must give an error state, got '${bad.state}': ${bad.text}`);
    // "Could not use corrupt.png: <message from prepare>" - the message part must not be empty.
    const detail = bad.text.replace(/^.*?corrupt\.png:?/i, '').trim();
    assert.ok(detail.length >= 5, `error message explains the problem: ${bad.text}`);
    assert.equal(await page.locator('#generate').isDisabled(), true, 'Generate is disabled without a valid photo');
    assert.equal(await page.locator('#file').isEnabled(), true, 'file input still usable');
    assert.equal(await page.locator('#mask-preview').isVisible(), false, 'no mask preview for a corrupt file');

    // A busy reference: a clear message, nothing lost; with PFV off it is used whole.
    await page.setInputFiles('#reference', REFERENCE_BUSY);
    await page.waitForFunction(() => /could not be found automatically/.test(document.getElementById('status').textContent), null, { timeout: MINUTE });
    const refErr = await statusOf(page);
    assert.match(refErr.text, /reference_beach\.png.*could not be found automatically/s, `busy reference message: ${refErr.text}`);
    await page.locator('#reference-field summary').click(); // the ablation switches sit in a <details>
    await page.uncheck('#pfv');
    await page.setInputFiles('#reference', REFERENCE_BUSY);
    await page.waitForFunction(() => /Style reference: reference_beach/.test(document.getElementById('status').textContent), null, { timeout: MINUTE });
    // The reference in use shows beside the prompt.
    assert.equal(await page.locator('#reference-thumb').isVisible(), true, 'the reference beside the prompt');
    assert.equal(await page.locator('#reference-thumb img').evaluate(async (img) => { await img.decode(); return img.naturalWidth; }), 128);

    const good = await uploadAndWait(page, PRODUCT);
    assert.equal(good.state, 'ready', `a valid upload after the error works: ${good.text}`);
    assert.equal(await page.locator('#mask-preview').isVisible(), true, 'mask preview is shown');
    assert.equal(await page.locator('#generate').isEnabled(), true, 'Generate is enabled after a valid upload');

    // A photo on white: the page's cut-out preview has the CLI's mask as its alpha
    // (tests/fixtures/product_white_mask.png is `adcanvas mask`'s output; tests/cli.rs holds it so).
    const white = await uploadAndWait(page, path.join(FIXTURES, 'product_white.jpg'));
    assert.equal(white.state, 'ready', `uploading product_white.jpg failed: ${white.text}`);
    const alpha = await previewAlpha(page);
    const cliMask = decodePng(fs.readFileSync(path.join(FIXTURES, 'product_white_mask.png')));
    assert.deepEqual([alpha.width, alpha.height], [cliMask.width, cliMask.height], 'cut-out preview at the photo\'s size');
    let differ = 0;
    for (let i = 0; i < alpha.alpha.length; i++) differ += alpha.alpha[i] !== cliMask.data[i * 4] ? 1 : 0;
    assert.equal(differ, 0, `${differ} pixels of the page's cut-out differ from the CLI's mask`);

    // The user's own mask for that photo (opaque = product): the preview takes it exactly.
    const own = new PNG({ width: 160, height: 120 });
    const inside = (x, y) => x >= 40 && x < 120 && y >= 20 && y < 100;
    for (let y = 0; y < 120; y++) {
      for (let x = 0; x < 160; x++) own.data.set(inside(x, y) ? [255, 255, 255, 255] : [0, 0, 0, 0], (y * 160 + x) * 4);
    }
    const ownPath = path.join(os.tmpdir(), `adcanvas-own-mask-${process.pid}.png`);
    fs.writeFileSync(ownPath, PNG.sync.write(own));
    await page.setInputFiles('#mask-file', ownPath);
    await page.waitForFunction(() => /your mask/.test(document.getElementById('mask-info').textContent), null, { timeout: MINUTE });
    const ownAlpha = (await previewAlpha(page)).alpha;
    let wrong = 0;
    for (let i = 0; i < ownAlpha.length; i++) wrong += ownAlpha[i] !== (inside(i % 160, Math.floor(i / 160)) ? 255 : 0) ? 1 : 0;
    assert.equal(wrong, 0, `${wrong} pixels of the cut-out differ from the user's mask`);
    assert.equal((await statusOf(page)).state, 'ready', 'the photo with the user\'s mask is ready to generate');

    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');
  } finally {
    await b.close();
  }
});

// PFV in the browser: the wasm build computes exactly what the native build and the NumPy
// reference do (tests/fixtures/pfv_cases.json, checked natively by tests/pfv_cases.rs).
// PFV is plain Rust (no GPU), so this runs with WebGPU off.
test('bad photos: each refused with its reason, the photo and settings before it kept; odd but real photos taken', { timeout: LOAD_TIMEOUT + GENERATE_TIMEOUT + 4 * MINUTE }, async () => {
  const b = await launch(WEBGPU_ON);
  try {
    const { page } = b;
    await openReady(page, b.consoleLines);
    const bad = (name) => path.join(FIXTURES, 'bad', name);
    const good = await uploadAndWait(page, PRODUCT);
    assert.equal(good.state, 'ready', good.text);
    await page.fill('#prompt', 'on a marble counter');
    await page.fill('#seed', '11');
    await page.selectOption('#size', '64');
    await page.fill('#steps', '2');
    const caption = await page.locator('#mask-info').textContent();
    // tests/bad_inputs.rs holds the studio's words for each; here the page must show them and keep
    // everything else.
    const refused = [
      ['empty.jpg', /file is empty/],
      ['truncated.jpg', /damaged or incomplete.*ends early/s],
      ['text_named.jpg', /not a PNG, JPEG or WebP image/],
      ['animated.gif', /not a PNG, JPEG or WebP image/],
      ['huge_12000x9000.jpg', /12000×9000 pixels.*Resize the photo/s],
      ['transparent.png', /fully transparent/],
    ];
    for (const [name, words] of refused) {
      const st = await uploadAndWait(page, bad(name));
      assert.equal(st.state, 'error', `${name}: ${st.text}`);
      assert.match(st.text, words, `${name}: the reason`);
      assert.match(st.text, /product_alpha_32\.png is still the photo in use/, `${name}: says which photo is kept`);
      assert.equal(await page.locator('#file-name').textContent(), 'product_alpha_32.png', `${name}: the photo kept`);
      assert.equal(await page.locator('#mask-info').textContent(), caption, `${name}: its cut-out kept`);
      assert.equal(await page.locator('#mask-preview').isVisible(), true, `${name}: the cut-out still shown`);
      assert.equal(await page.locator('#generate').isEnabled(), true, `${name}: Generate still works`);
      assert.equal(await page.locator('#prompt').inputValue(), 'on a marble counter', `${name}: the prompt kept`);
      assert.equal(await page.locator('#seed').inputValue(), '11', `${name}: the seed kept`);
    }
    // After all that, the kept photo still makes an ad with the settings as they were.
    await page.click('#generate');
    const done = await waitForAd(page);
    assert.equal(done.state, 'done', `generation after the refusals: ${done.text}`);
    const ad = await page.evaluate(() => ({ width: window.__adcanvas.width, height: window.__adcanvas.height, seed: window.__adcanvas.seed }));
    assert.deepEqual([ad.width, ad.height], [64, 64]);

    // Unusual but real photos are taken, upright and at their size.
    const taken = [
      ['cmyk.jpg', '96 × 72 px · mask from background removal'],
      ['grey16.png', '96 × 72 px · mask from background removal'],
      ['palette_transparent.png', '96 × 72 px · mask from the transparency'],
      ['animated.webp', '96 × 72 px · mask from background removal'],
      ['exif_rotated_product.jpg', '72 × 96 px · mask from background removal'],
    ];
    for (const [name, words] of taken) {
      const st = await uploadAndWait(page, bad(name));
      assert.equal(st.state, 'ready', `${name}: ${st.text}`);
      assert.ok((await page.locator('#mask-info').textContent()).startsWith(words), `${name}: ${await page.locator('#mask-info').textContent()}`);
      assert.equal(await page.locator('#file-name').textContent(), name);
    }
    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');
  } finally {
    await b.close();
  }
});

test('PFV in wasm matches the native/NumPy cases', { timeout: 3 * MINUTE }, async () => {
  const cases = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'pfv_cases.json'), 'utf8')).cases;
  const b = await launch(WEBGPU_OFF);
  try {
    const { page } = b;
    await page.goto(baseUrl, { waitUntil: 'load' });
    const got = await page.evaluate(async (cases) => {
      const wasm = await import(new URL('pkg/adcanvas.js', document.baseURI).href);
      await wasm.default();
      const results = cases.map((c) => {
        const r = wasm.pfv_visibility(new Float32Array(c.mask), c.width, c.height, c.patch, c.threshold,
          c.token_cols, c.token_rows);
        return { cols: r.cols, rows: r.rows, visible: Array.from(r.visible), token_keep: Array.from(r.token_keep) };
      });
      let error = null;
      try {
        wasm.pfv_visibility(new Float32Array(4), 2, 2, 16, 1.5, 1, 1);
      } catch (e) {
        error = String(e && e.message || e);
      }
      return { results, error };
    }, cases);
    assert.equal(got.results.length, cases.length);
    cases.forEach((c, i) => {
      const r = got.results[i];
      assert.deepEqual([r.cols, r.rows], [c.cols, c.rows], `${c.name}: grid size`);
      assert.deepEqual(r.visible, c.visible, `${c.name}: patch visibility`);
      assert.deepEqual(r.token_keep, c.token_keep, `${c.name}: token keep-list`);
    });
    assert.match(got.error || '', /threshold 1.5 must be between 0 and 1/, 'a bad threshold is a clear error');
  } finally {
    await b.close();
  }
});

// Our own GPU kernels (src/kernels, listed in shaders/) compiled by cubecl to WGSL and run by
// Chromium's WebGPU, and our CPU kernels compiled to wasm, each against the tensor ops they replace
// on the same device (src/nn/kernel_check.rs; natively tests/kernels.rs runs the same cases on
// lavapipe and the CPU). Odd shapes included.
test('our GPU kernels agree with the tensor ops in Chromium WebGPU, and our CPU kernels in wasm', { timeout: 10 * MINUTE }, async () => {
  const b = await launch(WEBGPU_ON);
  try {
    const { page } = b;
    await page.goto(baseUrl, { waitUntil: 'load' });
    const got = await page.evaluate(async () => {
      const wasm = await import(new URL('pkg/adcanvas.js', document.baseURI).href);
      await wasm.default();
      return { gpu: await wasm.check_kernels('gpu'), cpu: await wasm.check_kernels('cpu') };
    });
    assert.ok(got.gpu.length >= 12, `every case ran: ${JSON.stringify(got.gpu)}`);
    for (const c of got.gpu) {
      assert.ok(c.ran_ours, `${c.case}: our kernel ran on WebGPU`);
      assert.ok(c.agrees, `${c.case}: differs from the tensor ops by ${c.max_abs_diff} (largest ${c.largest})`);
    }
    assert.ok(got.gpu.some((c) => c.case.startsWith('attention')), `attention in one launch ran on WebGPU: ${JSON.stringify(got.gpu)}`);
    // The CPU path's kernels (src/kernels/cpu.rs) in wasm with SIMD128, attention and GEGLU included.
    for (const kernel of ['attention', 'geglu']) {
      assert.ok(got.cpu.some((c) => c.case.startsWith(kernel)), `the CPU checks ${kernel} too: ${JSON.stringify(got.cpu)}`);
    }
    for (const c of got.cpu) {
      assert.ok(c.ran_ours, `${c.case}: our kernel ran on the wasm CPU path`);
      assert.ok(c.agrees, `${c.case} (CPU): differs from the tensor ops by ${c.max_abs_diff} (largest ${c.largest})`);
    }
    assert.deepEqual(b.pageErrors, [], 'no page errors');
  } finally {
    await b.close();
  }
});

// ---------- the embeddable widget (www/widget.js, docs/WIDGET.md) ----------

/** A host page on its own origin (a second server) that embeds the widget from the app's origin;
 * `csp`: the host's Content-Security-Policy, if it has one. */
async function startHost(widgetAttributes, { csp = null, widgets = 1 } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'adcanvas-host-'));
  // The host's own picture, for the reference attribute (a cut-out: PFV hides its object).
  fs.copyFileSync(REFERENCE_CUTOUT, path.join(dir, 'brand-style.png'));
  fs.writeFileSync(path.join(dir, 'index.html'), `<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,">
${csp ? `<meta http-equiv="Content-Security-Policy" content="${csp}">` : ''}
<style>
  /* A host page's own rules must not reach inside the widget. */
  button, input, canvas, progress { display: none !important; }
</style>
<script>
  window.__events = [];
  window.__violations = [];
  document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.effectiveDirective));
  for (const type of ['adcanvas-ready', 'adcanvas-product', 'adcanvas-progress', 'adcanvas-generated', 'adcanvas-error', 'adcanvas-batch']) {
    document.addEventListener(type, async (e) => {
      const { png, ...rest } = e.detail || {};
      const entry = { type, detail: rest, widget: [...document.querySelectorAll('adcanvas-studio')].indexOf(e.target) };
      if (png) entry.png = Array.from(new Uint8Array(await png.arrayBuffer()));
      window.__events.push(entry);
    });
  }
</script>
<script type="module" src="${baseUrl}www/widget.js"></script>
</head><body><h1>A shop</h1>${`<adcanvas-studio ${widgetAttributes}></adcanvas-studio>`.repeat(widgets)}</body></html>`);
  const host = await startServer(dir);
  return { url: host.url, close: () => { host.proc.kill(); fs.rmSync(dir, { recursive: true, force: true }); } };
}

/** Waits for an event of `type`, or for any adcanvas-error unless `errorsEnd` is false (a batch
 * reports a bad photo as an error and goes on). */
async function waitForEvent(page, type, timeout, errorsEnd = true) {
  await page.waitForFunction(
    ([type, errorsEnd]) => window.__events.some((e) => e.type === type || (errorsEnd && e.type === 'adcanvas-error' && type !== 'adcanvas-error')),
    [type, errorsEnd],
    { timeout, polling: 250 },
  );
  return page.evaluate(() => window.__events.slice());
}

test('widget: embedded in another site, makes a banner ad with the product exact', { timeout: LOAD_TIMEOUT + GENERATE_TIMEOUT + 3 * MINUTE }, async () => {
  const host = await startHost('prompt="on a wooden table" reference="brand-style.png" size="96x64" position="left" steps="2" seed="7"');
  const b = await launch(WEBGPU_ON);
  const requests = [];
  b.context.on('request', (req) => requests.push(req.url()));
  try {
    const { page } = b;
    await page.goto(host.url, { waitUntil: 'load' });
    let events = await waitForEvent(page, 'adcanvas-ready', LOAD_TIMEOUT);
    const ready = events.find((e) => e.type === 'adcanvas-ready');
    assert.ok(ready, `the widget loaded its model: ${JSON.stringify(events)}\nconsole:\n${b.consoleLines.join('\n')}`);
    assert.equal(ready.detail.trained, true, 'the default model');
    assert.equal(ready.detail.nativeSize, 256);
    assert.equal(ready.detail.model, `${baseUrl}models/default/`, 'the model comes from where the widget lives');
    assert.equal(ready.detail.reference, true, 'the host page\'s style reference is in use');
    assert.equal(await page.locator('adcanvas-studio').locator('img.reference-thumb').isVisible(), true, 'shown beside the prompt');
    const widget = page.locator('adcanvas-studio');
    // The host's `button { display: none }` does not reach into the shadow root.
    assert.equal(await widget.locator('button.generate').isVisible(), true, 'the widget\'s own styles hold');

    // A corrupt photo: a clear message in the widget and an event; nothing else changes.
    await widget.locator('input[type=file]').setInputFiles(CORRUPT);
    events = await waitForEvent(page, 'adcanvas-error', MINUTE);
    const bad = events.find((e) => e.type === 'adcanvas-error');
    assert.equal(bad.detail.code, 'bad-image');
    assert.equal(bad.detail.fatal, false);
    assert.match(bad.detail.message, /^Could not use corrupt\.png: .{5,}/);
    assert.equal(await widget.evaluate((w) => w.state), 'error');
    assert.equal(await widget.locator('button.generate').isDisabled(), true, 'nothing to generate from');

    await page.evaluate(() => { window.__events.length = 0; });
    await widget.locator('input[type=file]').setInputFiles(PRODUCT);
    events = await waitForEvent(page, 'adcanvas-product', MINUTE);
    const product = events.find((e) => e.type === 'adcanvas-product');
    assert.ok(product, `the photo was prepared: ${JSON.stringify(events)}`);
    assert.equal(product.detail.maskSource, 'alpha');
    assert.equal(await widget.locator('.prompt').inputValue(), 'on a wooden table', 'the prompt attribute fills the field');

    assert.equal(await widget.evaluate((w) => w.runsIn), 'worker', 'the host page\'s main thread is left free');
    await widget.locator('button.generate').click();
    events = await waitForEvent(page, 'adcanvas-generated', GENERATE_TIMEOUT);
    const done = events.find((e) => e.type === 'adcanvas-generated');
    assert.ok(done, `generation finished: ${JSON.stringify(events.filter((e) => e.type === 'adcanvas-error'))}\nconsole:\n${b.consoleLines.join('\n')}`);
    assert.equal(done.detail.seed, 7);
    assert.equal(done.detail.prompt, 'on a wooden table');
    const ref = done.detail.reference;
    assert.ok(ref && ref.patches === 64 && ref.hiddenPatches > 0 && ref.tokens === 1 + 64 - ref.hiddenPatches,
      `the reference went through PFV: ${JSON.stringify(ref)}`);
    const progress = events.filter((e) => e.type === 'adcanvas-progress');
    assert.ok(progress.length >= 2, `progress events: ${progress.length}`);
    assert.equal(await widget.evaluate((w) => w.state), 'done');

    // The PNG the host page received keeps every opaque product pixel exact …
    const png = decodePng(Buffer.from(done.png));
    assert.deepEqual([png.width, png.height, done.detail.width, done.detail.height], [96, 64, 96, 64], 'a banner');
    const { x, y, w, h } = done.detail.placement;
    const fixture = decodePng(fs.readFileSync(PRODUCT));
    assert.deepEqual([w, h], [fixture.width, fixture.height], 'placed at scale 1');
    assert.deepEqual(done.detail.notes, [], 'half the banner\'s height: no note about the product\'s size');
    assert.deepEqual([x, y], [Math.floor((96 - w) * 0.15), Math.round(64 * 0.8) - h],
      'on the left, as the position attribute asks, standing on the floor line');
    let opaque = 0;
    let differ = 0;
    for (let j = 0; j < h; j++) {
      for (let i = 0; i < w; i++) {
        const f = (j * fixture.width + i) * 4;
        if (fixture.data[f + 3] !== 255) continue;
        opaque++;
        const o = ((y + j) * png.width + x + i) * 4;
        if ([0, 1, 2].some((c) => png.data[o + c] !== fixture.data[f + c])) differ++;
      }
    }
    assert.ok(opaque > 0);
    assert.equal(differ, 0, `${differ} of ${opaque} product pixels differ in the PNG`);
    // … on a generated background (not a constant fill) …
    const outside = new Set();
    for (let j = 0; j < png.height; j++) {
      for (let i = 0; i < png.width; i++) {
        if (i >= x && i < x + w && j >= y && j < y + h) continue;
        const o = (j * png.width + i) * 4;
        outside.add((png.data[o] << 16) | (png.data[o + 1] << 8) | png.data[o + 2]);
      }
    }
    assert.ok(outside.size > 8, `background has ${outside.size} colours`);
    // … and the widget shows exactly those pixels.
    const shown = await widget.locator('canvas.result').evaluate((c) => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data));
    assert.equal(shown.length, png.data.length);
    assert.ok(shown.every((v, i) => v === png.data[i]), 'the widget\'s canvas holds the PNG\'s pixels');

    // Cancel reaches the worker between steps: the run stops and says so.
    await page.evaluate(() => {
      window.__events.length = 0;
      document.querySelector('adcanvas-studio').generate({ steps: 50 })
        .then(() => { window.__outcome = 'finished'; }, (e) => { window.__outcome = e.message; });
    });
    await waitForEvent(page, 'adcanvas-progress', GENERATE_TIMEOUT);
    await widget.locator('button.cancel').click();
    await page.waitForFunction(() => window.__outcome !== undefined, null, { timeout: GENERATE_TIMEOUT });
    assert.equal(await page.evaluate(() => window.__outcome), 'cancelled');
    assert.equal(await widget.evaluate((w) => w.state), 'cancelled');
    const steps = await page.evaluate(() => window.__events.filter((e) => e.type === 'adcanvas-progress').length);
    assert.ok(steps < 50, `stopped after ${steps} of 50 steps`);
    assert.equal(await widget.locator('button.generate').isEnabled(), true, 'ready for another run');

    // Several photos at once, one of them corrupt: an ad each for the good ones as they land, the bad
    // one marked with its reason, and a zip of the ads (the kernels are warm now, so two ads are cheap).
    await page.evaluate(() => { window.__events.length = 0; });
    await widget.locator('input[type=file]').setInputFiles([PRODUCT, CORRUPT, path.join(FIXTURES, 'product_white.jpg')]);
    events = await waitForEvent(page, 'adcanvas-batch', 2 * GENERATE_TIMEOUT, false);
    const batch = events.find((e) => e.type === 'adcanvas-batch');
    assert.deepEqual(batch?.detail, { made: 2, failed: 1, cancelled: false },
      JSON.stringify(events.filter((e) => e.type !== 'adcanvas-progress').map((e) => ({ type: e.type, detail: e.detail }))));
    assert.equal(events.filter((e) => e.type === 'adcanvas-generated').length, 2, 'an adcanvas-generated per ad');
    assert.equal(events.find((e) => e.type === 'adcanvas-error')?.detail.code, 'bad-image', 'the corrupt photo is reported');
    const rows = await widget.locator('ol.ads li').evaluateAll((lis) => lis.map((li) => ({ state: li.dataset.state, title: li.title })));
    assert.deepEqual(rows.map((r) => r.state), ['done', 'failed', 'done'], JSON.stringify(rows));
    assert.match(rows[1].title, /.{5,}/, 'the corrupt photo says why');
    assert.match(await widget.locator('.status').innerText(), /Made 2 of 3 ads/);
    const [zipDownload] = await Promise.all([page.waitForEvent('download'), widget.locator('button.download-all').click()]);
    assert.equal(zipDownload.suggestedFilename(), 'ads.zip');
    const entries = readStoredZip(fs.readFileSync(await zipDownload.path()));
    assert.deepEqual(entries.map((e) => e.name), ['product_alpha_32-ad.png', 'product_white-ad.png']);
    const widgetThumbs = await widget.locator('ol.ads img').evaluateAll((imgs) => Promise.all(imgs.map(
      async (img) => Array.from(new Uint8Array(await (await fetch(img.src)).arrayBuffer())))));
    assert.equal(widgetThumbs.length, 2);
    entries.forEach((e, i) => {
      const ad = decodePng(e.data);
      assert.deepEqual([ad.width, ad.height], [96, 64], `${e.name} is the widget's banner size`);
      assert.ok(Buffer.from(widgetThumbs[i]).equals(e.data), `${e.name} is the ad listed in the widget`);
    });
    // The first photo is the one placed above: its opaque pixels are exact in the batch's ad too.
    const first = decodePng(entries[0].data);
    let batchDiffer = 0;
    for (let j = 0; j < h; j++) {
      for (let i = 0; i < w; i++) {
        const f = (j * fixture.width + i) * 4;
        const o = ((y + j) * first.width + x + i) * 4;
        if (fixture.data[f + 3] === 255 && [0, 1, 2].some((c) => first.data[o + c] !== fixture.data[f + c])) batchDiffer++;
      }
    }
    assert.equal(batchDiffer, 0, `${batchDiffer} of ${opaque} product pixels differ in the batch's ad`);

    // A reference that cannot be fetched: reported, and the widget works without it.
    await page.evaluate(() => {
      window.__events.length = 0;
      const w = document.createElement('adcanvas-studio');
      w.id = 'second';
      w.setAttribute('reference', 'missing.png');
      document.body.append(w);
    });
    events = await page.evaluate(async () => {
      await document.getElementById('second').ready;
      return window.__events.slice();
    });
    const missing = events.find((e) => e.type === 'adcanvas-error');
    assert.equal(missing?.detail.code, 'bad-reference', JSON.stringify(events));
    assert.match(missing.detail.message, /Could not fetch the style reference .*missing\.png: HTTP 404/);
    assert.equal(events.find((e) => e.type === 'adcanvas-ready')?.detail.reference, false);
    const second = page.locator('#second');
    assert.equal(await second.evaluate((w) => w.state), 'ready');
    assert.match(await second.locator('.status').innerText(), /without the style reference/);

    // Two origins and nothing else: the host page, and the app's server for module, wasm and model.
    const origins = new Set(requests.filter((u) => !u.startsWith('data:') && !u.startsWith('blob:')).map((u) => new URL(u).origin));
    assert.deepEqual([...origins].sort(), [new URL(host.url).origin, new URL(baseUrl).origin].sort());
    assert.ok(requests.some((u) => u.endsWith('.wasm')) && requests.some((u) => u.endsWith('models/default/manifest.json')));
    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');
  } finally {
    await b.close();
    host.close();
  }
});

test('widget: four on one page share one worker and one copy of the model, each makes its ad, and removed they free it', { timeout: LOAD_TIMEOUT + 4 * GENERATE_TIMEOUT }, async () => {
  const host = await startHost('size="64x64" steps="2" prompt="on a wooden table"', { widgets: 4 });
  const b = await launch(WEBGPU_ON);
  try {
    const { page } = b;
    await page.goto(host.url, { waitUntil: 'load' });
    await page.waitForFunction(() => window.__events.filter((e) => e.type === 'adcanvas-ready').length === 4 ||
      window.__events.some((e) => e.type === 'adcanvas-error'), null, { timeout: LOAD_TIMEOUT, polling: 250 });
    const events = await page.evaluate(() => window.__events.slice());
    const ready = events.filter((e) => e.type === 'adcanvas-ready');
    assert.equal(ready.length, 4, `four widgets ready: ${JSON.stringify(events)}`);
    assert.deepEqual(ready.map((e) => e.widget).sort(), [0, 1, 2, 3]);
    const ids = new Set(ready.map((e) => e.detail.modelId));
    assert.equal(ids.size, 1, `one model copy for all four: ${JSON.stringify(ready.map((e) => e.detail))}`);
    assert.ok(Number.isInteger([...ids][0]), 'a model id');
    // One studio worker for the page; on the CPU (SwiftShader is a software adapter), with its
    // helper (this machine has two cores), which Playwright lists as a worker too.
    const workers = ready[0].detail.device === 'cpu' ? 2 : 1;
    assert.ok(ready.every((e) => e.detail.workers === workers), `workers per ad: ${JSON.stringify(ready.map((e) => e.detail))}`);
    assert.equal(page.workers().length, workers, 'one studio worker for the page (and its helper on the CPU)');

    // All four at once: each its own photo and seed, taking turns on the model.
    const product = Array.from(fs.readFileSync(PRODUCT));
    const ads = await page.evaluate(async (bytes) => {
      const widgets = [...document.querySelectorAll('adcanvas-studio')];
      return Promise.all(widgets.map(async (w, i) => {
        await w.setProduct(new Uint8Array(bytes));
        const ad = await w.generate({ seed: 20 + i });
        const png = new Uint8Array(await ad.png.arrayBuffer());
        return { seed: ad.seed, width: ad.width, height: ad.height, placement: ad.placement, png: Array.from(png) };
      }));
    }, product);
    const fixture = decodePng(fs.readFileSync(PRODUCT));
    const backgrounds = new Set();
    ads.forEach((ad, i) => {
      assert.equal(ad.seed, 20 + i, `widget ${i}: its own seed`);
      const png = decodePng(Buffer.from(ad.png));
      assertProductExact({ width: png.width, height: png.height, data: png.data }, fixture, ad.placement, `widget ${i}'s ad`);
      backgrounds.add(Buffer.from(png.data).toString('base64'));
    });
    assert.equal(backgrounds.size, 4, 'four different ads (four seeds)');

    // Taken off the page, widgets let go of the model; the worker (and the model) go with the last.
    await page.evaluate(() => {
      const widgets = [...document.querySelectorAll('adcanvas-studio')];
      window.__gone = widgets;
      widgets[0].remove();
      widgets[1].remove();
      widgets[2].parentNode.append(widgets[2]); // moved, not removed: it keeps its studio
    });
    await page.waitForTimeout(1000);
    assert.equal(page.workers().length, workers, 'two widgets left on the page: the worker stays');
    await page.evaluate(() => window.__gone.forEach((w) => w.remove()));
    const gone = Date.now();
    while (page.workers().length > 0 && Date.now() - gone < 30_000) await page.waitForTimeout(100);
    assert.equal(page.workers().length, 0, 'the last widget removed: the worker (and its helper) and the model are gone');
    // Put back, a widget loads the model again (a new worker) and makes an ad.
    const again = await page.evaluate(async (bytes) => {
      const w = window.__gone[3];
      document.body.append(w);
      await w.ready;
      await w.setProduct(new Uint8Array(bytes));
      const ad = await w.generate({ seed: 30 });
      return { placement: ad.placement, png: Array.from(new Uint8Array(await ad.png.arrayBuffer())) };
    }, product);
    const png = decodePng(Buffer.from(again.png));
    assertProductExact({ width: png.width, height: png.height, data: png.data }, fixture, again.placement, 'the widget put back');
    assert.equal(page.workers().length, workers, 'one new worker');
    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');
  } finally {
    await b.close();
    host.close();
  }
});

test('widget: iframe mode runs the studio in a frame of its own origin, answering only its host', { timeout: LOAD_TIMEOUT + GENERATE_TIMEOUT + 3 * MINUTE }, async () => {
  // The host forbids workers: in a frame, the studio lives under the widget's own policy instead.
  const host = await startHost('mode="iframe" prompt="on a wooden table" size="64" steps="2" seed="7"', { csp: "worker-src 'none'" });
  const hostOrigin = new URL(host.url).origin;
  // Another site that embeds the frame directly, naming the first host as its origin.
  const otherDir = fs.mkdtempSync(path.join(os.tmpdir(), 'adcanvas-other-'));
  fs.writeFileSync(path.join(otherDir, 'index.html'), `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,">
<iframe id="f" src="${baseUrl}www/frame.html?origin=${encodeURIComponent(hostOrigin)}"></iframe>
<script>
  window.__replies = [];
  addEventListener('message', (e) => window.__replies.push(e.data));
</script>`);
  const other = await startServer(otherDir);
  const b = await launch(WEBGPU_ON);
  try {
    const { page } = b;
    await page.goto(host.url, { waitUntil: 'load' });
    let events = await waitForEvent(page, 'adcanvas-ready', LOAD_TIMEOUT);
    const ready = events.find((e) => e.type === 'adcanvas-ready');
    assert.ok(ready, `the framed studio loaded: ${JSON.stringify(events)}\nconsole:\n${b.consoleLines.join('\n')}`);
    const widget = page.locator('adcanvas-studio');
    assert.equal(await widget.evaluate((w) => w.runsIn), 'frame');
    const frame = await widget.evaluate((w) => {
      const f = w.shadowRoot.querySelector('iframe');
      return { src: f.src, sandbox: f.getAttribute('sandbox') };
    });
    assert.ok(frame.src.startsWith(`${baseUrl}www/frame.html?origin=`), frame.src);
    assert.equal(frame.sandbox, 'allow-scripts allow-same-origin allow-downloads');
    assert.equal(await page.frameLocator('adcanvas-studio iframe').locator('adcanvas-studio').evaluate((w) => w.runsIn), 'worker',
      'in its frame the studio has its worker, whatever the host\'s policy');

    // The element's API works through the frame: a photo, an ad with the product exact.
    const maskSource = await widget.evaluate((w, data) => w.setProduct(new Uint8Array(data)).then((p) => p.maskSource),
      Array.from(fs.readFileSync(PRODUCT)));
    assert.equal(maskSource, 'alpha');
    await page.evaluate(() => { window.__events.length = 0; });
    const made = await widget.evaluate((w) => w.generate().then((d) => ({ width: d.width, seed: d.seed, png: d.png instanceof Blob })));
    assert.deepEqual(made, { width: 64, seed: 7, png: true });
    events = await waitForEvent(page, 'adcanvas-generated', MINUTE);
    const done = events.find((e) => e.type === 'adcanvas-generated');
    assert.ok(done.png, 'the host hears the ad, with its PNG');
    const png = decodePng(Buffer.from(done.png));
    assertProductExact(png, decodePng(fs.readFileSync(PRODUCT)), done.detail.placement, 'framed ad');
    assert.equal(await widget.evaluate((w) => w.state), 'done');
    // Messages not from the frame are not the frame's: a forged event posted to the host is ignored.
    await page.evaluate(() => window.postMessage({ adcanvas: 1, event: 'adcanvas-generated', detail: { forged: true } }, '*'));
    await page.waitForTimeout(500);
    assert.ok(!(await page.evaluate(() => window.__events.some((e) => e.detail && e.detail.forged))), 'a forged message is ignored');

    // Another origin that frames the studio gets no answer: the frame talks to its host only.
    const otherPage = await b.context.newPage();
    const frameConsole = [];
    otherPage.on('console', (m) => frameConsole.push(m.text()));
    await otherPage.goto(other.url, { waitUntil: 'load' });
    await otherPage.waitForTimeout(1000);
    await otherPage.evaluate(() => {
      const f = document.getElementById('f').contentWindow;
      f.postMessage({ adcanvas: 1, id: 1, method: 'configure', args: [{}] }, '*');
      f.postMessage({ adcanvas: 1, id: 2, method: 'generate', args: [{}] }, '*');
    });
    await otherPage.waitForTimeout(1500);
    assert.deepEqual(await otherPage.evaluate(() => window.__replies), [], 'no reply, no hello, to another origin');
    assert.ok(frameConsole.some((t) => t.includes(`ignored a message from ${new URL(other.url).origin}`)), frameConsole.join('\n'));
    assert.equal(await otherPage.frameLocator('#f').locator('adcanvas-studio').count(), 0, 'nor was the studio configured by it');
    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');
  } finally {
    await b.close();
    host.close();
    other.proc.kill();
    fs.rmSync(otherDir, { recursive: true, force: true });
  }
});

test('widget: a GPU lost mid-run, the widget goes on on the CPU with the photo, no reload', { timeout: 2 * LOAD_TIMEOUT + GENERATE_TIMEOUT }, async () => {
  const host = await startHost('device="gpu" size="64" steps="2" seed="7" prompt="on a wooden table"');
  const b = await launch(WEBGPU_ON);
  try {
    const { page } = b;
    await page.goto(host.url, { waitUntil: 'load' });
    let events = await waitForEvent(page, 'adcanvas-ready', LOAD_TIMEOUT);
    assert.equal(events.find((e) => e.type === 'adcanvas-ready')?.detail.device, 'gpu', JSON.stringify(events));
    const widget = page.locator('adcanvas-studio');
    await widget.locator('input[type=file]').setInputFiles(PRODUCT);
    await waitForEvent(page, 'adcanvas-product', MINUTE);
    const [worker] = page.workers();
    assert.ok(worker, 'the studio runs in a worker');
    await worker.evaluate(() => {
      GPUQueue.prototype.submit = function () { throw new Error('test: the GPU device was lost'); };
    });
    await page.evaluate(() => { window.__events.length = 0; });
    await widget.locator('button.generate').click();
    events = await waitForEvent(page, 'adcanvas-error', GENERATE_TIMEOUT);
    const crashed = events.find((e) => e.type === 'adcanvas-error');
    assert.deepEqual([crashed.detail.code, crashed.detail.fatal], ['crashed', true], JSON.stringify(crashed));
    assert.match(crashed.detail.message, /Continue on this computer's CPU/);
    const recover = widget.locator('button.recover');
    assert.equal(await recover.isVisible(), true, 'the widget offers the CPU');

    await page.evaluate(() => { window.__events.length = 0; });
    await recover.click();
    events = await waitForEvent(page, 'adcanvas-product', LOAD_TIMEOUT);
    assert.equal(events.find((e) => e.type === 'adcanvas-ready')?.detail.device, 'cpu', 'started again on the CPU');
    assert.equal(events.find((e) => e.type === 'adcanvas-product')?.detail.maskSource, 'alpha', 'the photo came along');
    assert.equal(await page.evaluate(() => location.search), '', 'no reload');
    await widget.evaluate((w) => w.generate().then(() => null));
    events = await waitForEvent(page, 'adcanvas-generated', GENERATE_TIMEOUT);
    const ad = events.find((e) => e.type === 'adcanvas-generated');
    assertProductExact(decodePng(Buffer.from(ad.png)), decodePng(fs.readFileSync(PRODUCT)), ad.detail.placement, 'the ad on the CPU after the crash');
    // (The patched submit's own throw reaches the page as the old worker's uncaught error, as it
    // does in the page's test of the same loss; nothing else may.)
    assert.deepEqual(b.pageErrors.map(String).filter((e) => !e.includes('test: the GPU device was lost')), [], 'no other uncaught errors');
  } finally {
    await b.close();
    host.close();
  }
});

test('widget: a host page whose policy forbids workers gets the studio on the page', { timeout: LOAD_TIMEOUT + 2 * MINUTE }, async () => {
  // The worker is made from a blob: URL, which `worker-src 'self'` does not allow.
  const host = await startHost('prompt="on a wooden table"', { csp: "worker-src 'self'" });
  const b = await launch(WEBGPU_ON);
  try {
    const { page } = b;
    await page.goto(host.url, { waitUntil: 'load' });
    let events = await waitForEvent(page, 'adcanvas-ready', LOAD_TIMEOUT);
    assert.ok(events.some((e) => e.type === 'adcanvas-ready'), `the widget loaded its model: ${JSON.stringify(events)}\nconsole:\n${b.consoleLines.join('\n')}`);
    const widget = page.locator('adcanvas-studio');
    assert.equal(await widget.evaluate((w) => w.runsIn), 'page', 'the fallback, not the worker');
    assert.ok((await page.evaluate(() => window.__violations)).includes('worker-src'), 'the policy did refuse the worker');
    // The studio on the page works: a photo is prepared and the widget can generate.
    await widget.locator('input[type=file]').setInputFiles(PRODUCT);
    events = await waitForEvent(page, 'adcanvas-product', MINUTE);
    assert.equal(events.find((e) => e.type === 'adcanvas-product')?.detail.maskSource, 'alpha', JSON.stringify(events));
    assert.equal(await widget.locator('button.generate').isDisabled(), false);
    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');
  } finally {
    await b.close();
    host.close();
  }
});

test('widget: without WebGPU it runs on the CPU and says so; asked for the GPU only, it reports why not; the brush paints a product the cut-out refuses', { timeout: LOAD_TIMEOUT + 3 * MINUTE }, async () => {
  const host = await startHost('');
  const b = await launch(WEBGPU_OFF);
  try {
    const { page } = b;
    await page.goto(host.url, { waitUntil: 'load' });
    const events = await waitForEvent(page, 'adcanvas-ready', LOAD_TIMEOUT);
    const ready = events.find((e) => e.type === 'adcanvas-ready');
    assert.ok(ready, `the widget loaded on the CPU: ${JSON.stringify(events)}\nconsole:\n${b.consoleLines.join('\n')}`);
    assert.equal(ready.detail.device, 'cpu');
    assert.match(ready.detail.deviceNote || '', /WebGPU|GPU adapter/, 'the host page hears why not the GPU');
    const widget = page.locator('adcanvas-studio').first();
    assert.match(await widget.locator('.status').innerText(), /CPU/);
    assert.equal(await widget.evaluate((w) => w.runsIn), 'worker', 'the CPU works in the widget\'s worker');
    // A widget made from script with device="gpu", asked for `ready` before it joins the page,
    // waits for that and then fails with what is missing.
    const early = await page.evaluate(() => {
      const w = document.createElement('adcanvas-studio');
      w.setAttribute('device', 'gpu');
      const outcome = w.ready.then(() => 'loaded', (e) => e.message);
      document.body.append(w);
      return outcome;
    });
    assert.match(early, /WebGPU/);
    const errors = (await page.evaluate(() => window.__events)).filter((e) => e.type === 'adcanvas-error');
    assert.deepEqual(errors.map((e) => e.detail.code), ['webgpu-unavailable']);
    await page.waitForTimeout(500);
    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');

    // The brush, in the widget: a photo the cut-out refuses opens it; what is painted is the product.
    await page.evaluate(() => { window.__events.length = 0; });
    await widget.locator('input[type=file]').setInputFiles(path.join(FIXTURES, 'busy.jpg'));
    let got = await waitForEvent(page, 'adcanvas-error', MINUTE);
    const refused = got.find((e) => e.type === 'adcanvas-error');
    assert.equal(refused.detail.code, 'bad-image');
    assert.match(refused.detail.message, /(not plain enough|not sure where the product ends|No product found).*paint over the product/s);
    const canvas = widget.locator('.adc-mask-canvas');
    await canvas.waitFor({ state: 'visible', timeout: MINUTE });
    assert.equal(await widget.locator('button.generate').isDisabled(), true);
    await paint(page, widget, [[0.4, 0.5], [0.6, 0.5]], 40);
    await page.evaluate(() => { window.__events.length = 0; });
    await widget.locator('.adc-mask-apply').click();
    got = await waitForEvent(page, 'adcanvas-product', MINUTE);
    const painted = got.find((e) => e.type === 'adcanvas-product');
    assert.ok(painted, JSON.stringify(got));
    assert.equal(painted.detail.maskSource, 'painted');
    assert.ok(painted.detail.maskArea > 0.005 && painted.detail.maskArea < 0.3, `painted area ${painted.detail.maskArea}`);
    assert.equal(await canvas.isVisible(), false, 'the editor closes once the mask is taken');
    assert.equal(await widget.locator('button.generate').isDisabled(), false, 'ready to generate');
    assert.equal(await widget.locator('button.edit-mask').isVisible(), true, 'the mask can be edited again');

    // A placement instead of a size, a scene preset, and the ad as JPEG named by prompt and seed.
    await widget.locator('select.preset').selectOption({ label: 'Kitchen' });
    assert.equal(await widget.locator('.prompt').inputValue(), 'on a kitchen counter in a bright kitchen, daylight');
    const story = await widget.evaluate((w) => w.generate({ placement: 'story', steps: 2, seed: 3 }).then((d) => [d.width, d.height, d.prompt]));
    assert.deepEqual(story, [256, 448, 'on a kitchen counter in a bright kitchen, daylight']);
    const wrong = await widget.evaluate((w) => w.generate({ placement: 'poster' }).then(() => 'made', (e) => e.message));
    assert.match(wrong, /placement must be one of feed, portrait, story, video, link/);
    await widget.locator('select.format').selectOption('jpg');
    const [jpeg] = await Promise.all([page.waitForEvent('download'), widget.locator('button.download').click()]);
    assert.equal(jpeg.suggestedFilename(), 'adcanvas-on-a-kitchen-counter-in-a-bright-kitchen-daylight-seed3.jpg');
    const jpegBytes = fs.readFileSync(await jpeg.path());
    assert.deepEqual(await decodeInPage(page, jpegBytes, 'image/jpeg'), { width: 256, height: 448 });
    // More like this: a new ad from that one's pixels, at its size, with a step preview on the way.
    await page.evaluate(() => { window.__events.length = 0; });
    await widget.locator('button.more').click();
    got = await waitForEvent(page, 'adcanvas-generated', GENERATE_TIMEOUT);
    const like = got.find((e) => e.type === 'adcanvas-generated');
    assert.ok(like, JSON.stringify(got.filter((e) => e.type === 'adcanvas-error')));
    assert.deepEqual([like.detail.width, like.detail.height, like.detail.from], [256, 448, 3]);
    assert.notEqual(like.detail.seed, 3);
    // Two variants, listed; a click on the first shows it again (and Download takes it).
    const seeds = await widget.evaluate((w) => w.generateVariants(2, { size: 64, steps: 2, seed: 11 }).then((d) => d.map((x) => x.seed)));
    assert.deepEqual(seeds, [11, 12]);
    assert.deepEqual(await widget.locator('.ads li').allTextContents(), ['seed 11', 'seed 12']);
    const pngOf = () => widget.evaluate(async (w) => Array.from(new Uint8Array(await w.png.arrayBuffer())));
    const second = await pngOf();
    await widget.locator('.ads li img').first().click();
    const first = await pngOf();
    assert.notDeepEqual(first, second, 'the first variant is shown again');
    assert.deepEqual(decodePng(Buffer.from(first)).width, 64);
    // Refine: that ad gone over once more, with its own seed.
    const refined = await widget.evaluate((w) => w.refine().then((d) => [d.seed, d.from, d.width]));
    assert.deepEqual(refined, [11, 11, 64]);
    assert.deepEqual(b.pageErrors.map(String), [], 'no uncaught page errors');
  } finally {
    await b.close();
    host.close();
  }
});
