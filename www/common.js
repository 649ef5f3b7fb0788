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

/** A trap in the wasm module (panic, lost device) leaves it unusable until a reload. */
export function isFatal(err) {
  return (typeof WebAssembly !== 'undefined' && err instanceof WebAssembly.RuntimeError) ||
    /unreachable|device (was )?lost|RuntimeError/i.test(messageOf(err));
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
  return `Runs on this computer's CPU (one thread): slower than a GPU, but it needs none.${why ? ` ${why}` : ''}`;
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
