// What the page (app.js) and the embeddable widget (widget.js) both need from the wasm module:
// reading its return values, naming its errors, and asking it whether WebGPU works here.

/** Human-readable message from anything that was thrown or rejected. */
export function messageOf(err) {
  if (err == null) return 'Unknown error';
  if (typeof err === 'string') return err;
  if (err instanceof Error) return err.message || String(err);
  if (typeof err.message === 'string') return err.message;
  try { return JSON.stringify(err); } catch { return String(err); }
}

/** Read a field from a plain object, a Map (serde-wasm-bindgen) or a wasm-bindgen class. */
export function field(obj, key) {
  if (obj == null) return undefined;
  if (obj instanceof Map) return obj.get(key);
  return obj[key];
}

/** Accept Uint8Array, ArrayBuffer, Uint8ClampedArray or a plain number array. */
export function toBytes(v) {
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (Array.isArray(v)) return Uint8Array.from(v);
  throw new Error('unexpected byte buffer from the wasm module');
}

/** The bytes of a File, Blob, ArrayBuffer or typed array, as the studio takes them. */
export async function bytesOf(data) {
  if (data instanceof Blob) return new Uint8Array(await data.arrayBuffer());
  return toBytes(data);
}

/** The pipeline's own answer when the GPU stops mid-run (`PipelineError::Gpu`), its advice at the end. */
const GPU_STOPPED = /^(The GPU stopped responding \(.*\)\.) Your photo and settings are kept: .*$/s;

/** A trap in the wasm module (panic, lost device) leaves it unusable until a reload; so does a GPU
 * the pipeline found stopped (a destroyed device fails the next read back, not with a trap). */
export function isFatal(err) {
  const message = messageOf(err);
  return (typeof WebAssembly !== 'undefined' && err instanceof WebAssembly.RuntimeError) ||
    /unreachable|device (was )?lost|RuntimeError/i.test(message) || GPU_STOPPED.test(message);
}

/** What stopped, as one sentence for a fatal error's message, the page's advice to follow it. */
export function fatalCause(err) {
  const message = messageOf(err);
  const gpu = GPU_STOPPED.exec(message);
  return gpu ? gpu[1] : `The GPU or the WebAssembly engine stopped (${message}).`;
}

/** `{ available, software, message }` from the module's own check; a failing check counts as
 * unavailable (the studio then runs on the CPU). */
export async function webgpuStatus(wasm) {
  try {
    const gpu = await wasm.webgpu_status();
    return {
      available: field(gpu, 'available') === true,
      software: field(gpu, 'software') === true,
      message: field(gpu, 'message') ||
        'WebGPU is not available. Use a recent Chrome, Edge or another browser with WebGPU enabled.',
    };
  } catch (err) {
    return { available: false, software: false, message: `WebGPU check failed: ${messageOf(err)}` };
  }
}

/** `?device=` on the page, `device` on the widget: 'auto' (default), 'gpu' or 'cpu'. */
export function deviceOf(value) {
  const v = String(value || 'auto').trim().toLowerCase();
  if (!['auto', 'gpu', 'cpu'].includes(v)) throw new Error(`device "${value}": expected auto, gpu or cpu`);
  return v;
}

/** What the studio runs on, in a sentence for the user, from its model info. */
export function deviceSentence(info) {
  if (field(info, 'device') !== 'cpu') return 'Runs on your GPU (WebGPU).';
  const why = field(info, 'device_note');
  // A second worker shares each ad's work when there is a second core (www/studio-worker.js).
  const cores = field(info, 'workers') === 2 ? 'two cores' : 'one core';
  return `Runs on this computer's CPU (${cores}): slower than a GPU, but it needs none.${why ? ` ${why}` : ''}`;
}

/**
 * Counts down an ad's time from its progress: `tick(step, total)` returns " · about N s left"
 * once two steps have run, timed from the end of the first (the first step of a size may include
 * the GPU compiling its kernels), or '' before that.
 */
export function remainingTime() {
  let first = null;
  return (step, total) => {
    const now = performance.now();
    if (step <= 1 || first === null) {
      if (step >= 1) first = { step, at: now };
      return '';
    }
    const perStep = (now - first.at) / (step - first.step);
    const left = Math.max(0, total - step) * perStep / 1000;
    return ` · about ${left < 10 ? left.toFixed(1) : Math.round(left)} s left`;
  };
}

/** How often the studio sends a step preview: about five times a run. */
export function previewEvery(steps) {
  return Math.max(1, Math.round(steps / 5));
}

/** Draws a step preview (`{ width, height, rgba }`, one pixel per latent cell) over the whole of
 * `canvas`, sized `width` × `height` (the ad's size), smoothly scaled up. */
export function drawPreview(canvas, preview, width, height) {
  const cells = new OffscreenCanvas(preview.width, preview.height);
  const rgba = toBytes(preview.rgba);
  cells.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(rgba.buffer, rgba.byteOffset, rgba.byteLength), preview.width, preview.height), 0, 0);
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const ctx = canvas.getContext('2d');
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(cells, 0, 0, width, height);
}

/** The ad's pixels as ImageData, checked against the size the module reports. */
export function resultImage(out) {
  const width = Number(field(out, 'width'));
  const height = Number(field(out, 'height'));
  const rgba = toBytes(field(out, 'rgba'));
  if (rgba.length !== width * height * 4) {
    throw new Error(`result has ${rgba.length} bytes, expected ${width * height * 4}`);
  }
  const p = field(out, 'placement');
  return {
    width,
    height,
    rgba,
    imageData: new ImageData(new Uint8ClampedArray(rgba.buffer, rgba.byteOffset, rgba.byteLength), width, height),
    placement: { x: field(p, 'x'), y: field(p, 'y'), w: field(p, 'w'), h: field(p, 'h') },
    // What the user should know about this ad (a product smaller than the model was trained on).
    notes: Array.from(field(out, 'notes') ?? [], String),
    png: new Blob([toBytes(field(out, 'png'))], { type: 'image/png' }),
  };
}

/** `'256'` or `'384x256'` (width × height) → `{ width, height }`; null if it is neither. */
export function parseSize(text) {
  const m = /^\s*(\d+)\s*(?:[x×]\s*(\d+))?\s*$/i.exec(String(text));
  if (!m) return null;
  const width = Number(m[1]);
  return { width, height: m[2] === undefined ? width : Number(m[2]) };
}

/** Named scenes a seller starts from (the prompt stays editable): phrased as the default model's
 * training captions are (training/scenes.py, training/photo_sources.csv), so that it follows them. */
export const SCENE_PRESETS = [
  { name: 'Studio grey', prompt: 'on a seamless light grey studio backdrop, soft even light' },
  { name: 'Marble counter', prompt: 'on a white marble counter against a white wall, soft morning light' },
  { name: 'Wooden table', prompt: 'on a rustic wooden table, warm afternoon light' },
  { name: 'Kitchen', prompt: 'on a kitchen counter in a bright kitchen, daylight' },
  { name: 'Beach at sunset', prompt: 'on the sand of a beach at sunset, warm golden light' },
  { name: 'Lake view', prompt: 'on a wooden jetty by a mountain lake, clear morning light' },
  { name: 'Forest floor', prompt: 'on the forest floor among moss and ferns, dappled sunlight' },
  { name: 'Spring flowers', prompt: 'among spring flowers in a garden, fresh daylight' },
  { name: 'Autumn leaves', prompt: 'on autumn leaves, warm orange light' },
  { name: 'Holiday', prompt: 'on a table with christmas lights and pine branches, cosy evening light' },
  { name: 'Concrete podium', prompt: 'on a concrete podium against a pastel wall, studio light' },
  { name: 'Linen fabric', prompt: 'on natural linen fabric, soft window light' },
];

/** Where an ad goes, by its aspect (width : height). */
export const PLACEMENTS = [
  { name: 'feed', label: '1:1 feed', aspect: 1 },
  { name: 'portrait', label: '4:5 portrait feed', aspect: 4 / 5 },
  { name: 'story', label: '9:16 story / reel', aspect: 9 / 16 },
  { name: 'video', label: '16:9 video', aspect: 16 / 9 },
  { name: 'link', label: '1.91:1 link ad', aspect: 1.91 },
];

/**
 * The size the model makes for a placement: the shorter side at the model's own size (`native`),
 * or twice it when `large` (made in two passes: laid out at half, then refined), the longer side
 * the nearest multiple of the model's step (`multiple`; twice it when large, so the half-size
 * layout is a size the model makes too) to the placement's aspect.
 */
export function placementSize(placement, native, multiple, large = false) {
  const short = large ? 2 * native : native;
  const step = large ? 2 * multiple : multiple;
  const long = Math.max(short, Math.round((short * Math.max(placement.aspect, 1 / placement.aspect)) / step) * step);
  return placement.aspect >= 1 ? { width: long, height: short } : { width: short, height: long };
}

/** `on a marble counter`, seed 7, `jpg` → `adcanvas-on-a-marble-counter-seed7.jpg`. */
export function adFileName(prompt, seed, ext) {
  let slug = '';
  for (const word of String(prompt || '').toLowerCase().normalize('NFKD').split(/[^a-z0-9]+/).filter(Boolean)) {
    if (slug.length + word.length + 1 > 60) break; // whole words, up to 60 characters
    slug += `-${word}`;
  }
  return `adcanvas${slug}-seed${seed}.${ext}`;
}

/** Download formats: the ad's own PNG, or JPEG / WebP encoded by the browser at `quality` (0–1). */
export const FORMATS = { png: 'image/png', jpg: 'image/jpeg', webp: 'image/webp' };

/** The ad (`png`, a Blob) in `format` ('png' | 'jpg' | 'webp'). JPEG has no transparency: the ads
 * are opaque, so nothing is lost but what the quality setting gives away. */
export async function encodeAd(png, format, quality = 0.92) {
  const type = FORMATS[format];
  if (!type) throw new Error(`unknown format "${format}": expected png, jpg or webp`);
  if (format === 'png') return png;
  const bitmap = await createImageBitmap(png);
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  canvas.getContext('2d').drawImage(bitmap, 0, 0);
  bitmap.close();
  const blob = await canvas.convertToBlob({ type, quality });
  if (blob.type !== type) throw new Error(`this browser cannot encode ${format.toUpperCase()}`);
  return blob;
}

/** Image files among pasted clipboard items (Ctrl-V of a copied photo or screenshot). */
export function pastedImages(event) {
  const files = [];
  for (const item of event.clipboardData?.items ?? []) {
    if (item.kind === 'file' && item.type.startsWith('image/')) {
      const file = item.getAsFile();
      if (!file) continue;
      // Chromium names every pasted image image.png: say where it came from instead.
      const generic = !file.name || file.name === 'image.png';
      files.push(generic ? new File([file], `pasted-image.${file.type.split('/')[1] || 'png'}`, { type: file.type }) : file);
    }
  }
  return files;
}
