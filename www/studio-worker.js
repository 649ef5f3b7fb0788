// The studio's own thread: loads the wasm module and runs its `Studio` (model, prepare, generate)
// here, so that compiling GPU kernels, queueing a UNet step or computing one on the CPU (a browser
// without a usable GPU) never hold the page's main thread.
// Spoken to only by www/studio.js; each request is { id, op, args } and gets one { id, ok, ... }.

import init, { Studio, webgpu_status as webgpuStatusOf, zip_files as zipFiles } from '../pkg/adcanvas.js';
import { isFatal, messageOf } from './common.js';

let studio = null;

const ops = {
  async open([modelUrl, options]) {
    studio = await Studio.open(modelUrl, options);
    return studio.model_info();
  },
  prepare([bytes, mask]) {
    return mask ? studio.prepare_with_mask(bytes, mask) : studio.prepare(bytes);
  },
  setReference([bytes, pfv]) {
    return studio.set_reference(bytes, pfv);
  },
  generate([params], id) {
    // The step preview (a few KB, every few steps) is copied along with the progress.
    return studio.generate(params, (step, total, preview) => postMessage({ id, progress: [step, total, preview] }));
  },
  zip([names, files]) {
    return { zip: zipFiles(names, files) };
  },
};

self.addEventListener('message', async ({ data: { id, op, args } }) => {
  if (op === 'cancel') {
    if (studio) studio.cancel();
    return;
  }
  try {
    if (op !== 'open' && !studio) throw new Error('The model is not loaded.');
    const value = await ops[op](args, id);
    // The ad's pixels and PNG move to the page rather than being copied.
    const buffers = value && typeof value === 'object'
      ? Object.values(value).filter((v) => v instanceof Uint8Array).map((v) => v.buffer) : [];
    postMessage({ id, ok: true, value }, buffers);
  } catch (err) {
    postMessage({ id, ok: false, message: messageOf(err), fatal: isFatal(err) });
  }
});

try {
  await init();
  postMessage({ hello: true, gpu: await webgpuStatusOf(), navigatorGpu: 'gpu' in navigator });
} catch (err) {
  postMessage({ hello: true, failed: messageOf(err) });
}
