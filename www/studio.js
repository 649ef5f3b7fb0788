// Where the studio runs: in a worker (www/studio-worker.js) when the browser allows it, so that
// the page, or the site a widget is embedded in, stays responsive while the GPU (or, without a
// usable GPU, the CPU) works; on the page itself otherwise (a browser with WebGPU on the page but
// not in workers, a host page whose policy forbids the worker). The page and the widget see the
// same asynchronous studio either way.

import { field, isFatal, webgpuStatus } from './common.js';

const WORKER_URL = new URL('./studio-worker.js', import.meta.url).href;
const MODULE_URL = new URL('../pkg/adcanvas.js', import.meta.url).href;

/**
 * Starts the studio's engine: `{ runsIn: 'worker' | 'page', gpu: { available, software, message }, open }`
 * (`gpu.available`: a hardware GPU the studio can use; without one it runs on the CPU).
 * `open(modelUrl, options)` (options: `{ device: 'auto'|'gpu'|'cpu', quantized_weights }`) loads a
 * model pack and resolves to a studio:
 * `{ info, prepare(bytes[, maskBytes]), setReference(bytes, pfv), generate(params, onProgress), warmUp(params), cancel(),
 * zip(names, pngs), close(), abandon() }`, each method a promise of what the wasm `Studio`'s method of
 * that name returns (src/web.rs); `zip` resolves to the bytes of one .zip of the PNGs (wasm
 * `zip_files`); `close` lets go of this studio, `abandon` of the whole engine after a fatal error.
 * In a worker, studios of one model (same URL and options) share one copy of it: `info.model_id`.
 * `bindings`: an already-initialised wasm module (Trunk's loader) to run on the page with;
 * `inPage`: run on the page even where a worker would do (to compare the two).
 */
export async function startEngine({ bindings = null, inPage = false } = {}) {
  if (!bindings && !inPage) {
    // One worker for the page: every widget on it (and the page) opens its studio there, so
    // widgets asking for the same model share one copy of it. A stopped worker is replaced.
    if (!shared || (await shared)?.stopped) shared = startWorker().catch(() => null);
    const worker = await shared;
    if (worker) return worker;
    shared = null;
  }
  return pageEngine(bindings);
}

let shared = null; // the page's worker engine (a promise), once started

/** The worker, once it has loaded the module; rejects when it cannot start, or when the page has
 * WebGPU that the worker lacks (the studio then runs on the page, on the GPU). */
function startWorker() {
  return new Promise((resolve, reject) => {
    let worker;
    let scriptUrl;
    try {
      // A worker script must come from the page's origin; a module worker made from a blob
      // has that origin and may import the real script from wherever the widget is served.
      const source = new Blob([`import ${JSON.stringify(WORKER_URL)};`], { type: 'text/javascript' });
      scriptUrl = URL.createObjectURL(source);
      worker = new Worker(scriptUrl, { type: 'module', name: 'adcanvas studio' });
    } catch (err) {
      reject(err);
      return;
    }
    const settle = (then) => {
      URL.revokeObjectURL(scriptUrl);
      worker.removeEventListener('error', onError);
      worker.removeEventListener('message', onHello);
      then();
    };
    const fail = (why) => settle(() => { worker.terminate(); reject(new Error(why)); });
    const onError = (e) => fail(e.message || 'the worker did not start');
    const onHello = ({ data }) => {
      if (!data.hello) return;
      if (data.failed) fail(data.failed);
      // WebGPU on the page but not in this browser's workers: the page gets the GPU.
      else if (field(data.gpu, 'available') !== true && !data.navigatorGpu && 'gpu' in navigator) {
        fail(field(data.gpu, 'message'));
      }
      else settle(() => resolve(workerEngine(worker, data.gpu)));
    };
    worker.addEventListener('error', onError);
    worker.addEventListener('message', onHello);
  });
}

function workerEngine(worker, gpu) {
  const pending = new Map(); // id → { resolve, reject, onProgress }
  let nextId = 1;
  let nextStudio = 1;
  let stopped = null;
  const stop = (message) => {
    stopped = `RuntimeError: the studio's worker stopped (${message})`;
    for (const { reject } of pending.values()) reject(new Error(stopped));
    pending.clear();
  };
  worker.addEventListener('error', (e) => stop(e.message || 'uncaught error'));
  worker.addEventListener('messageerror', () => stop('a message could not be read'));
  worker.addEventListener('message', ({ data }) => {
    const call = pending.get(data.id);
    if (!call) return;
    if (data.progress) {
      call.onProgress?.(...data.progress);
      return;
    }
    pending.delete(data.id);
    if (data.ok) call.resolve(data.value);
    // A trap in the worker's module (a lost device, a panic) is named so isFatal() knows it.
    else call.reject(new Error(data.fatal && !isFatal(data.message) ? `RuntimeError: ${data.message}` : data.message));
  });
  const request = (studio, op, args, onProgress, transfer = []) => {
    if (stopped) return Promise.reject(new Error(stopped));
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject, onProgress });
      worker.postMessage({ id, op, args, studio }, transfer);
    });
  };
  const terminate = () => {
    worker.terminate();
    if (!stopped) stop('closed');
  };
  return {
    runsIn: 'worker',
    gpu,
    get stopped() { return stopped !== null; },
    async open(modelUrl, options = {}) {
      // Relative URLs would resolve against the worker's script, not the page.
      const base = new URL(modelUrl, document.baseURI).href;
      const id = nextStudio++;
      const info = await request(id, 'open', [id, base, options]);
      return {
        info,
        // The photo's bytes are copied, not moved: the caller may keep them (to save, to retry).
        prepare: (bytes, mask) => request(id, 'prepare', [bytes, mask]),
        setReference: (bytes, pfv) => request(id, 'setReference', [bytes, pfv]),
        generate: (params, onProgress) => request(id, 'generate', [params], onProgress),
        warmUp: (params) => request(id, 'warmUp', [params]),
        cancel: () => { if (!stopped) worker.postMessage({ op: 'cancel', studio: id }); },
        // This studio only; the worker goes with the page's last one.
        close: async () => {
          const left = await request(id, 'close', []).catch(() => null);
          if (left?.studios === 0) terminate();
        },
        // After a trap or a lost device, the whole worker (every studio in it) is beyond use.
        abandon: terminate,
        zip: (names, pngs) => request(id, 'zip', [names, pngs]).then((v) => v.zip),
      };
    },
  };
}

async function pageEngine(bindings) {
  let wasm = bindings;
  if (!wasm) {
    wasm = await import(MODULE_URL);
    await wasm.default();
  }
  return {
    runsIn: 'page',
    gpu: await webgpuStatus(wasm),
    async open(modelUrl, options = {}) {
      const studio = await wasm.Studio.open(new URL(modelUrl, document.baseURI).href, options);
      return {
        info: studio.model_info(),
        prepare: async (bytes, mask) => (mask ? studio.prepare_with_mask(bytes, mask) : studio.prepare(bytes)),
        setReference: async (bytes, pfv) => studio.set_reference(bytes, pfv),
        generate: (params, onProgress) => studio.generate(params, onProgress),
        warmUp: (params) => studio.warm_up(params),
        cancel: () => studio.cancel(),
        close: async () => studio.free(),
        abandon: () => studio.free(),
        zip: async (names, pngs) => wasm.zip_files(names, pngs),
      };
    },
  };
}
