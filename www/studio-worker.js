// The studio's own thread: loads the wasm module and runs its `Studio` (model, prepare, generate)
// here, so that compiling GPU kernels, queueing a UNet step or computing one on the CPU (a browser
// without a usable GPU) never hold the page's main thread.
// Spoken to only by www/studio.js; each request is { id, op, args, studio } and gets one { id, ok, ... }.
//
// On the CPU with two or more cores, this worker starts a helper: a second instance of this
// script, with its own copy of the model, to which it forwards every studio's open, prepare and
// style reference. Each ad then runs in both in lockstep, the helper computing the unconditional
// half of every guided step (src/pipeline/partner.rs): wasm here has no shared-memory threads,
// and the two halves are two UNet calls anyway, so two cores make the same ad in 0.6–0.75× the
// denoising time (BENCHMARKS.md). A helper that fails, or is not ready yet, only means an ad runs on one core.

import init, { Studio, webgpu_status as webgpuStatusOf, zip_files as zipFiles } from '../pkg/adcanvas.js';
import { field, isFatal, messageOf } from './common.js';

// Every studio of the page's widgets (and the page), by the id the page gave it. Studios asking
// for the same model (URL and options) share the first one's copy of it (`Studio.share`).
const studios = new Map(); // studio id → { studio, key, helped }
const models = new Map(); // model key → { loading, first: the studio that loaded it, users }

const IS_HELPER = self.name === 'adcanvas helper';
let gpuStatus = null; // this worker's WebGPU, once known
let helper = null; // the helper (a promise of { request, cancel, studios, lost }), once started

const ops = {
  async open([studioId, modelUrl, options]) {
    // The helper opens the same model at the same time (it would only help on the CPU).
    const helping = wantsHelper(options) ? helperOpen(studioId, modelUrl, options) : Promise.resolve(false);
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
      helping.then(() => helperForget(studioId)); // nor the helper's copy
      throw err;
    }
    model.first = first;
    const studio = loads ? first : first.share();
    const info = studio.model_info();
    // On a GPU the helper has nothing to do: its copy is let go.
    const helped = (await helping) && info.device === 'cpu';
    if (!helped) helperForget(studioId);
    studios.set(studioId, { studio, key, helped });
    info.workers = helped ? 2 : 1;
    return info;
  },
  prepare([bytes, mask], studio, id, studioId) {
    helperForward(studioId, 'prepare', [bytes, mask]);
    return mask ? studio.prepare_with_mask(bytes, mask) : studio.prepare(bytes);
  },
  setReference([bytes, pfv], studio, id, studioId) {
    helperForward(studioId, 'setReference', [bytes, pfv]);
    return studio.set_reference(bytes, pfv);
  },
  warmUp([params], studio) {
    return studio.warm_up(params);
  },
  async generate([params, port], studio, id, studioId) {
    if (IS_HELPER) {
      // The unconditional half of each step, swapped over `port`; resolves to null when done.
      const side = lockstepSide(port, 'uncond');
      try {
        return await studio.generate(params, () => {}, side);
      } finally {
        side.end('stopped');
      }
    }
    // The step preview (a few KB, every few steps) is copied along with the progress.
    const onProgress = (step, total, preview) => postMessage({ id, progress: [step, total, preview] });
    const pair = await helperPair(studioId, params);
    if (!pair) return studio.generate(params, onProgress);
    try {
      const out = await studio.generate(params, onProgress, pair);
      out.helper_steps = pair.swaps; // the steps whose other half the helper computed
      return out;
    } finally {
      pair.end('finished');
    }
  },
  close(_, studio, id, studioId) {
    helperForget(studioId);
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

/** Whether a studio opened with `options` should have the helper: this worker is not one,
 * the ads will run on the CPU, there is a second core, the device is not short of memory (the
 * helper holds a second copy of the model: Chromium's `deviceMemory`, in GB, is under 2 only on
 * low-end phones), and the page did not turn it off (`helper: false`, the page's `?helper=0`). */
function wantsHelper(options = {}) {
  const cpu = options.device === 'cpu' || (options.device !== 'gpu' && field(gpuStatus, 'available') !== true);
  const cores = navigator.hardwareConcurrency ?? 1;
  const memory = navigator.deviceMemory ?? 8; // not reported by every browser
  return !IS_HELPER && cpu && options.helper !== false && cores >= 2 && memory >= 2;
}

/** The helper worker, started once: `{ request(studioId, op, args, transfer), cancel(studioId),
 * lost }` (`lost`: why it stopped, or null). */
function startHelper() {
  return new Promise((resolve) => {
    let worker;
    try {
      // As the page does for this worker: a blob of this worker's origin imports the script.
      const source = new Blob([`import ${JSON.stringify(import.meta.url)};`], { type: 'text/javascript' });
      worker = new Worker(URL.createObjectURL(source), { type: 'module', name: 'adcanvas helper' });
    } catch (err) {
      console.warn(`adcanvas: no helper worker (${messageOf(err)}); ads run on one core`);
      resolve(null);
      return;
    }
    const pending = new Map(); // id → { resolve, reject }
    let nextId = 1;
    const api = {
      lost: null,
      sides: new Set(), // this worker's lockstep sides paired with the helper
      request(studioId, op, args, transfer = []) {
        if (api.lost) return Promise.reject(new Error(api.lost));
        const id = nextId++;
        return new Promise((resolve, reject) => {
          pending.set(id, { resolve, reject });
          worker.postMessage({ id, op, args, studio: studioId }, transfer);
        });
      },
      cancel(studioId) {
        if (!api.lost) worker.postMessage({ op: 'cancel', studio: studioId });
      },
    };
    const lose = api.lose = (why) => {
      if (api.lost) return;
      api.lost = `the helper worker stopped (${why})`;
      console.warn(`adcanvas: ${api.lost}; ads run on one core`);
      for (const { reject } of pending.values()) reject(new Error(api.lost));
      pending.clear();
      for (const side of api.sides) side.fail(api.lost);
      worker.terminate();
    };
    worker.addEventListener('error', (e) => { lose(e.message || 'uncaught error'); resolve(null); });
    worker.addEventListener('message', ({ data }) => {
      if (data.hello) {
        if (data.failed) { lose(data.failed); resolve(null); } else resolve(api);
        return;
      }
      const call = pending.get(data.id);
      if (!call || data.progress) return;
      pending.delete(data.id);
      if (data.ok) call.resolve(data.value);
      else call.reject(new Error(data.message));
    });
  });
}

// Per studio, the helper's copy of it: the chain of forwarded requests, and whether all of
// them succeeded (a helper whose photo failed to load, say, does not help that studio).
const helperStudios = new Map(); // studio id → { chain, ok }

/** Opens the studio's model in the helper; resolves to whether it did. */
async function helperOpen(studioId, modelUrl, options) {
  helper ??= startHelper();
  const h = await helper;
  if (!h || h.lost) return false;
  const entry = { chain: null, ok: true };
  entry.chain = h.request(studioId, 'open', [studioId, modelUrl, { ...options, device: 'cpu' }])
    .then(() => true, (err) => { console.warn(`adcanvas: the helper could not load the model (${messageOf(err)})`); entry.ok = false; return false; });
  helperStudios.set(studioId, entry);
  return entry.chain;
}

/** Sends a request the studio also runs here to the helper's copy, after the ones before it. */
function helperForward(studioId, op, args) {
  const entry = helperStudios.get(studioId);
  if (!entry) return;
  entry.chain = entry.chain.then(async (ok) => {
    const h = await helper;
    if (!ok || !h || h.lost) return false;
    return h.request(studioId, op, args).then(() => true, () => false);
  });
  entry.chain.then((ok) => { entry.ok = ok; });
}

/** Lets go of the studio's copy in the helper (the helper goes with this worker). */
function helperForget(studioId) {
  const entry = helperStudios.get(studioId);
  if (!entry) return;
  helperStudios.delete(studioId);
  entry.chain.then(async () => (await helper)?.request(studioId, 'close', [])).catch(() => {});
}

/** This ad's lockstep side, with the helper's generation started on the other; null when the
 * helper is not ready for this studio (still loading or preparing, failed, stopped). */
async function helperPair(studioId, params) {
  const entry = helperStudios.get(studioId);
  const h = helper && await helper;
  if (!entry || !h || h.lost) return null;
  // Ready means: every request forwarded so far has been answered, and all succeeded. The
  // helper runs them beside this worker, so it is ready about when this one is; one that is
  // still busy after a few seconds sits this ad out.
  const ready = await Promise.race([entry.chain, new Promise((resolve) => setTimeout(resolve, 3000, 'not yet'))]);
  if (ready !== true) return null;
  const channel = new MessageChannel();
  const side = lockstepSide(channel.port1, 'cond');
  h.sides.add(side);
  side.onEnd = () => h.sides.delete(side);
  // A helper that went quiet (closed, or killed without an error event) is let go for good,
  // so later ads do not wait for it.
  side.onSilent = (why) => h.lose(why);
  h.request(studioId, 'generate', [params, channel.port2], [channel.port2])
    .catch((err) => side.fail(`the helper failed: ${messageOf(err)}`));
  return side;
}

/**
 * One side of a lockstep pair over a MessagePort: `{ half, exchange, end, fail }` as the wasm
 * studio's `generate` takes its partner (src/web.rs). Each side has at most one swap waiting at
 * a time, so the halves pair up in order; `end` tells the other side this one is done (its
 * waiting swap fails, and its studio goes on alone, or, the helper, stops), `fail` fails this
 * side's own waiting swap. A swap the other side leaves unanswered for 10 s plus four times this
 * side's slowest step so far fails too (`onSilent` is told): a worker that dies without a word
 * never leaves an ad waiting.
 */
function lockstepSide(port, half) {
  const arrived = [];
  let waiting = null;
  let over = null;
  let lastCall = null;
  let slowestStep = 0;
  const fail = (why) => {
    over ??= why;
    waiting?.reject(new Error(over));
    waiting = null;
  };
  port.onmessage = ({ data }) => {
    if (data.end) fail(`the other worker ${data.end}`);
    else if (waiting) { side.swaps++; waiting.resolve(data); waiting = null; } else arrived.push(data);
  };
  const side = {
    half,
    swaps: 0, // halves received
    onEnd: null,
    onSilent: null,
    exchange(step, fingerprint, mine) {
      if (over) return Promise.reject(new Error(over));
      const now = performance.now();
      if (lastCall !== null) slowestStep = Math.max(slowestStep, now - lastCall);
      lastCall = now;
      port.postMessage({ step, fingerprint, half: mine }, [mine.buffer]);
      if (arrived.length) { side.swaps++; return Promise.resolve(arrived.shift()); }
      const limit = 10_000 + 4 * slowestStep;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          const why = `the other worker did not answer for ${Math.round(limit / 1000)} s`;
          fail(why);
          side.onSilent?.(why);
        }, limit);
        const done = (settle) => (value) => { clearTimeout(timer); settle(value); };
        waiting = { resolve: done(resolve), reject: done(reject) };
      });
    },
    end(why) {
      port.postMessage({ end: why });
      fail(why);
      port.close();
      side.onEnd?.();
    },
    fail,
  };
  return side;
}

self.addEventListener('message', async ({ data: { id, op, args, studio: studioId } }) => {
  const studio = studios.get(studioId)?.studio;
  if (op === 'cancel') {
    if (studio) studio.cancel();
    helper?.then((h) => h?.cancel(studioId));
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
  gpuStatus = IS_HELPER ? null : await webgpuStatusOf();
  postMessage({ hello: true, gpu: gpuStatus, navigatorGpu: 'gpu' in navigator });
} catch (err) {
  postMessage({ hello: true, failed: messageOf(err) });
}
