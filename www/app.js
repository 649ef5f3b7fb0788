// adcanvas page glue: wires the DOM to the Rust/wasm `Studio` (dist/pkg/adcanvas.js).
// Plain ES module, no framework. All heavy work happens inside the wasm module: on WebGPU, or on the
// CPU where the browser has no usable GPU.

import {
  PLACEMENTS, SCENE_PRESETS, adFileName, bytesOf, deviceOf, deviceSentence, drawPreview, encodeAd, fatalCause, field, isFatal,
  messageOf, parseSize, pastedImages, placementSize, previewEvery, remainingTime, resultImage, toBytes,
} from './common.js';
import { MaskEditor, isCutoutFailure } from './mask-editor.js';
import { startEngine } from './studio.js';

const $ = (id) => document.getElementById(id);

const el = {
  webgpuError: $('webgpu-error'),
  webgpuErrorMessage: $('webgpu-error-message'),
  modelLabel: $('model-label'),
  dropzone: $('dropzone'),
  file: $('file'),
  fileName: $('file-name'),
  maskFigure: $('mask-figure'),
  maskPreview: $('mask-preview'),
  maskInfo: $('mask-info'),
  maskFile: $('mask-file'),
  maskEdit: $('mask-edit'),
  maskEditor: $('mask-editor'),
  controls: $('controls'),
  prompt: $('prompt'),
  preset: $('preset'),
  placements: $('placements'),
  guidance: $('guidance'),
  scheduler: $('scheduler'),
  format: $('format'),
  quality: $('quality'),
  qualityField: $('quality-field'),
  qualityValue: $('quality-value'),
  size: $('size'),
  fill: $('fill'),
  position: $('position'),
  steps: $('steps'),
  seed: $('seed'),
  randomSeed: $('random-seed'),
  generate: $('generate'),
  cancel: $('cancel'),
  progress: $('progress'),
  status: $('status'),
  continueOnCpu: $('continue-on-cpu'),
  continueOnCpuLink: $('continue-on-cpu-link'),
  result: $('result'),
  resultInfo: $('result-info'),
  download: $('download'),
  referenceField: $('reference-field'),
  reference: $('reference'),
  referenceClear: $('reference-clear'),
  referenceScale: $('reference-scale'),
  referenceScaleValue: $('reference-scale-value'),
  pfv: $('pfv'),
  regionMasks: $('region-masks'),
  depthField: $('depth-field'),
  depth: $('depth'),
  batch: $('batch'),
  batchList: $('batch-list'),
  batchZip: $('batch-zip'),
  variantCount: $('variant-count'),
  variantsBox: $('variants-box'),
  variants: $('variants'),
  moreLikeThis: $('more-like-this'),
  refine: $('refine'),
  referenceThumb: $('reference-thumb'),
};

const state = {
  photoFile: null,    // the product photo last prepared (a mask of the user's own is applied to it)
  studio: null,       // Studio once the model pack is open
  prepared: false,    // a product photo has been prepared successfully
  generating: false,
  busy: false,        // loading / preparing: block Generate
  maskUrl: null,      // object URL of the mask preview
  mask: null,         // the prepared photo's mask: { png (grey preview bytes), width, height }
  candidate: null,    // the photo last chosen, prepared or not: the mask editor paints on it
  pngUrl: null,       // object URL of the last result PNG
  ad: null,           // the ad shown: { png (Blob), prompt, seed }
  shown: null,        // the ad on the canvas (adOf)
  gallery: [],        // this run's ads (variants, variations, refinements)
  reference: null,    // { name, bytes } of the style reference in use
  sizesRun: new Set(), // image sizes generated in this tab: their GPU kernels are compiled
  nativeSize: 0,      // the size the model was trained at; at twice it, ads are made in two passes
  batch: null,        // several photos at once: { items: [{ file, name, png }], running, cancelled }
  zipUrl: null,       // object URL of the last "Download all" zip
};

// ---------- small helpers ----------

function setStatus(stateName, text) {
  el.status.dataset.state = stateName;
  el.status.textContent = text;
}

function setProgress(value, max) {
  el.progress.max = Math.max(1, max);
  el.progress.value = Math.max(0, Math.min(value, el.progress.max));
}

function replaceUrl(key, blob) {
  if (state[key]) URL.revokeObjectURL(state[key]);
  state[key] = blob ? URL.createObjectURL(blob) : null;
  return state[key];
}

/** Enable/disable controls from the current state. */
function refreshControls() {
  const locked = state.generating || Boolean(state.batch?.running);
  for (const input of [el.file, el.prompt, el.preset, el.size, el.fill, el.position, el.steps, el.seed, el.randomSeed,
    el.guidance, el.scheduler]) {
    input.disabled = locked;
  }
  el.dropzone.classList.toggle('disabled', locked || !state.studio);
  el.generate.disabled = locked || state.busy || state.crashed || !state.studio || !state.prepared;
  el.maskEdit.disabled = locked || state.busy || !state.prepared;
  el.cancel.disabled = !locked;
  el.batchZip.disabled = locked || !state.batch?.items.some((item) => item.png);
  el.moreLikeThis.disabled = locked || state.crashed || !state.shown || !state.prepared;
  el.refine.disabled = el.moreLikeThis.disabled;
}

function addNotice(kind, html) {
  const p = document.createElement('p');
  p.className = `notice notice-${kind}`;
  p.innerHTML = html;
  el.modelLabel.append(p);
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

function readNumber(input, name, min, max) {
  const raw = input.value.trim();
  const n = Number(raw);
  if (raw === '' || !Number.isFinite(n) || n < min || n > max) {
    throw new Error(`${name} must be a number from ${min} to ${max}`);
  }
  return n;
}

function readInt(input, name, min, max) {
  const raw = input.value.trim();
  const n = Number(raw);
  if (raw === '' || !Number.isInteger(n) || n < min || n > max) {
    throw new Error(`${name} must be a whole number from ${min} to ${max}`);
  }
  return n;
}

// ---------- start-up ----------

function modelBaseUrl() {
  const override = new URLSearchParams(location.search).get('model');
  let base = override && override.trim() ? override.trim() : 'models/default/';
  if (!base.endsWith('/')) base += '/';
  return base;
}

/** `?weights=keep|expand|auto`: what a q8/q4 pack's weights become on the GPU (docs/PACKS.md);
 * auto keeps them quantised when they would pass 1 GiB as f32. */
function quantizedWeightsOption() {
  return new URLSearchParams(location.search).get('weights') || 'auto';
}

/** `?helper=0`: on the CPU, no second worker sharing each ad (www/studio-worker.js); to compare. */
function helperOption() {
  return new URLSearchParams(location.search).get('helper') !== '0';
}

/** `?device=auto|gpu|cpu`: where the studio computes. auto (the default) takes a hardware GPU
 * through WebGPU and this computer's CPU otherwise; gpu insists on WebGPU, software adapters
 * included; cpu never touches the GPU. */
function deviceOption() {
  return deviceOf(new URLSearchParams(location.search).get('device'));
}

/** `?studio=page`: run the studio on the page's main thread instead of its worker (to compare;
 * scripts/bench_main_thread.mjs measures what the worker spares the page). */
function studioInPage() {
  return new URLSearchParams(location.search).get('studio') === 'page';
}

/** Only with `?device=gpu`: without it, a browser lacking WebGPU runs on the CPU. */
function showWebgpuError(message) {
  el.webgpuErrorMessage.textContent = message;
  el.webgpuError.hidden = false;
  setStatus('error', 'WebGPU is not available in this browser, and this page was asked to use the GPU only (?device=gpu).');
}

// Under `trunk serve` the page's data-trunk rust link is replaced by Trunk's own loader, which
// sets window.wasmBindings and fires TrunkApplicationStarted once initialised; the studio then
// runs on the page with those bindings. Built by scripts/build-web.sh, the link stays (browsers
// ignore it) and the studio starts in its worker (www/studio.js).
async function trunkBindings() {
  if (document.querySelector('link[data-trunk][rel="rust"]')) return null;
  if (!window.wasmBindings) {
    await new Promise((resolve) => addEventListener('TrunkApplicationStarted', resolve, { once: true }));
  }
  return window.wasmBindings;
}

// ---------- offline: the service worker (www/sw.js) ----------

/** `?sw=off` leaves the service worker out (and unregisters it), for comparison. */
function serviceWorkerWanted() {
  return 'serviceWorker' in navigator && new URLSearchParams(location.search).get('sw') !== 'off';
}

/** Registers sw.js, which keeps the app, its wasm and the model for the next (or an offline)
 * visit, and waits briefly until it controls the page, so that even the first visit's downloads
 * are kept. Never fails: without it the studio still works, only without its cache. */
async function startServiceWorker() {
  if (!('serviceWorker' in navigator)) return;
  try {
    if (!serviceWorkerWanted()) {
      for (const r of await navigator.serviceWorker.getRegistrations()) await r.unregister();
      return;
    }
    navigator.serviceWorker.addEventListener('message', ({ data }) => {
      if (data?.type !== 'download' || el.status.dataset.state !== 'loading') return;
      const mb = (n) => (n / 1048576).toFixed(1);
      setStatus('loading', `Downloading ${data.file}: ${mb(data.loaded)}${data.total ? ` of ${mb(data.total)}` : ''} MB` +
        ' (kept for your next visit, and for using the studio offline)…');
    });
    await navigator.serviceWorker.register('sw.js', { scope: './' });
    if (!navigator.serviceWorker.controller) {
      await Promise.race([
        new Promise((resolve) => navigator.serviceWorker.addEventListener('controllerchange', resolve, { once: true })),
        new Promise((resolve) => setTimeout(resolve, 3000)),
      ]);
    }
  } catch (err) {
    console.warn(`adcanvas: no offline cache (${messageOf(err)})`);
  }
}

async function start() {
  restoreSettings();
  refreshControls();
  setStatus('loading', 'Loading the WebAssembly module…');
  await startServiceWorker();

  let engine;
  try {
    engine = await startEngine({ bindings: await trunkBindings(), inPage: studioInPage() });
  } catch (err) {
    setStatus('error', `Could not load the WebAssembly module: ${messageOf(err)}`);
    return;
  }
  document.body.dataset.studio = engine.runsIn;
  let device;
  try {
    device = deviceOption();
  } catch (err) {
    setStatus('error', messageOf(err));
    return;
  }
  if (device === 'gpu' && !engine.gpu.available && !engine.gpu.software) {
    showWebgpuError(engine.gpu.message);
    return;
  }

  const base = modelBaseUrl();
  setStatus('loading', `Loading the model from ${base}…`);
  try {
    state.studio = await engine.open(base, { device, quantized_weights: quantizedWeightsOption(), helper: helperOption() });
  } catch (err) {
    setStatus('error', `Could not load the model pack at ${base}: ${messageOf(err)}`);
    return;
  }

  showModelInfo();
  setStatus('ready', 'Ready. Drop in a product photo to start.');
  refreshControls();
  warmUp(engine.gpu.available === true);
  const photo = restoredPhoto();
  if (photo) await handleFile(photo);
}

/** On a GPU a first ad is mostly the compiling of its kernels: compile them now, for an ad of the
 * size and settings on the form, while the seller picks a photo. A generation started meanwhile
 * takes over after the warm-up's current step. `body[data-warm-up]`: running, done, stopped,
 * failed (the ad then compiles what it needs itself). On by default on a hardware GPU only: on a
 * software adapter (which the page takes only when asked, `?device=gpu`) the warm-up holds the
 * studio for minutes, so an upload would wait behind it. `?warmup=on|off` overrides. */
function warmUp(hardwareGpu) {
  const asked = new URLSearchParams(location.search).get('warmup');
  if (state.device !== 'gpu' || asked === 'off' || (!hardwareGpu && asked !== 'on')) return;
  const params = readParams();
  if (!params) return;
  document.body.dataset.warmUp = 'running';
  // With a prompt, as most ads have: guidance's two halves are what gets compiled.
  state.studio.warmUp({ ...params, prompt: params.prompt || 'a product on a table' }).then(
    (r) => {
      document.body.dataset.warmUp = field(r, 'warmed') ? 'done' : 'stopped';
      document.body.dataset.warmUpMs = String(Math.round(Number(field(r, 'ms')) || 0));
    },
    () => { document.body.dataset.warmUp = 'failed'; },
  );
}

function showModelInfo() {
  el.modelLabel.replaceChildren();
  const info = state.studio.info;
  const name = field(info, 'name');
  const label = field(info, 'label') || 'model';
  // Without a size the user chose before, start at the size the model was trained at.
  state.nativeSize = Number(field(info, 'native_size')) || 0;
  addPlacements(state.nativeSize, Number(field(info, 'size_multiple')) || 0);
  const saved = savedSettings()?.size;
  if (saved && [...el.size.options].some((o) => o.value === saved)) el.size.value = saved;
  const native = String(state.nativeSize || '');
  if (!saved && [...el.size.options].some((o) => o.value === native)) el.size.value = native;
  el.referenceField.hidden = field(info, 'reference_used') !== true;
  el.depthField.hidden = field(info, 'depth_used') !== true;
  if (field(info, 'trained') === false) {
    addNotice('warn', `<strong>${escapeHtml(label)}</strong>: this model has not been trained, so the ` +
      'background is a placeholder pattern, not a real scene. Your product is still placed exactly.');
  } else if (name) {
    addNotice('info', `Model: <strong>${escapeHtml(name)}</strong>`);
  }
  state.device = field(info, 'device');
  document.body.dataset.device = state.device;
  addNotice(state.device === 'cpu' ? 'warn' : 'info', escapeHtml(deviceSentence(info)));
  if (field(info, 'prompt_used') === false) {
    addNotice('warn', '<strong>prompt not used yet</strong>: this model ignores the scene prompt for now; ' +
      'the seed decides the background.');
  }
}

// ---------- how long an ad takes here ----------
// The last ad's time per device and size, kept across visits, so that the page can say before an
// ad how long it will take on this computer (what it measured, never a guess).

const TIMES_KEY = 'adcanvas.times';

function rememberTime(params, seconds) {
  try {
    const times = JSON.parse(localStorage.getItem(TIMES_KEY) || '{}');
    times[`${state.device} ${params.width}x${params.height}`] = { seconds, steps: params.steps };
    localStorage.setItem(TIMES_KEY, JSON.stringify(times));
  } catch { /* storage disabled: nothing to remember */ }
}

/** ' An ad at W × H takes about N s here.' from the last one at that size (scaled to the steps
 * now asked for), or '' when there was none. */
function expectedTime() {
  try {
    const size = parseSize(el.size.value);
    const steps = Number(el.steps.value);
    const last = size && JSON.parse(localStorage.getItem(TIMES_KEY) || '{}')[`${state.device} ${size.width}x${size.height}`];
    if (!last || !(steps > 0)) return '';
    const seconds = last.seconds * steps / last.steps;
    const where = state.device === 'cpu' ? 'on this computer\'s CPU' : 'on this GPU';
    return ` An ad at ${size.width} × ${size.height} with ${steps} steps takes about ${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s ${where}.`;
  } catch { return ''; }
}

// ---------- keeping the user's work across a reload ----------
// A lost GPU device or a crashed wasm instance can only be recovered by reloading the
// page; the settings (localStorage) and the last photo (sessionStorage, when small enough)
// survive that, so nothing the user chose is lost.

const SETTINGS_KEY = 'adcanvas.settings';
const PHOTO_KEY = 'adcanvas.photo';

function saveSettings() {
  try {
    localStorage.setItem(SETTINGS_KEY, JSON.stringify({
      prompt: el.prompt.value, size: el.size.value, fill: el.fill.value, position: el.position.value,
      steps: el.steps.value, seed: el.seed.value, guidance: el.guidance.value, scheduler: el.scheduler.value,
      format: el.format.value, quality: el.quality.value,
    }));
  } catch { /* storage disabled: nothing to keep */ }
}

function savedSettings() {
  try {
    return JSON.parse(localStorage.getItem(SETTINGS_KEY) || 'null');
  } catch {
    return null;
  }
}

function restoreSettings() {
  try {
    const saved = savedSettings();
    if (!saved) return;
    if (typeof saved.prompt === 'string') el.prompt.value = saved.prompt;
    syncPreset();
    for (const key of ['size', 'fill', 'position', 'scheduler', 'format']) {
      if ([...el[key].options].some((o) => o.value === saved[key])) el[key].value = saved[key];
    }
    if (saved.steps) el.steps.value = saved.steps;
    if (saved.seed) el.seed.value = saved.seed;
    if (saved.guidance) el.guidance.value = saved.guidance;
    if (saved.quality) el.quality.value = saved.quality;
    showQuality();
  } catch { /* corrupt or unavailable storage: keep the defaults */ }
}

function savePhoto(name, bytes) {
  try {
    if (bytes.length > 3_000_000) { sessionStorage.removeItem(PHOTO_KEY); return; }
    let binary = '';
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    sessionStorage.setItem(PHOTO_KEY, JSON.stringify({ name, data: btoa(binary) }));
  } catch { /* quota or disabled storage: the photo is simply not kept */ }
}

function restoredPhoto() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(PHOTO_KEY) || 'null');
    if (!saved) return null;
    const binary = atob(saved.data);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return new File([bytes], saved.name, { type: 'application/octet-stream' });
  } catch { return null; }
}

function showFatal(err) {
  state.crashed = true;
  const onGpu = state.device === 'gpu';
  setStatus('error', `${fatalCause(err)} ` +
    `Your photo and settings are kept: reload the page to continue${onGpu ? ', or continue on the CPU (below)' : ''}.`);
  // A GPU that was lost may be lost again: the CPU path needs none (the same page, ?device=cpu).
  if (onGpu) {
    const url = new URL(location.href);
    url.searchParams.set('device', 'cpu');
    el.continueOnCpuLink.href = url.href;
    el.continueOnCpu.hidden = false;
  }
  refreshControls();
}

// ---------- upload ----------

/** Prepares `file` (the product photo), with `maskFile` as its mask when given (the user's own,
 * a file or the brush's: `painted`); resolves to whether this file was taken (after a refusal the
 * previous photo stays in use). When the automatic cut-out finds no product (a busy background), the
 * mask editor opens for the user to paint it. */
async function handleFile(file, maskFile = null, painted = false) {
  if (!file || state.generating) return false;
  if (!state.studio) {
    setStatus('error', 'The model is not loaded yet, so the photo cannot be prepared.');
    return false;
  }
  if (!maskFile && maskEditor.isOpen) maskEditor.close();
  // A photo the studio refuses loses nothing: the studio keeps the product it had, and so does
  // the page (its name, cut-out and "More like this" ad), unless the brush takes over below.
  const before = { prepared: state.prepared, shown: state.shown, name: el.fileName.textContent };
  let taken = false;
  state.busy = true;
  state.prepared = false;
  state.candidate = file;
  state.shown = null; // More like this / Refine start from an ad of this product only
  el.fileName.textContent = file.name;
  refreshControls();
  setStatus('loading', `Reading ${file.name}…`);
  try {
    const bytes = await bytesOf(file);
    const prep = await state.studio.prepare(bytes, maskFile ? await bytesOf(maskFile) : undefined);
    state.photoFile = file;
    savePhoto(file.name, bytes);
    const width = field(prep, 'width');
    const height = field(prep, 'height');
    const source = field(prep, 'mask_source');
    const area = Number(field(prep, 'mask_area'));
    state.mask = { png: toBytes(field(prep, 'mask_png')).slice(), width, height };
    // The cut-out as it will be pasted, over a checkerboard: what is kept, at the photo's size.
    el.maskPreview.src = replaceUrl('maskUrl', new Blob([toBytes(field(prep, 'cutout_png'))], { type: 'image/png' }));
    const from = source === 'alpha' ? 'the transparency (alpha channel)'
      : painted ? 'your brush' : source === 'given' ? `your mask (${maskFile.name})`
      : source === 'network' ? 'the cut-out network (a busy background: check the edges; Edit mask touches them up)' : 'background removal';
    el.maskInfo.textContent = `${width} × ${height} px · mask from ${from} · product covers ${(area * 100).toFixed(1)}% of the photo`;
    el.maskFigure.hidden = false;
    state.prepared = true;
    taken = true;
    setStatus('ready', `Photo ready. Describe a scene and press Generate.${expectedTime()}`);
  } catch (err) {
    const msg = messageOf(err);
    const kept = () => {
      Object.assign(state, { prepared: before.prepared, shown: before.shown });
      el.fileName.textContent = before.name;
      return before.prepared && !state.batch?.running ? ` ${before.name} is still the photo in use.` : '';
    };
    if (painted) {
      setStatus('error', `Could not use the painted mask: ${msg}${kept()}`);
    } else if (!maskFile && !state.batch?.running && isCutoutFailure(msg)) {
      el.maskFigure.hidden = true;
      replaceUrl('maskUrl', null);
      setStatus('error', `${file.name}: ${msg} Or paint over the product below to cut it out yourself.`);
      openMaskEditor(file, null, 'The product could not be found automatically in this photo.');
    } else {
      const what = maskFile ? `${file.name} with ${maskFile.name}` : file.name;
      setStatus('error', `Could not use ${what}: ${msg}${kept()}`);
    }
  } finally {
    state.busy = false;
    refreshControls();
  }
  return taken;
}

// ---------- the mask editor ----------
// Brushing over the photo (www/mask-editor.js); "Use this mask" prepares the photo again with the
// painted mask, as with a mask file of the user's own.

const maskEditor = new MaskEditor(el.maskEditor, {
  onApply: async (png) => {
    const file = state.candidate;
    const ok = file && await handleFile(file, new File([png], 'painted-mask.png', { type: 'image/png' }), true);
    if (!ok) throw new Error('not taken');
  },
  onClose: () => { el.maskEditor.hidden = true; },
});
el.maskEditor.hidden = true;

async function openMaskEditor(file, mask, why = '') {
  el.maskEditor.hidden = false;
  try {
    await maskEditor.open(file, mask?.png ?? null, mask ? { width: mask.width, height: mask.height } : null, why);
    el.maskEditor.scrollIntoView({ block: 'nearest' });
  } catch (err) {
    el.maskEditor.hidden = true;
    setStatus('error', `This browser could not show ${file.name} for painting: ${messageOf(err)}`);
  }
}

el.maskEdit.addEventListener('click', () => {
  if (state.photoFile && state.mask) openMaskEditor(state.photoFile, state.mask);
});

// The user's own mask for the photo already chosen (white or opaque = product).
el.maskFile.addEventListener('change', () => {
  const mask = el.maskFile.files && el.maskFile.files[0];
  if (mask && state.photoFile) handleFile(state.photoFile, mask);
  el.maskFile.value = '';
});

/** One photo is prepared for the user to generate from; several make one ad each (runBatch). */
function takeFiles(list) {
  const files = Array.from(list || []);
  if (files.length > 1) runBatch(files);
  else if (files.length === 1) handleFile(files[0]);
}

el.file.addEventListener('change', () => {
  takeFiles(el.file.files);
  // Allow choosing the same file again (change fires only when the value changes).
  el.file.value = '';
});

for (const type of ['dragenter', 'dragover']) {
  el.dropzone.addEventListener(type, (e) => {
    e.preventDefault();
    if (!state.generating) el.dropzone.classList.add('dragging');
  });
}
for (const type of ['dragleave', 'dragend']) {
  el.dropzone.addEventListener(type, () => el.dropzone.classList.remove('dragging'));
}
el.dropzone.addEventListener('drop', (e) => {
  e.preventDefault();
  el.dropzone.classList.remove('dragging');
  if (!state.generating && !state.batch?.running) takeFiles(e.dataTransfer && e.dataTransfer.files);
});
// A file dropped outside the drop zone must not navigate away from the page.
window.addEventListener('dragover', (e) => e.preventDefault());
window.addEventListener('drop', (e) => e.preventDefault());

// ---------- pixel-exact result ----------

// The canvas is shown at 1 CSS px per image px. Flexible layout (fr columns, centring, vw padding)
// can put it at a fractional position, which would blur it and make an element screenshot one
// pixel too large; nudge it onto whole pixels whenever the layout changes.
function snapCanvas() {
  const c = el.result;
  c.style.left = '0px';
  c.style.top = '0px';
  const r = c.getBoundingClientRect();
  c.style.left = `${Math.round(r.left) - r.left}px`;
  c.style.top = `${Math.round(r.top) - r.top}px`;
}
new ResizeObserver(snapCanvas).observe(document.body);
window.addEventListener('resize', snapCanvas);
window.addEventListener('scroll', snapCanvas, { passive: true });

// ---------- generate ----------

el.randomSeed.addEventListener('click', () => {
  el.seed.value = String(crypto.getRandomValues(new Uint32Array(1))[0]);
});

/** Draws the ad on the result canvas; returns its notes for the status line and its PNG. */
/** The module's answer as an ad of the gallery: its pixels, PNG and the settings that made it. */
function adOf(out, params) {
  const timings = field(out, 'timings_ms');
  const total = timings instanceof Map ? timings.get('total') : timings && timings.total;
  const ref = field(out, 'reference');
  return {
    ...resultImage(out),
    params,
    seconds: Number.isFinite(total) ? total / 1000 : null,
    reference: ref ? { patches: field(ref, 'patches'), hidden_patches: field(ref, 'hidden_patches'), tokens: field(ref, 'tokens') } : null,
    depthUsed: field(out, 'depth_used') === true,
    // Steps whose guidance half the helper worker computed (www/studio-worker.js).
    helperSteps: field(out, 'helper_steps') ?? 0,
  };
}

/** What the ad looks like at `step`, on the result canvas until the ad itself replaces it. */
function showPreview(preview, params, step) {
  const canvas = el.result;
  drawPreview(canvas, preview, params.width, params.height);
  canvas.style.width = `${params.width}px`;
  canvas.style.height = `${params.height}px`;
  canvas.dataset.preview = String(step);
  $('result-empty').classList.add('gone');
  snapCanvas();
}

/** Draws `ad` on the result canvas at 1 CSS px per pixel; Download, More like this and Refine take it. */
function showAd(ad) {
  const { width, height, rgba, imageData, placement, png, notes } = ad;

  const canvas = el.result;
  canvas.width = width;   // attributes = image size
  canvas.height = height;
  canvas.style.width = `${width}px`;   // 1 CSS px per image px: never scaled
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext('2d');
  ctx.putImageData(imageData, 0, 0);

  el.download.disabled = false;
  replaceUrl('pngUrl', png);
  state.ad = { png, prompt: ad.params.prompt, seed: ad.params.seed };
  state.shown = ad;
  el.resultInfo.textContent = `${width} × ${height} px · seed ${ad.params.seed}` + (ad.seconds != null ? ` · ${ad.seconds.toFixed(1)} s` : '');

  snapCanvas();
  $('result-empty').classList.add('gone');

  canvas.dataset.placement = `${placement.x},${placement.y},${placement.w},${placement.h}`;
  canvas.dataset.ready = '1';
  window.__adcanvas = { width, height, rgba, placement, reference: ad.reference, notes, depth_used: ad.depthUsed, seed: ad.params.seed, helper_steps: ad.helperSteps };
  for (const li of el.variants.children) li.querySelector('button').setAttribute('aria-pressed', String(li.ad === ad));
  refreshControls();
}

/** The generation settings from the form, or null (and the reason in the status line). */
function readParams() {
  try {
    return {
      prompt: el.prompt.value.trim(),
      ...parseSize(el.size.value),
      fill: Number(el.fill.value),
      position: Number(el.position.value),
      steps: readInt(el.steps, 'Steps', 1, 200),
      seed: readInt(el.seed, 'Seed', 0, 4294967295),
      reference_scale: Number(el.referenceScale.value),
      pfv: el.pfv.checked,
      region_masks: el.regionMasks.checked,
      depth_scale: el.depth.checked ? 1 : 0,
      guidance: readNumber(el.guidance, 'Guidance', 1, 20),
      scheduler: el.scheduler.value,
    };
  } catch (err) {
    setStatus('error', messageOf(err));
    return null;
  }
}

async function generate() {
  if (state.generating || !state.studio || !state.prepared) return;
  const params = readParams();
  if (!params) return;
  const n = Number(el.variantCount.value) || 1;
  const seeds = Array.from({ length: n }, (_, k) => (params.seed + k) % 2 ** 32);
  await makeAds(seeds.map((seed) => ({ ...params, seed })), 'variant', []);
}

// ---------- variants, more like this, refine ----------
// Each run makes 1–4 ads (seeds seed … seed + 3), shown in a gallery as they land; the one picked
// is the one shown, downloaded, and refined. "More like this" makes as many new ads from the picked
// one's own pixels (img2img at strength 0.55: its layout and colours stay, the detail changes);
// "Refine" goes over it once more (strength 0.3, same seed).

const MORE_LIKE_THIS_STRENGTH = 0.55;
const REFINE_STRENGTH = 0.3;

/** Makes an ad for each of `list` (generate params) after `keep` (ads already in the gallery). */
async function makeAds(list, kind, keep) {
  state.gallery = [...keep];
  renderGallery();
  for (const [k, params] of list.entries()) {
    const what = list.length > 1 ? `${kind} ${k + 1} of ${list.length}` : '';
    const ad = await runGenerate(params, what);
    if (!ad) break;
    state.gallery.push(ad);
    renderGallery();
    showAd(ad);
  }
}

function renderGallery() {
  el.variants.replaceChildren();
  for (const ad of state.gallery) {
    const li = document.createElement('li');
    li.ad = ad;
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'variant';
    button.setAttribute('aria-pressed', String(state.shown === ad));
    button.title = `Show this ad (seed ${ad.params.seed})`;
    const img = document.createElement('img');
    img.alt = `Ad with seed ${ad.params.seed}`;
    ad.url ??= URL.createObjectURL(ad.png);
    img.src = ad.url;
    button.append(img);
    const label = document.createElement('span');
    label.textContent = ad.params.init_png ? `seed ${ad.params.seed}, from ${ad.from}` : `seed ${ad.params.seed}`;
    li.append(button, label);
    button.addEventListener('click', () => showAd(ad));
    el.variants.append(li);
  }
  el.variantsBox.hidden = state.gallery.length < 2;
}

/** Ads made from the shown one's pixels: `n` of them at `strength`, with `seeds`. */
async function fromShown(kind, strength, seeds) {
  const base = state.shown;
  if (!base || state.generating) return;
  const init = new Uint8Array(await base.png.arrayBuffer());
  const { init_png: _, init_strength: __, ...own } = base.params;
  // Enough steps that at least one of them runs at this strength (⌊steps · strength⌋ ≥ 1).
  const steps = Math.max(own.steps, Math.ceil(1 / strength));
  const list = seeds.map((seed) => ({ ...own, seed, steps, init_png: init, init_strength: strength }));
  const from = `seed ${base.params.seed}`;
  const keep = kind === 'refined' ? state.gallery : [base];
  const before = state.gallery.length;
  await makeAds(list, kind, keep);
  for (const ad of state.gallery.slice(kind === 'refined' ? before : 1)) ad.from = from;
  renderGallery();
}

el.moreLikeThis.addEventListener('click', () => {
  const seed = state.shown?.params.seed ?? 0;
  const n = Math.max(1, Number(el.variantCount.value) || 1);
  fromShown('variation', MORE_LIKE_THIS_STRENGTH, Array.from({ length: n }, (_, k) => (seed + 101 * (k + 1)) % 2 ** 32));
});
el.refine.addEventListener('click', () => fromShown('refined', REFINE_STRENGTH, [state.shown?.params.seed ?? 0]));

/** Generates an ad of the prepared photo with `params` and shows it; resolves to the ad (adOf),
 * or null when it was cancelled or failed (the status line says which). `what` names the ad in
 * the status line (several photos at once, variants). */
async function runGenerate(params, what = '') {
  state.generating = true;
  state.lastParams = params;
  el.result.dataset.ready = '0';
  refreshControls();
  setProgress(0, params.steps);
  // The GPU compiles its kernels on the first image of each size (tens of seconds even on a
  // fast GPU; BENCHMARKS.md); later images of that size take a second or two.
  const size = `${params.width} × ${params.height}`;
  const compiling = state.sizesRun.has(size) || state.device === 'cpu' ? ''
    : ' The first image at this size also prepares the GPU\'s kernels, which can take a minute.';
  // At twice the model's size the pipeline lays the ad out at half the size, then refines it.
  const twoPass = state.nativeSize > 0 && Math.min(params.width, params.height) >= 2 * state.nativeSize
    ? ` (laid out at ${params.width / 2} × ${params.height / 2}, then refined)` : '';
  const label = `Generating ${what ? `${what}, ` : ''}${size}${twoPass}…`;
  setStatus('generating', `${label} (step 0 / ${params.steps})${compiling}`);
  const started = performance.now();
  let ad = null;
  // Let the click finish and the status paint before the first (long) GPU submission.
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 50)));

  const left = remainingTime();
  try {
    const out = await state.studio.generate({ ...params, preview_every: previewEvery(params.steps) }, (step, total, preview) => {
      setProgress(step, total);
      if (preview) showPreview(preview, params, step);
      setStatus('generating', `${label} step ${step} / ${total}${left(step, total)}${compiling}`);
    });
    state.sizesRun.add(size);
    // Not a GPU's first ad of a size: that one also compiled its kernels.
    if (!compiling) rememberTime(params, (performance.now() - started) / 1000);
    ad = adOf(out, params);
    showAd(ad);
    const notes = ad.notes.join(' ');
    setProgress(el.progress.max, el.progress.max);
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    const on = state.device === 'cpu' ? ' on the CPU' : '';
    setStatus('done', `Done in ${secs} s${on}. The product pixels are unchanged; the background is generated.${notes ? ` ${notes}` : ''}`);
  } catch (err) {
    const msg = messageOf(err);
    if (msg === 'cancelled') {
      setProgress(0, 1);
      setStatus('cancelled', 'Cancelled. Adjust the settings and press Generate again.');
    } else if (isFatal(err)) {
      showFatal(err);
    } else {
      setStatus('error', `Generation failed: ${msg}`);
    }
  } finally {
    state.generating = false;
    refreshControls();
  }
  return ad;
}

// ---------- several photos at once ----------
// Each photo dropped together is cut out and made into an ad with the current settings, one after
// another; each ad appears in the list as it lands (and on the canvas), and "Download all" zips
// them (wasm `zip_files`). Everything stays on this machine.

/** `kettle.jpg` → `kettle-ad.png`. */
function adName(photoName) {
  return `${String(photoName).replace(/\.[^.]*$/, '') || 'photo'}-ad.png`;
}

function batchRow(item) {
  const li = document.createElement('li');
  li.dataset.state = 'queued';
  const img = document.createElement('img');
  img.alt = `Ad for ${item.file.name}`;
  img.hidden = true;
  const name = document.createElement('span');
  name.className = 'batch-name';
  name.textContent = item.file.name;
  const note = document.createElement('span');
  note.className = 'batch-note muted';
  note.textContent = 'queued';
  li.append(img, name, note);
  el.batchList.append(li);
  return li;
}

function markRow(item, stateName, text) {
  item.row.dataset.state = stateName;
  item.row.querySelector('.batch-note').textContent = text;
}

async function runBatch(files) {
  if (state.generating || state.batch?.running || !state.studio) return;
  const params = readParams();
  if (!params) return;
  for (const item of state.batch?.items || []) if (item.url) URL.revokeObjectURL(item.url);
  el.batchList.replaceChildren();
  const items = files.map((file) => ({ file, name: adName(file.name), png: null, url: null }));
  for (const item of items) item.row = batchRow(item);
  state.batch = { items, running: true, cancelled: false };
  el.batch.hidden = false;
  refreshControls();
  for (const [i, item] of items.entries()) {
    if (state.batch.cancelled || state.crashed) {
      markRow(item, 'skipped', 'not made (cancelled)');
      continue;
    }
    markRow(item, 'working', 'cutting out…');
    const ready = await handleFile(item.file);
    if (!ready) {
      markRow(item, 'failed', el.status.textContent);
      continue;
    }
    markRow(item, 'working', 'generating…');
    const png = (await runGenerate(params, `ad ${i + 1} of ${items.length}`))?.png;
    if (png) {
      item.png = png;
      item.url = URL.createObjectURL(png);
      const img = item.row.querySelector('img');
      img.src = item.url;
      img.hidden = false;
      markRow(item, 'done', item.name);
    } else {
      markRow(item, state.batch.cancelled ? 'skipped' : 'failed', el.status.textContent);
    }
  }
  state.batch.running = false;
  const made = items.filter((item) => item.png).length;
  refreshControls();
  setStatus(made === items.length ? 'done' : 'error',
    `Made ${made} of ${items.length} ads.${made ? ' Download them all as one .zip below the ad.' : ''}` +
    (made < items.length ? ' The list says what happened to the others.' : ''));
}

el.batchZip.addEventListener('click', async () => {
  const done = (state.batch?.items || []).filter((item) => item.png);
  if (!done.length) return;
  el.batchZip.disabled = true;
  try {
    const pngs = await Promise.all(done.map(async (item) => new Uint8Array(await item.png.arrayBuffer())));
    const zip = await state.studio.zip(done.map((item) => item.name), pngs);
    const a = document.createElement('a');
    a.href = replaceUrl('zipUrl', new Blob([toBytes(zip)], { type: 'application/zip' }));
    a.download = 'adcanvas-ads.zip';
    document.body.append(a);
    a.click();
    a.remove();
  } catch (err) {
    setStatus('error', `Could not make the zip: ${messageOf(err)}`);
  } finally {
    refreshControls();
  }
});

// ---------- style reference ----------

/** The reference in use, beside the prompt it styles (none: hidden). */
function showReferenceThumb(ref) {
  const img = el.referenceThumb.querySelector('img');
  img.src = replaceUrl('referenceUrl', ref ? new Blob([ref.bytes]) : null) || '';
  img.title = ref ? ref.name : '';
  el.referenceThumb.hidden = !ref;
}

/** Hands the reference to the studio; PFV off uses it whole (no foreground search). */
async function applyReference() {
  if (!state.studio) return;
  const ref = state.reference;
  try {
    await state.studio.setReference(ref ? ref.bytes : new Uint8Array(), el.pfv.checked);
    el.referenceClear.disabled = !ref;
    showReferenceThumb(ref);
    if (ref) setStatus('ready', `Style reference: ${ref.name}.`);
  } catch (err) {
    setStatus('error', `Could not use ${ref ? ref.name : 'the reference'} as a style reference: ${messageOf(err)}`);
    state.reference = null;
    el.reference.value = '';
    el.referenceClear.disabled = true;
    showReferenceThumb(null);
    await state.studio.setReference(new Uint8Array(), true).catch(() => { /* cleared */ });
  }
}

el.reference.addEventListener('change', async () => {
  const file = el.reference.files && el.reference.files[0];
  state.reference = file ? { name: file.name, bytes: await bytesOf(file) } : null;
  await applyReference();
});
el.referenceClear.addEventListener('click', async () => {
  state.reference = null;
  el.reference.value = '';
  await applyReference();
  setStatus('ready', 'Style reference cleared.');
});
el.pfv.addEventListener('change', () => { if (state.reference) applyReference(); });
el.referenceScale.addEventListener('input', () => {
  el.referenceScaleValue.textContent = Number(el.referenceScale.value).toFixed(1);
});

el.controls.addEventListener('submit', (e) => {
  e.preventDefault();
  generate();
});

el.cancel.addEventListener('click', () => {
  if (state.batch?.running) state.batch.cancelled = true;
  if (!state.generating || !state.studio) return;
  el.cancel.disabled = true;
  setStatus('generating', 'Cancelling…');
  try {
    state.studio.cancel();
  } catch (err) {
    setStatus('error', `Could not cancel: ${messageOf(err)}`);
  }
});

// ---------- download ----------

function showQuality() {
  el.qualityField.hidden = el.format.value === 'png';
  el.qualityValue.textContent = String(Math.round(Number(el.quality.value) * 100));
}
el.format.addEventListener('change', showQuality);
el.quality.addEventListener('input', showQuality);

el.download.addEventListener('click', async () => {
  if (!state.ad) return;
  const format = el.format.value;
  try {
    const blob = await encodeAd(state.ad.png, format, Number(el.quality.value));
    const a = document.createElement('a');
    a.href = replaceUrl('downloadUrl', blob);
    a.download = adFileName(state.ad.prompt, state.ad.seed, format);
    document.body.append(a);
    a.click();
    a.remove();
  } catch (err) {
    setStatus('error', `Could not save the ad as ${format.toUpperCase()}: ${messageOf(err)}`);
  }
});

// ---------- scene presets, placements, paste ----------

for (const preset of SCENE_PRESETS) el.preset.append(new Option(preset.name, preset.prompt));
el.preset.addEventListener('change', () => {
  if (!el.preset.value) return;
  el.prompt.value = el.preset.value;
  saveSettings();
});
// Editing the prompt by hand leaves the preset list showing its prompt's scene, or none.
function syncPreset() {
  el.preset.value = SCENE_PRESETS.some((p) => p.prompt === el.prompt.value) ? el.prompt.value : '';
}
el.prompt.addEventListener('input', syncPreset);

/** The placements (1:1 feed … 1.91:1 link ad) as sizes this model makes, at its own size and at
 * twice it (two passes), first in the size list. */
function addPlacements(native, multiple) {
  el.placements.replaceChildren();
  if (!(native > 0 && multiple > 0)) return;
  for (const large of [false, true]) {
    for (const placement of PLACEMENTS) {
      const { width, height } = placementSize(placement, native, multiple, large);
      const option = new Option(`${placement.label} · ${width} × ${height}${large ? ' (large)' : ''}`, `${width}x${height}`);
      option.dataset.placement = `${placement.name}${large ? '-large' : ''}`;
      el.placements.append(option);
    }
  }
  el.placements.hidden = false;
}

// Ctrl+V of a copied photo (a file or image data, not text) anywhere on the page: as if it had been dropped.
document.addEventListener('paste', (e) => {
  const files = pastedImages(e);
  if (!files.length || state.generating || state.batch?.running) return;
  e.preventDefault();
  takeFiles(files);
});

// Last line of defence: anything that escapes still ends up in the status line.
// (Not preventDefault-ed: the error still reaches the console for debugging.)
window.addEventListener('unhandledrejection', (e) => {
  if (isFatal(e.reason)) showFatal(e.reason); else setStatus('error', messageOf(e.reason));
});
window.addEventListener('error', (e) => {
  const err = e.error || e.message;
  if (isFatal(err)) showFatal(err); else setStatus('error', messageOf(err));
});
for (const input of [el.prompt, el.size, el.fill, el.position, el.steps, el.seed, el.guidance, el.scheduler, el.format, el.quality]) {
  input.addEventListener('change', saveSettings);
}

start().catch((err) => setStatus('error', messageOf(err)));
