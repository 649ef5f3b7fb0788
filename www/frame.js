// The inside of the widget's iframe mode (frame.html): an <adcanvas-studio> in its own document,
// driven by the host page through postMessage. It talks to one origin only, the `origin` query
// parameter the host's widget.js put in the frame's URL: every message from anywhere else, or from
// any window but the parent, is ignored, and every reply and event is posted to that origin alone.
//
//   host → frame  { adcanvas: 1, id, method, args }   method: configure | setProduct | setReference
//                                                      | generate | generateAll | zip | cancel
//   frame → host  { adcanvas: 1, hello: true }          once, when the frame has loaded
//                 { adcanvas: 1, id, result } or { adcanvas: 1, id, error }
//                 { adcanvas: 1, event, detail }        every adcanvas-* event of the studio

import './widget.js';

const EVENTS = ['adcanvas-ready', 'adcanvas-product', 'adcanvas-progress', 'adcanvas-generated', 'adcanvas-error', 'adcanvas-batch'];
const METHODS = new Set(['setProduct', 'setReference', 'generate', 'moreLikeThis', 'refine', 'generateVariants', 'generateAll', 'zip', 'cancel', 'continueOnCpu']);
// Attributes the host may set on the studio (the widget's own, docs/WIDGET.md).
const ATTRIBUTES = new Set(['model', 'prompt', 'reference', 'size', 'placement', 'fill', 'position', 'steps', 'seed',
  'guidance', 'scheduler', 'weights', 'device']);

const allowed = new URLSearchParams(location.search).get('origin');
let studio = null;

function post(message) {
  parent.postMessage({ adcanvas: 1, ...message }, allowed);
}

/** A result the host can receive: DOM-free, structured-cloneable (Blobs are). */
function plain(value) {
  if (value == null || typeof value !== 'object' || value instanceof Blob) return value ?? null;
  return JSON.parse(JSON.stringify(value, (k, v) => (v instanceof Blob ? undefined : v)));
}

function configure(attributes = {}) {
  if (studio) throw new Error('the studio is configured already');
  studio = document.createElement('adcanvas-studio');
  for (const [name, value] of Object.entries(attributes)) {
    if (!ATTRIBUTES.has(name)) throw new Error(`unknown attribute "${name}"`);
    // A model or a reference is fetched by the frame: relative URLs are the host page's.
    studio.setAttribute(name, String(value));
  }
  for (const type of EVENTS) {
    studio.addEventListener(type, (e) => post({ event: type, detail: e.detail }));
  }
  document.body.append(studio);
  return null;
}

async function call(method, args) {
  if (method === 'configure') return configure(...args);
  if (!METHODS.has(method)) throw new Error(`unknown method "${method}"`);
  if (!studio) throw new Error('configure the studio first');
  const result = await studio[method](...args);
  // generate() resolves to the event's detail, whose png (a Blob) the host wants too.
  if (result && typeof result === 'object' && result.png instanceof Blob) return { ...plain(result), png: result.png };
  if (Array.isArray(result)) return result.map((r) => (r.ad ? { ...r, ad: { ...plain(r.ad), png: r.ad.png } } : r));
  return plain(result);
}

if (!allowed || parent === window) {
  document.body.innerHTML = '<p class="refused">This page is the inside of the adcanvas widget\'s iframe mode; embed it with <code>&lt;adcanvas-studio mode="iframe"&gt;</code>.</p>';
} else {
  window.addEventListener('message', async (e) => {
    if (e.source !== parent || e.origin !== allowed) {
      console.warn(`adcanvas frame: ignored a message from ${e.origin}; it answers ${allowed} only`);
      return;
    }
    const { adcanvas, id, method, args } = e.data || {};
    if (adcanvas !== 1 || typeof method !== 'string') return;
    try {
      post({ id, result: await call(method, Array.isArray(args) ? args : []) });
    } catch (err) {
      post({ id, error: err?.message || String(err) });
    }
  });
  post({ hello: true });
  // The host's iframe grows and shrinks with the studio (the brush, the ads' list).
  new ResizeObserver(() => post({ height: document.documentElement.scrollHeight })).observe(document.body);
}
