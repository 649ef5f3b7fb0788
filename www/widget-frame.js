// The host side of the widget's iframe mode (`<adcanvas-studio mode="iframe">`, docs/WIDGET.md):
// the studio runs in frame.html, a document of the widget's own origin inside a sandboxed iframe,
// so the host page's scripts, styles and Content-Security-Policy never meet it. The element keeps
// its API: each call is posted to the frame and answered there (www/frame.js), and the frame's
// events are dispatched on the element again. Messages are accepted only from that iframe's window
// and the widget's origin, and posted to that origin only.

const FRAME_URL = new URL('./frame.html', import.meta.url);
const ATTRIBUTES = ['model', 'prompt', 'reference', 'size', 'placement', 'fill', 'position', 'steps', 'seed',
  'guidance', 'scheduler', 'weights', 'device'];

export class FrameBridge {
  #element;
  #iframe;
  #origin = FRAME_URL.origin;
  #calls = new Map();
  #next = 1;
  #hello;
  state = 'loading';
  png = null;

  /** Mounts the frame in `root` (the element's shadow root) and configures its studio with the
   * element's attributes. `ready` resolves with adcanvas-ready's detail. */
  constructor(element, root) {
    this.#element = element;
    if (!/^https?:$/.test(location.protocol)) throw new Error('the iframe mode needs a page served over http(s)');
    const src = new URL(FRAME_URL);
    src.searchParams.set('origin', location.origin);
    const iframe = document.createElement('iframe');
    iframe.src = src.href;
    iframe.title = 'adcanvas studio';
    // Scripts (the studio), its own origin (the worker, the model cache) and the ad's download.
    iframe.setAttribute('sandbox', 'allow-scripts allow-same-origin allow-downloads');
    iframe.setAttribute('part', 'frame');
    iframe.style.cssText = 'display:block;width:100%;height:640px;border:0;';
    this.#iframe = iframe;
    this.#hello = new Promise((resolve) => { this.onHello = resolve; });
    window.addEventListener('message', (e) => this.#receive(e));
    root.append(iframe);
    this.ready = new Promise((resolve, reject) => { this.#settleReady = { resolve, reject }; });
    this.#hello.then(() => {
      const attributes = {};
      for (const name of ATTRIBUTES) if (element.hasAttribute(name)) attributes[name] = element.getAttribute(name);
      // A relative model or reference URL is the host page's.
      for (const name of ['model', 'reference']) {
        if (attributes[name]) attributes[name] = new URL(attributes[name], document.baseURI).href;
      }
      return this.call('configure', [attributes]);
    }).catch((err) => this.#settleReady.reject(err));
  }

  #settleReady;

  /** Calls the studio's `method` in the frame; resolves with its result. */
  async call(method, args = []) {
    await this.#hello;
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#calls.set(id, { resolve, reject });
      this.#iframe.contentWindow.postMessage({ adcanvas: 1, id, method, args }, this.#origin);
    });
  }

  #receive(e) {
    if (e.source !== this.#iframe.contentWindow || e.origin !== this.#origin) return;
    const msg = e.data;
    if (!msg || msg.adcanvas !== 1) return;
    if (msg.hello) {
      this.onHello();
    } else if (msg.height) {
      this.#iframe.style.height = `${Math.ceil(msg.height)}px`;
    } else if (msg.id != null) {
      const call = this.#calls.get(msg.id);
      this.#calls.delete(msg.id);
      if (!call) return;
      if (msg.error != null) call.reject(new Error(msg.error));
      else call.resolve(msg.result);
    } else if (typeof msg.event === 'string' && msg.event.startsWith('adcanvas-')) {
      this.#track(msg.event, msg.detail);
      this.#element.dispatchEvent(new CustomEvent(msg.event, { detail: msg.detail, bubbles: true, composed: true }));
    }
  }

  #track(type, detail) {
    if (type === 'adcanvas-ready') {
      this.state = 'ready';
      this.#settleReady.resolve({ ...detail, runsIn: 'frame' });
    } else if (type === 'adcanvas-product') {
      this.state = 'ready';
    } else if (type === 'adcanvas-progress') {
      this.state = 'generating';
    } else if (type === 'adcanvas-generated') {
      this.state = 'done';
      this.png = detail?.png ?? null;
    } else if (type === 'adcanvas-error') {
      // Before adcanvas-ready this is why the studio did not start (after it, `ready` stays resolved).
      this.#settleReady.reject(new Error(detail?.message || 'the studio failed to start'));
      this.state = 'error';
    }
  }
}
