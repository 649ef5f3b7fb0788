// The studio's own thread: loads the wasm module and runs its `Studio` (model, prepare, generate)
// here, so that compiling GPU kernels, queueing a UNet step or computing one on the CPU (a browser
// without a usable GPU) never hold the page's main thread.
// Spoken to only by www/studio.js; each request is { id, op, args, studio } and gets one { id, ok, ... }.

import init, { Studio, webgpu_status as webgpuStatusOf, zip_files as zipFiles } from '../pkg/adcanvas.js';
import { isFatal, messageOf } from './common.js';

// Every studio of the page's widgets (and the page), by the id the page gave it. Studios asking
// for the same model (URL and options) share the first one's copy of it (`Studio.share`).
const studios = new Map(); // studio id → { studio, key }
const models = new Map(); // model key → { loading, first: the studio that loaded it, users }

const ops = {
  async open([studioId, modelUrl, options]) {
    const key = JSON.stringify([modelUrl, options ?? {}]);
    let model = models.get(key);
    const loads = !model;
    if (loads) {
      // Widgets opening at once wait for this one load rather than start their own.
      model = { loading: Studio.open(modelUrl, options), first: null, users: 0 };
      models.set(key, model);
    }
    model.users++;
    let first;
    try {
      first = await model.loading;
    } catch (err) {
      if (--model.users === 0 && models.get(key) === model) models.delete(key); // a failed load is not kept
      throw err;
    }
    model.first = first;
    const studio = loads ? first : first.share();
    studios.set(studioId, { studio, key });
    return studio.model_info();
  },
  prepare([bytes, mask], studio) {
    return mask ? studio.prepare_with_mask(bytes, mask) : studio.prepare(bytes);
  },
  setReference([bytes, pfv], studio) {
    return studio.set_reference(bytes, pfv);
  },
  warmUp([params], studio) {
    return studio.warm_up(params);
  },
  generate([params], studio, id) {
    // The step preview (a few KB, every few steps) is copied along with the progress.
    return studio.generate(params, (step, total, preview) => postMessage({ id, progress: [step, total, preview] }));
  },
  close(_, studio, id, studioId) {
    const { key } = studios.get(studioId);
    studios.delete(studioId);
    const model = models.get(key);
    // The first studio is what the next widget shares from: it goes with the model's last user.
    if (studio !== model.first) studio.free();
    if (--model.users === 0) {
      model.first.free();
      models.delete(key);
    }
    return { studios: studios.size };
  },
  zip([names, files]) {
    return { zip: zipFiles(names, files) };
  },
};

self.addEventListener('message', async ({ data: { id, op, args, studio: studioId } }) => {
  const studio = studios.get(studioId)?.studio;
  if (op === 'cancel') {
    if (studio) studio.cancel();
    return;
  }
  try {
    if (op !== 'open' && op !== 'zip' && !studio) throw new Error('The model is not loaded.');
    const value = await ops[op](args, studio, id, studioId);
    // The ad's pixels and PNG move to the page rather than being copied.
    const buffers = value && typeof value === 'object'
      ? Object.values(value).filter((v) => v instanceof Uint8Array).map((v) => v.buffer) : [];
    postMessage({ id, ok: true, value }, buffers);
  } catch (err) {
    postMessage({ id, ok: false, message: messageOf(err), fatal: isFatal(err) });
  }
});

try {
  const wasm = await init();
  // The module's memory as it stands, for the soak test (tests/e2e/soak.mjs) to watch.
  self.adcanvasWasmBytes = () => wasm.memory.buffer.byteLength;
  postMessage({ hello: true, gpu: await webgpuStatusOf(), navigatorGpu: 'gpu' in navigator });
} catch (err) {
  postMessage({ hello: true, failed: messageOf(err) });
}
