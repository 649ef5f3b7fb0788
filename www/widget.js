// <adcanvas-studio>: adcanvas as a widget for other sites (docs/WIDGET.md).
//
//   <script type="module" src="https://YOUR-HOST/adcanvas/www/widget.js"></script>
//   <adcanvas-studio prompt="on a marble counter, soft morning light"></adcanvas-studio>
//
// A custom element with its own shadow DOM, so the host page's styles and the widget's do not mix.
// It loads the wasm module and the model pack from where this script lives (or from `model`),
// runs the same `Studio` the page runs, in a worker where the browser allows (www/studio.js; one
// for the page, and widgets with the same model share one copy of it) so the host page never
// freezes, and tells the host page what happened through DOM events: adcanvas-ready,
// adcanvas-product, adcanvas-progress, adcanvas-generated, adcanvas-error.
// Nothing is uploaded anywhere: the photo stays in the visitor's browser.

import {
  PLACEMENTS, SCENE_PRESETS, adFileName, bytesOf, deviceOf, deviceSentence, drawPreview, encodeAd, fatalCause, field, isFatal,
  messageOf, parseSize, pastedImages, placementSize, previewEvery, remainingTime, resultImage, toBytes,
} from './common.js';
import { MaskEditor, isCutoutFailure } from './mask-editor.js';
import { startEngine } from './studio.js';
import { FrameBridge } from './widget-frame.js';

const DEFAULT_MODEL_URL = new URL('../models/default/', import.meta.url).href;

const TEMPLATE = `
<style>
  :host {
    --adcanvas-accent: #4f46e5;
    display: block;
    max-width: 560px;
    font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif;
    color: #1c2233;
  }
  [hidden] { display: none !important; }
  .frame { border: 1px solid #dde2ec; border-radius: 12px; padding: 14px; background: #fff; display: grid; gap: 10px; }
  .drop { display: block; border: 2px dashed #c6cce0; border-radius: 10px; padding: 14px; text-align: center; cursor: pointer; color: #5c667a; }
  .drop.dragging { border-color: var(--adcanvas-accent); background: #eef0ff; }
  .drop input { position: absolute; width: 1px; height: 1px; opacity: 0; }
  .drop strong { color: #1c2233; }
  .row { display: flex; gap: 8px; }
  .row input[type=text] { flex: 1; min-width: 0; padding: 7px 9px; border: 1px solid #c6cce0; border-radius: 8px; font: inherit; }
  button { font: inherit; padding: 7px 14px; border-radius: 8px; border: 1px solid #c6cce0; background: #fff; cursor: pointer; }
  button.primary { background: var(--adcanvas-accent); border-color: var(--adcanvas-accent); color: #fff; }
  button:disabled { opacity: 0.5; cursor: default; }
  progress { width: 100%; }
  .status { margin: 0; color: #5c667a; }
  .status[data-state=error] { color: #9b1c1c; }
  .status[data-state=done] { color: #166534; }
  canvas { display: block; max-width: 100%; height: auto; border-radius: 8px; background: #f4f6fb; }
  select { font: inherit; padding: 6px 8px; border: 1px solid #c6cce0; border-radius: 8px; background: #fff; }
  .reference-thumb { width: 36px; height: 36px; object-fit: cover; border-radius: 6px; border: 1px solid #dde2ec; }
  .ads { list-style: none; margin: 0; padding: 0; display: flex; flex-wrap: wrap; gap: 8px; }
  .ads li { width: 72px; font-size: 11px; color: #5c667a; overflow-wrap: anywhere; }
  .ads li[data-state=failed] { color: #9b1c1c; }
  .ads img { display: block; width: 72px; height: 72px; object-fit: contain; border-radius: 6px; background: #f4f6fb; }
</style>
<div class="frame" part="frame">
  <label class="drop" part="drop">
    <input type="file" multiple accept="image/png,image/jpeg,image/webp,.png,.jpg,.jpeg,.webp">
    <strong>Drop a product photo</strong> or click to choose one (several: one ad each)
    <div class="file-name"></div>
  </label>
  <div class="row mask-row" hidden>
    <button type="button" class="edit-mask" title="Add to the product or erase from it with a brush, over the photo">Edit the mask</button>
  </div>
  <div class="mask-editor"></div>
  <select class="preset" aria-label="Scene preset">
    <option value="">Choose a scene, or describe one below</option>
  </select>
  <form class="row" autocomplete="off">
    <input type="text" class="prompt" aria-label="Scene prompt" placeholder="Describe the scene, e.g. on a marble counter">
    <img class="reference-thumb" alt="The style reference in use" title="The style reference in use" hidden>
    <button type="submit" class="primary generate" disabled>Generate</button>
    <button type="button" class="cancel" hidden>Cancel</button>
  </form>
  <progress max="1" value="0" hidden></progress>
  <p class="status" role="status" aria-live="polite" data-state="loading">Starting…</p>
  <button type="button" class="recover" hidden>Continue on the CPU</button>
  <canvas class="result" aria-label="Generated ad image" hidden></canvas>
  <div class="row result-actions" hidden>
    <button type="button" class="download">Download</button>
    <button type="button" class="more" title="A new ad from this one's own pixels: its layout and colours stay">More like this</button>
    <button type="button" class="refine" title="Go over this ad once more, keeping it close">Refine</button>
    <select class="format" aria-label="File format"><option value="png">PNG</option><option value="jpg">JPEG</option><option value="webp">WebP</option></select>
    <button type="button" class="download-all" hidden>Download all (.zip)</button>
  </div>
  <ol class="ads" aria-label="Ads from your photos" hidden></ol>
</div>`;

function referenceReport(r) {
  return r ? { patches: field(r, 'patches'), hiddenPatches: field(r, 'hidden_patches'), tokens: field(r, 'tokens') } : null;
}

/** `left`, `center`/`centre`, `right` or a number from 0 to 1 → the layout's `position`. */
function positionOf(value) {
  const named = { left: 0.15, center: 0.5, centre: 0.5, right: 0.85 }[String(value).trim()];
  const n = named ?? Number(value);
  if (!Number.isFinite(n) || n < 0 || n > 1) {
    throw new Error(`The position must be left, center, right or a number from 0 to 1, not "${value}".`);
  }
  return n;
}

/** `kettle.jpg` → `kettle-ad.png`. */
function adName(photoName) {
  return `${String(photoName).replace(/\.[^.]*$/, '') || 'photo'}-ad.png`;
}

/** The widget. Attributes (read when it connects): model, prompt, reference, size or placement, fill, position,
 * steps, seed, guidance, weights, device. */
export class AdcanvasStudio extends HTMLElement {
  static observedAttributes = ['prompt'];

  #studio = null;
  #prepared = false;
  #generating = false;
  #crashed = false;
  #png = null;
  #ads = [];        // the last generateAll's ads: [{ name, png }]
  #batching = false;
  #nativeSize = 0;
  #sizeMultiple = 0;
  #ad = null;        // the last ad: { png, prompt, seed }
  #ui = null;
  #ready = null;
  #runsIn = null;
  #hasReference = false;
  #connected = null; // resolves when the element first joins a document: it renders then
  #maskEditor = null;
  #bridge = null;    // mode="iframe": the studio runs in frame.html (www/widget-frame.js)
  #productId = 0;    // counts the photos prepared: More like this starts from an ad of the current one only
  #device = null;    // 'cpu' after "Continue on the CPU"; otherwise the device attribute's
  #maskGiven = null; // the mask the current photo was prepared with (given or painted), for a restart
  #photo = null;     // the photo last given to setProduct, prepared or not: the brush paints on it
  #mask = null;      // its mask as prepared: { png (grey preview), width, height }
  #onConnected = null;
  #released = false; // taken off the page: its studio closed (disconnectedCallback)

  constructor() {
    super();
    this.#connected = new Promise((resolve) => { this.#onConnected = resolve; });
  }

  /** Resolves with the model's info once the model is loaded; rejects if it cannot be. */
  get ready() {
    this.#ready ??= this.#start();
    return this.#ready;
  }

  /** 'loading' | 'ready' | 'generating' | 'done' | 'cancelled' | 'error' */
  get state() {
    if (this.#bridge) return this.#bridge.state;
    return this.#ui ? this.#ui.status.dataset.state : 'loading';
  }

  /** 'worker' (the GPU's or CPU's work never holds the host page's main thread), 'page', or 'frame'
   * (mode="iframe"); null until loaded. */
  get runsIn() {
    return this.#bridge ? 'frame' : this.#runsIn;
  }

  /** The last ad as a PNG Blob, or null. */
  get png() {
    return this.#bridge ? this.#bridge.png : this.#png;
  }

  connectedCallback() {
    if (this.#released) {
      // Back on a page after #release: load again, and prepare the photo it had again.
      this.#released = false;
      this.ready.then(() => this.#photo && this.setProduct(this.#photo, this.#maskGiven ? { mask: this.#maskGiven } : {}))
        .catch(() => { /* reported in the widget and by an adcanvas-error event */ });
      return;
    }
    if (this.#ui || this.#bridge) return;
    if ((this.getAttribute('mode') || '').trim().toLowerCase() === 'iframe') {
      const root = this.attachShadow({ mode: 'open' });
      root.innerHTML = '<style>:host { display: block; max-width: 560px; }</style>';
      try {
        this.#bridge = new FrameBridge(this, root);
        this.#ready = this.#bridge.ready;
      } catch (err) {
        this.#ready = Promise.reject(err);
        this.#emit('adcanvas-error', { message: `The iframe mode cannot start: ${messageOf(err)}`, code: 'options', fatal: false });
      }
      this.#ready.catch(() => { /* reported by the frame's adcanvas-error */ });
      this.#onConnected();
      return;
    }
    const root = this.attachShadow({ mode: 'open' });
    root.innerHTML = TEMPLATE;
    const q = (s) => root.querySelector(s);
    this.#ui = {
      drop: q('.drop'), file: q('input[type=file]'), fileName: q('.file-name'), form: q('form'),
      prompt: q('.prompt'), generate: q('.generate'), cancel: q('.cancel'), progress: q('progress'),
      status: q('.status'), canvas: q('canvas'), actions: q('.result-actions'), download: q('.download'),
      downloadAll: q('.download-all'), ads: q('.ads'), maskRow: q('.mask-row'), editMask: q('.edit-mask'),
      preset: q('.preset'), format: q('.format'), more: q('.more'), recover: q('.recover'),
      referenceThumb: q('.reference-thumb'), refine: q('.refine'),
    };
    for (const preset of SCENE_PRESETS) this.#ui.preset.append(new Option(preset.name, preset.prompt));
    this.#maskEditor = new MaskEditor(q('.mask-editor'), {
      onApply: async (png) => {
        await this.setProduct(this.#photo, { mask: png, painted: true });
      },
    });
    this.#wire();
    this.#ui.prompt.value = this.getAttribute('prompt') || '';
    this.#onConnected();
    this.ready.catch(() => { /* reported in the widget and by an adcanvas-error event */ });
  }

  disconnectedCallback() {
    // Taken off the page, not moved (a move puts it back in the same task): the widget lets go of
    // its share of the model, so the model and the worker go with the page's last widget (a page
    // that mounts and unmounts widgets does not pile up models). Put back later, it loads again.
    queueMicrotask(() => { if (!this.isConnected) this.#release().catch(() => { /* nothing left to free */ }); });
  }

  /** Cancels what runs, then closes this widget's studio; the photo, mask and settings stay. */
  async #release() {
    if (this.#bridge || this.#released) return; // iframe mode: the frame goes with the element
    this.#released = true;
    const loading = this.#ready;
    this.#ready = null;
    await loading?.catch(() => { /* a load that failed holds nothing */ });
    this.cancel();
    while (this.#generating || this.#batching) await new Promise((r) => setTimeout(r, 50));
    const studio = this.#studio;
    this.#studio = null;
    this.#prepared = false;
    if (studio && !this.#crashed) await studio.close();
  }

  attributeChangedCallback(name, _old, value) {
    if (name === 'prompt' && this.#ui) this.#ui.prompt.value = value || '';
  }

  /** Prepares a product photo (File, Blob, ArrayBuffer or bytes): finds its mask, or takes
   * `options.mask` (an image, white or opaque = product, at the photo's size) as it. When the
   * automatic cut-out finds no product (a busy background), the widget's brush opens so that the
   * visitor can paint it; the promise still rejects. */
  async setProduct(photo, options = {}) {
    if (this.#bridge) return this.#bridge.call('setProduct', [photo, options]);
    await this.ready;
    if (this.#generating) throw new Error('A generation is running; cancel it first.');
    const name = photo && typeof photo.name === 'string' ? photo.name : 'photo';
    const painted = options.painted === true;
    if (!painted && this.#maskEditor.isOpen) this.#maskEditor.close();
    // A refused photo loses nothing: the studio keeps its product, and the widget its photo, mask
    // and name, unless the brush takes over (below).
    const before = {
      prepared: this.#prepared, productId: this.#productId, photo: this.#photo, mask: this.#mask,
      name: this.#ui.fileName.textContent,
    };
    const kept = () => {
      this.#prepared = before.prepared;
      this.#productId = before.productId;
      this.#photo = before.photo;
      this.#mask = before.mask;
      this.#ui.fileName.textContent = before.name;
      return before.prepared && !this.#batching ? ` ${before.name} is still the photo in use.` : '';
    };
    this.#prepared = false;
    this.#productId++;
    this.#photo = photo instanceof Blob ? photo : new Blob([await bytesOf(photo)]);
    this.#mask = null;
    this.#refresh();
    this.#ui.fileName.textContent = name;
    this.#setStatus('loading', `Reading ${name}…`);
    try {
      const bytes = await bytesOf(photo);
      const maskBytes = options.mask != null ? await bytesOf(options.mask) : null;
      const prep = maskBytes ? await this.#studio.prepare(bytes, maskBytes) : await this.#studio.prepare(bytes);
      this.#maskGiven = maskBytes;
      const info = {
        name,
        width: field(prep, 'width'),
        height: field(prep, 'height'),
        maskSource: painted ? 'painted' : field(prep, 'mask_source'),
        maskArea: Number(field(prep, 'mask_area')),
      };
      this.#mask = { png: toBytes(field(prep, 'mask_png')).slice(), width: info.width, height: info.height };
      this.#prepared = true;
      this.#setStatus('ready', 'Photo ready. Describe a scene and press Generate.');
      this.#emit('adcanvas-product', info);
      return info;
    } catch (err) {
      const msg = messageOf(err);
      if (painted) {
        // The brush paints on the photo it was opened for: that stays the photo to paint on.
        const photo = this.#photo;
        const note = kept();
        this.#photo = photo;
        this.#fail(`Could not use the painted mask: ${msg}${note}`, 'bad-mask', err);
      } else if (options.mask == null && !this.#batching && isCutoutFailure(msg)) {
        this.#fail(`Could not cut out ${name}: ${msg} Or paint over the product below.`, 'bad-image', err);
        this.#openMaskEditor(null, 'The product could not be found automatically in this photo.');
      } else {
        this.#fail(`Could not use ${name}: ${msg}${kept()}`, options.mask != null ? 'bad-mask' : 'bad-image', err);
      }
      throw err;
    } finally {
      this.#refresh();
    }
  }

  /** `story`, `feed-large`, … (docs/WIDGET.md) → the size this model makes for that placement. */
  #placementSize(value) {
    const [name, large] = String(value).trim().toLowerCase().split('-');
    const placement = PLACEMENTS.find((p) => p.name === name);
    if (!placement || (large !== undefined && large !== 'large')) {
      throw new Error(`The placement must be one of ${PLACEMENTS.map((p) => p.name).join(', ')} (optionally with -large), not "${value}".`);
    }
    return placementSize(placement, this.#nativeSize, this.#sizeMultiple || 8, large === 'large');
  }

  /** Opens the brush over the current photo, with its prepared mask (`mask`) or none. */
  async #openMaskEditor(mask, why = '') {
    try {
      await this.#maskEditor.open(this.#photo, mask?.png ?? null, mask ? { width: mask.width, height: mask.height } : null, why);
    } catch (err) {
      this.#fail(`This browser could not show the photo for painting: ${messageOf(err)}`, 'bad-image', err);
    }
  }

  /** Sets the style reference (File, Blob, ArrayBuffer or bytes), or clears it with null: a
   * picture whose background style the ads follow; its own foreground is hidden by PFV. */
  async setReference(picture) {
    if (this.#bridge) return this.#bridge.call('setReference', [picture]);
    await this.ready;
    if (this.#generating) throw new Error('A generation is running; cancel it first.');
    return this.#applyReference(picture);
  }

  async #applyReference(picture) {
    if (picture == null) {
      await this.#studio.setReference(new Uint8Array(), true);
      this.#hasReference = false;
      this.#showReference(null);
      return null;
    }
    const name = typeof picture.name === 'string' ? picture.name : 'the style reference';
    try {
      const bytes = await bytesOf(picture);
      const info = await this.#studio.setReference(bytes, true);
      this.#hasReference = true;
      this.#showReference(new Blob([bytes]));
      return { width: field(info, 'width'), height: field(info, 'height') };
    } catch (err) {
      this.#hasReference = false;
      this.#showReference(null);
      await this.#studio.setReference(new Uint8Array(), true).catch(() => { /* cleared */ });
      throw this.#fail(`Could not use ${name} as a style reference: ${messageOf(err)}`, 'bad-reference', err);
    }
  }

  /** The reference in use, beside the prompt it styles (null: none). */
  #showReference(blob) {
    const img = this.#ui.referenceThumb;
    if (img.src) URL.revokeObjectURL(img.src);
    img.src = blob ? URL.createObjectURL(blob) : '';
    img.hidden = !blob;
  }

  /** Makes an ad for the prepared product; `options` override the attributes for this call
   * (`prompt`, `size`: 256 or '384x256', `fill`, `position`, `steps`, `seed`, `guidance`). Resolves with the adcanvas-generated detail. */
  async generate(options = {}) {
    if (this.#bridge) return this.#bridge.call('generate', [options]);
    await this.ready;
    if (!this.#prepared) throw new Error('Choose a product photo first.');
    if (this.#generating) throw new Error('A generation is already running.');
    let params;
    try {
      const placement = options.size == null ? (options.placement ?? this.getAttribute('placement')) : null;
      const sizeText = String(options.size ?? this.getAttribute('size') ?? this.#nativeSize);
      const size = placement ? this.#placementSize(placement) : parseSize(sizeText);
      if (!size) throw new Error(`The size must be a side such as 256 or WIDTHxHEIGHT such as 384x256, not "${sizeText}".`);
      params = {
        prompt: options.prompt ?? this.#ui.prompt.value.trim(),
        ...size,
        steps: options.steps ?? this.#intAttribute('steps', 1, 200) ?? 20,
        // No seed given: a new one each time, so pressing Generate again gives another ad.
        seed: options.seed ?? this.#intAttribute('seed', 0, 4294967295) ?? crypto.getRandomValues(new Uint32Array(1))[0],
      };
      const fill = options.fill ?? this.#numberAttribute('fill');
      if (fill != null) params.fill = fill;
      const position = options.position ?? this.getAttribute('position');
      if (position != null && position !== '') params.position = positionOf(position);
      const guidance = options.guidance ?? this.#numberAttribute('guidance');
      if (guidance != null) params.guidance = guidance;
      const scheduler = options.scheduler ?? this.getAttribute('scheduler');
      if (scheduler) params.scheduler = scheduler;
      // moreLikeThis(): start from an earlier ad's pixels (its PNG, at this size) instead of noise.
      if (options.init) {
        params.init_png = await bytesOf(options.init);
        params.init_strength = options.strength ?? 0.55;
      }
    } catch (err) {
      throw this.#fail(messageOf(err), 'options');
    }

    this.#generating = true;
    this.#refresh();
    this.#ui.progress.hidden = false;
    this.#ui.progress.max = params.steps;
    this.#ui.progress.value = 0;
    this.#setStatus('generating', `Generating ${params.width} × ${params.height}…`);
    const started = performance.now();
    const left = remainingTime();
    try {
      const out = await this.#studio.generate({ ...params, preview_every: previewEvery(params.steps) }, (step, total, preview) => {
        if (preview) {
          drawPreview(this.#ui.canvas, preview, params.width, params.height);
          this.#ui.canvas.hidden = false;
        }
        this.#ui.progress.max = Math.max(1, total);
        this.#ui.progress.value = step;
        this.#setStatus('generating', `Generating ${params.width} × ${params.height}… step ${step} / ${total}${left(step, total)}`);
        this.#emit('adcanvas-progress', { step, total });
      });
      const image = resultImage(out);
      this.#show({ image, png: image.png, prompt: params.prompt, seed: params.seed, params, productId: this.#productId });
      const seconds = (performance.now() - started) / 1000;
      const notes = image.notes.length ? ` ${image.notes.join(' ')}` : '';
      const on = field(this.#studio.info, 'device') === 'cpu' ? ' on the CPU' : '';
      this.#setStatus('done', `Done in ${seconds.toFixed(1)} s${on} (seed ${params.seed}). The product's pixels are unchanged.${notes}`);
      const detail = {
        png: image.png, width: image.width, height: image.height, placement: image.placement, notes: image.notes,
        prompt: params.prompt, seed: params.seed, steps: params.steps, seconds,
        // moreLikeThis(): the seed of the ad it was made from.
        from: options.init ? (options.from ?? null) : null,
        // With a style reference: how PFV cut it (patches, those hidden, image tokens kept).
        reference: this.#hasReference ? referenceReport(field(out, 'reference')) : null,
      };
      this.#emit('adcanvas-generated', detail);
      return detail;
    } catch (err) {
      if (messageOf(err) === 'cancelled') {
        this.#setStatus('cancelled', 'Cancelled.');
      } else {
        this.#fail(`Generation failed: ${messageOf(err)}`, 'generation', err);
      }
      throw err;
    } finally {
      this.#generating = false;
      this.#ui.progress.hidden = true;
      this.#refresh();
    }
  }

  /** After the GPU (or the engine on it) was lost: starts the studio again on the CPU, in a new
   * worker, and prepares the photo again with its mask. Resolves with the new adcanvas-ready detail. */
  async continueOnCpu() {
    if (this.#bridge) return this.#bridge.call('continueOnCpu');
    if (!this.#crashed) throw new Error('The studio is running; nothing to recover.');
    this.#ui.recover.hidden = true;
    this.#studio?.abandon?.(); // the old worker, with its lost device (and every studio in it)
    this.#studio = null;
    this.#crashed = false;
    this.#prepared = false;
    this.#device = 'cpu';
    this.#ready = this.#start();
    const detail = await this.#ready;
    if (this.#photo) await this.setProduct(this.#photo, this.#maskGiven ? { mask: this.#maskGiven } : {});
    return detail;
  }

  /** Shows `ad` on the canvas; Download and More like this then take it. */
  #show(ad) {
    const canvas = this.#ui.canvas;
    canvas.width = ad.image.width;
    canvas.height = ad.image.height;
    canvas.getContext('2d').putImageData(ad.image.imageData, 0, 0);
    canvas.hidden = false;
    this.#ui.actions.hidden = false;
    this.#png = ad.png;
    this.#ad = ad;
    this.#refresh();
  }

  /** `n` ads (1–4) of the prepared photo with seeds seed, seed + 1, … (generate()'s `options`),
   * listed as they land; a click on one shows it, for Download and More like this. Resolves with
   * their adcanvas-generated details. The Generate button does this with the `variants` attribute. */
  async generateVariants(n, options = {}) {
    if (this.#bridge) return this.#bridge.call('generateVariants', [n, options]);
    if (!Number.isInteger(n) || n < 1 || n > 4) throw this.#fail(`The number of variants must be 1 to 4, not "${n}".`, 'options');
    const ui = this.#ui;
    const base = options.seed ?? this.#intAttribute('seed', 0, 4294967295) ?? crypto.getRandomValues(new Uint32Array(1))[0];
    ui.ads.replaceChildren();
    ui.ads.hidden = n === 1;
    ui.downloadAll.hidden = true;
    const made = [];
    for (let k = 0; k < n; k++) {
      const detail = await this.generate({ ...options, seed: (base + k) % 2 ** 32 });
      made.push(detail);
      const shown = this.#ad;
      const li = document.createElement('li');
      li.dataset.state = 'done';
      const img = document.createElement('img');
      img.src = URL.createObjectURL(detail.png);
      img.alt = `Ad with seed ${detail.seed}`;
      img.title = 'Show this ad';
      img.addEventListener('click', () => this.#show(shown));
      li.append(img, `seed ${detail.seed}`);
      ui.ads.append(li);
    }
    return made;
  }

  /** A new ad from the last one's own pixels (img2img at `strength`, default 0.55): its layout and
   * colours stay, the details change. `options`: `seed` (default: a new one), `strength`.
   * Resolves with the adcanvas-generated detail, whose `from` is the last ad's seed. */
  async moreLikeThis(options = {}) {
    if (this.#bridge) return this.#bridge.call('moreLikeThis', [options]);
    if (!this.#ad || this.#ad.productId !== this.#productId) throw new Error('Make an ad of this photo first.');
    const { params, png, seed } = this.#ad;
    const strength = options.strength ?? 0.55;
    return this.generate({
      // Enough steps that at least one of them runs at this strength (⌊steps · strength⌋ ≥ 1).
      prompt: params.prompt, size: `${params.width}x${params.height}`, steps: Math.max(params.steps, Math.ceil(1 / strength)), fill: params.fill,
      position: params.position, guidance: params.guidance, scheduler: params.scheduler, init: png, from: seed,
      seed: options.seed, strength,
    });
  }

  /** The last ad gone over once more (img2img at `strength`, default 0.3, with its own seed): close
   * to it, with cleaner detail. Resolves with the adcanvas-generated detail (`from`: its seed). */
  async refine(options = {}) {
    if (this.#bridge) return this.#bridge.call('refine', [options]);
    return this.moreLikeThis({ seed: this.#ad?.seed, strength: options.strength ?? 0.3 });
  }

  /** One ad for each of `photos` (Files, Blobs, ArrayBuffers or bytes, as setProduct takes), made one
   * after another with the same `options` as generate(); each shows in the widget's list as it lands
   * and fires adcanvas-generated. A photo that fails is reported and the rest go on. Resolves with
   * `[{ name, ad: detail | null, error: message | null }]` and fires adcanvas-batch with
   * `{ made, failed, cancelled }`; zip() then packs the ads. */
  async generateAll(photos, options = {}) {
    if (this.#bridge) return this.#bridge.call('generateAll', [Array.from(photos), options]);
    await this.ready;
    if (this.#generating || this.#batching) throw new Error('A generation is already running.');
    const ui = this.#ui;
    const list = Array.from(photos);
    this.#batching = true;
    this.#ads = [];
    ui.ads.replaceChildren();
    ui.ads.hidden = false;
    ui.downloadAll.hidden = true;
    const results = [];
    let cancelled = false;
    try {
      for (const photo of list) {
        const name = photo && typeof photo.name === 'string' ? photo.name : `photo ${results.length + 1}`;
        const li = document.createElement('li');
        li.dataset.state = 'working';
        li.textContent = name;
        ui.ads.append(li);
        if (cancelled) {
          li.dataset.state = 'skipped';
          results.push({ name, ad: null, error: 'cancelled' });
          continue;
        }
        try {
          await this.setProduct(photo);
          const ad = await this.generate(options);
          const img = document.createElement('img');
          img.src = URL.createObjectURL(ad.png);
          img.alt = `Ad for ${name}`;
          li.prepend(img);
          li.dataset.state = 'done';
          this.#ads.push({ name: adName(name), png: ad.png });
          results.push({ name, ad, error: null });
        } catch (err) {
          cancelled = messageOf(err) === 'cancelled';
          li.dataset.state = cancelled ? 'skipped' : 'failed';
          li.title = messageOf(err);
          results.push({ name, ad: null, error: messageOf(err) });
          if (this.#crashed) cancelled = true;
        }
      }
    } finally {
      this.#batching = false;
      this.#refresh();
    }
    const made = this.#ads.length;
    ui.downloadAll.hidden = made === 0;
    ui.actions.hidden = made === 0 && !this.#png;
    if (!this.#crashed) {
      this.#setStatus(made === list.length ? 'done' : 'error', `Made ${made} of ${list.length} ads.`);
    }
    this.#emit('adcanvas-batch', { made, failed: results.filter((r) => r.error && r.error !== 'cancelled').length, cancelled });
    return results;
  }

  /** The last generateAll's ads as one .zip (a Blob; entries NAME-ad.png, stored). */
  async zip() {
    if (this.#bridge) return this.#bridge.call('zip');
    await this.ready;
    if (!this.#ads.length) throw new Error('No ads to zip: generate some with several photos first.');
    const pngs = await Promise.all(this.#ads.map(async (ad) => new Uint8Array(await ad.png.arrayBuffer())));
    return new Blob([await this.#studio.zip(this.#ads.map((ad) => ad.name), pngs)], { type: 'application/zip' });
  }

  /** Stops a running generation after its current step (its promise rejects with "cancelled");
   * in generateAll, the photos after it are skipped. */
  cancel() {
    if (this.#bridge) this.#bridge.call('cancel').catch(() => {});
    if (this.#generating && this.#studio) this.#studio.cancel();
  }

  async #start() {
    await this.#connected; // `ready`, setProduct() or generate() may be called before insertion
    if (this.#bridge) return this.#bridge.ready;
    this.#setStatus('loading', 'Loading…');
    let engine;
    try {
      engine = await startEngine();
    } catch (err) {
      throw this.#fail(`Could not load the WebAssembly module: ${messageOf(err)}`, 'module', err);
    }
    this.#runsIn = engine.runsIn;
    let device;
    try {
      device = this.#device ?? deviceOf(this.getAttribute('device'));
    } catch (err) {
      throw this.#fail(`device attribute: ${messageOf(err)}`, 'options');
    }
    // Without a usable GPU the widget runs on the CPU, unless the host page asked for the GPU only.
    if (device === 'gpu' && !engine.gpu.available && !engine.gpu.software) {
      throw this.#fail(engine.gpu.message, 'webgpu-unavailable');
    }
    const model = new URL(this.getAttribute('model') || DEFAULT_MODEL_URL, document.baseURI).href;
    const base = model.endsWith('/') ? model : `${model}/`;
    this.#setStatus('loading', 'Loading the model…');
    try {
      this.#studio = await engine.open(base, { device, quantized_weights: this.getAttribute('weights') || 'auto' });
    } catch (err) {
      throw this.#fail(`Could not load the model pack at ${base}: ${messageOf(err)}`, 'model', err);
    }
    const info = this.#studio.info;
    this.#nativeSize = Number(field(info, 'native_size')) || 256;
    this.#sizeMultiple = Number(field(info, 'size_multiple')) || 0;
    const detail = {
      model: base,
      name: field(info, 'name'),
      trained: field(info, 'trained') !== false,
      nativeSize: this.#nativeSize,
      device: field(info, 'device'),
      deviceNote: field(info, 'device_note') ?? null,
      // Widgets of one page with the same model (and options) share one copy of it.
      modelId: field(info, 'model_id') ?? null,
      // 2: on the CPU, a helper worker shares each ad's work (www/studio-worker.js).
      workers: field(info, 'workers') ?? 1,
    };
    // A style reference that cannot be used is reported, and the widget works without it.
    let withoutReference = '';
    const referenceUrl = this.getAttribute('reference');
    if (referenceUrl) {
      const url = new URL(referenceUrl, document.baseURI).href;
      let picture = null;
      try {
        const response = await fetch(url);
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        picture = Object.assign(await response.blob(), { name: url });
      } catch (err) {
        withoutReference = this.#fail(`Could not fetch the style reference ${url}: ${messageOf(err)}`, 'bad-reference', err).message;
      }
      if (picture) {
        // A picture that cannot be used reports itself (#applyReference).
        withoutReference = await this.#applyReference(picture).then(() => '', (err) => err.message);
      }
      if (withoutReference) withoutReference = ` (without the style reference: ${withoutReference})`;
    }
    detail.reference = referenceUrl ? !withoutReference : null;
    const cpu = detail.device === 'cpu' ? ` ${deviceSentence(info)}` : '';
    this.#setStatus('ready', `Ready${withoutReference}. Drop in a product photo.${cpu}`);
    this.#refresh();
    this.#emit('adcanvas-ready', detail);
    this.#warmUp(detail.device, engine.gpu.available === true);
    return detail;
  }

  /** On a GPU, compiles the kernels of an ad at the widget's size while the seller picks a photo
   * (as the page does: www/app.js `warmUp`; on by default on a hardware GPU only);
   * `warmup="off"` leaves that to the first ad, `warmup="on"` asks for it on a software adapter
   * too. `data-warm-up` on the element: running, done, stopped, failed. */
  #warmUp(device, hardwareGpu) {
    const asked = this.getAttribute('warmup');
    if (device !== 'gpu' || asked === 'off' || (!hardwareGpu && asked !== 'on')) return;
    const size = parseSize(String(this.getAttribute('size') ?? this.#nativeSize));
    if (!size) return;
    this.dataset.warmUp = 'running';
    const prompt = this.#ui.prompt.value.trim() || 'a product on a table';
    this.#studio.warmUp({ prompt, ...size, steps: 1 }).then(
      (r) => { this.dataset.warmUp = field(r, 'warmed') ? 'done' : 'stopped'; },
      () => { this.dataset.warmUp = 'failed'; },
    );
  }

  #wire() {
    const ui = this.#ui;
    const take = (files) => {
      const list = Array.from(files || []);
      if (list.length > 1) this.generateAll(list).catch(() => { /* shown in the widget */ });
      else if (list.length === 1) this.setProduct(list[0]).catch(() => { /* shown in the widget */ });
    };
    ui.file.addEventListener('change', () => {
      take(ui.file.files);
      ui.file.value = ''; // the same file again fires change again
    });
    for (const type of ['dragenter', 'dragover']) {
      ui.drop.addEventListener(type, (e) => { e.preventDefault(); ui.drop.classList.add('dragging'); });
    }
    for (const type of ['dragleave', 'dragend']) {
      ui.drop.addEventListener(type, () => ui.drop.classList.remove('dragging'));
    }
    ui.drop.addEventListener('drop', (e) => {
      e.preventDefault();
      ui.drop.classList.remove('dragging');
      if (!this.#generating && !this.#batching) take(e.dataTransfer && e.dataTransfer.files);
    });
    ui.form.addEventListener('submit', (e) => {
      e.preventDefault();
      let n = 1;
      try {
        n = this.#intAttribute('variants', 1, 4) ?? 1;
      } catch (err) {
        this.#fail(messageOf(err), 'options');
        return;
      }
      (n > 1 ? this.generateVariants(n) : this.generate()).catch(() => { /* shown in the widget */ });
    });
    ui.cancel.addEventListener('click', () => this.cancel());
    ui.more.addEventListener('click', () => this.moreLikeThis().catch(() => { /* shown in the widget */ }));
    ui.refine.addEventListener('click', () => this.refine().catch(() => { /* shown in the widget */ }));
    ui.recover.addEventListener('click', () => this.continueOnCpu().catch(() => { /* shown in the widget */ }));
    ui.editMask.addEventListener('click', () => { if (this.#mask) this.#openMaskEditor(this.#mask); });
    ui.download.addEventListener('click', async () => {
      if (!this.#ad) return;
      const format = ui.format.value;
      try {
        this.#save(await encodeAd(this.#ad.png, format), adFileName(this.#ad.prompt, this.#ad.seed, format));
      } catch (err) {
        this.#fail(`Could not save the ad as ${format.toUpperCase()}: ${messageOf(err)}`, 'download', err);
      }
    });
    ui.preset.addEventListener('change', () => { if (ui.preset.value) ui.prompt.value = ui.preset.value; });
    // Ctrl+V of a copied photo while the widget has focus: as if it had been dropped.
    this.addEventListener('paste', (e) => {
      const files = pastedImages(e);
      if (!files.length || this.#generating || this.#batching) return;
      e.preventDefault();
      take(files);
    });
    ui.downloadAll.addEventListener('click', () => {
      this.zip().then((zip) => this.#save(zip, 'ads.zip'), (err) => this.#fail(`Could not make the zip: ${messageOf(err)}`, 'zip', err));
    });
  }

  #save(blob, name) {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = name;
    this.shadowRoot.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  }

  #refresh() {
    const ui = this.#ui;
    const usable = this.#studio && !this.#crashed;
    const busy = this.#generating || this.#batching;
    ui.file.disabled = !usable || busy;
    ui.prompt.disabled = busy;
    ui.preset.disabled = busy;
    ui.more.disabled = busy || !usable || !this.#prepared || this.#ad?.productId !== this.#productId;
    ui.refine.disabled = ui.more.disabled;
    ui.generate.disabled = !usable || busy || !this.#prepared;
    ui.maskRow.hidden = !this.#prepared || this.#batching;
    ui.editMask.disabled = busy;
    ui.cancel.hidden = !busy;
    ui.downloadAll.disabled = busy;
  }

  #setStatus(state, text) {
    this.#ui.status.dataset.state = state;
    this.#ui.status.textContent = text;
  }

  /** Shows the message, tells the host page, and returns an Error to throw. */
  #fail(message, code, cause) {
    const fatal = cause != null && isFatal(cause);
    if (fatal) {
      this.#crashed = true;
      // A GPU that was lost may be lost again: the CPU needs none, and the photo comes along.
      const onGpu = field(this.#studio?.info, 'device') === 'gpu';
      message = `${fatalCause(cause)} ` +
        (onGpu ? 'Continue on this computer\'s CPU (your photo comes along), or reload the page.' : 'Reload the page to continue.');
      this.#ui.recover.hidden = !onGpu;
    }
    this.#setStatus('error', message);
    this.#refresh();
    this.#emit('adcanvas-error', { message, code: fatal ? 'crashed' : code, fatal });
    return new Error(message);
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }

  #intAttribute(name, min, max) {
    const raw = this.getAttribute(name);
    if (raw == null || raw.trim() === '') return null;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new Error(`The ${name} attribute must be a whole number from ${min} to ${max}, not "${raw}".`);
    }
    return n;
  }

  #numberAttribute(name) {
    const raw = this.getAttribute(name);
    if (raw == null || raw.trim() === '') return null;
    const n = Number(raw);
    if (!Number.isFinite(n)) throw new Error(`The ${name} attribute must be a number, not "${raw}".`);
    return n;
  }
}

if (!customElements.get('adcanvas-studio')) customElements.define('adcanvas-studio', AdcanvasStudio);
