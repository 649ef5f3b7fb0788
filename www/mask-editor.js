// The mask editor of the page and the widget: brush over the photo to add to the product or take
// from it, when the automatic cut-out kept too much or too little, or found no product at all (a
// photo on a busy background). What it hands back is a mask PNG at the photo's working size
// (white, alpha = coverage), which the studio takes as the user's own mask (Studio.prepare with a
// mask, like the CLI's `--mask`): PFV and the paste-back then use exactly what was painted.

/** The longest side the studio works at (src/input/image_io.rs, DecodeLimits::working_max_side). */
const WORKING_MAX_SIDE = 2048;
/** The longest side the editor draws at on screen; painting happens at the photo's own size. */
const VIEW_MAX_SIDE = 900;
const UNDO_DEPTH = 12;

const STYLE = `
.adc-mask-editor { display: grid; gap: 8px; }
.adc-mask-tools { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; font-size: 0.88rem; }
.adc-mask-tools button, .adc-mask-actions button {
  font: inherit; padding: 5px 11px; border-radius: 8px; border: 1px solid #c6cce0; background: #fff; cursor: pointer;
}
.adc-mask-tools button[aria-pressed=true] { background: #eef0ff; border-color: #4f46e5; color: #312e81; }
.adc-mask-tools button:disabled, .adc-mask-actions button:disabled { opacity: 0.5; cursor: default; }
.adc-mask-tools label { display: inline-flex; gap: 6px; align-items: center; }
.adc-mask-actions { display: flex; gap: 8px; }
.adc-mask-actions .adc-mask-apply { background: #4f46e5; border-color: #4f46e5; color: #fff; }
.adc-mask-view { position: relative; }
.adc-mask-canvas { display: block; width: 100%; height: auto; touch-action: none; cursor: crosshair; border-radius: 8px; }
.adc-mask-hint { margin: 0; font-size: 0.85rem; color: #5c667a; }
`;

/** The size the studio works at for a photo of `width` × `height` (after EXIF orientation):
 * the same arithmetic as `decode_image`, so a mask painted at this size fits the photo. */
export function workingSize(width, height) {
  const longer = Math.max(width, height);
  if (longer <= WORKING_MAX_SIDE) return { width, height };
  const s = WORKING_MAX_SIDE / longer;
  const side = (v) => Math.min(WORKING_MAX_SIDE, Math.max(1, Math.round(v * s)));
  return { width: side(width), height: side(height) };
}

/** Whether a failed prepare is the automatic cut-out's (the photo itself was read): the messages
 * of `MaskError` in src/input/mask.rs. The user can then paint the product instead. */
export function isCutoutFailure(message) {
  return /not plain enough|not sure where the product ends|No product found|fills the whole photo/.test(String(message));
}

function element(tag, props = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k in e) e[k] = v;
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

function canvasOf(width, height) {
  return element('canvas', { width, height });
}

export class MaskEditor {
  /** Builds the editor (hidden) inside `container`, a page element or a shadow root's.
   * `onApply(maskPngBytes)` is called by "Use this mask"; it resolves when the studio took it
   * (the editor then closes) and rejects with the reason otherwise (the editor stays, strokes kept). */
  constructor(container, { onApply, onClose = () => {} }) {
    this.onApply = onApply;
    this.onClose = onClose;
    this.tool = 'add';
    this.undo = [];
    this.photo = null;     // ImageBitmap of the photo, upright
    this.mask = null;      // canvas at the working size: white, alpha = coverage
    this.initial = null;   // the mask the editor opened with (Reset)
    this.stroke = null;    // { last: {x, y} } while painting
    this.pointer = null;   // last pointer position in photo pixels, for the brush outline
    this.frame = 0;

    const button = (cls, text, title) => element('button', { type: 'button', class: cls, text, title });
    this.ui = {
      add: button('adc-mask-add', 'Add to product', 'Paint what belongs to the product (kept exactly)'),
      erase: button('adc-mask-erase', 'Erase', 'Paint what is background (replaced by the new scene)'),
      size: element('input', { type: 'range', class: 'adc-mask-size', min: 4, max: 160, step: 1, value: 28 }),
      sizeOut: element('output', { text: '28' }),
      undo: button('adc-mask-undo', 'Undo', 'Take back the last stroke'),
      reset: button('adc-mask-reset', 'Reset', 'Back to the mask the editor opened with'),
      canvas: element('canvas', { class: 'adc-mask-canvas', width: 1, height: 1 }),
      hint: element('p', { class: 'adc-mask-hint' }),
      apply: button('adc-mask-apply', 'Use this mask'),
      close: button('adc-mask-close', 'Cancel'),
    };
    const ui = this.ui;
    ui.add.setAttribute('aria-pressed', 'true');
    ui.erase.setAttribute('aria-pressed', 'false');
    ui.canvas.setAttribute('aria-label', 'The photo with the mask over it: tinted parts are background');
    this.root = element('div', { class: 'adc-mask-editor', hidden: true }, [
      element('style', { text: STYLE }),
      element('div', { class: 'adc-mask-tools', role: 'toolbar', 'aria-label': 'Mask brush' }, [
        ui.add, ui.erase,
        element('label', {}, ['Brush', ui.size, ui.sizeOut]),
        ui.undo, ui.reset,
      ]),
      element('div', { class: 'adc-mask-view' }, [ui.canvas]),
      ui.hint,
      element('div', { class: 'adc-mask-actions' }, [ui.apply, ui.close]),
    ]);
    container.append(this.root);
    this.view = ui.canvas.getContext('2d');
    this.#wire();
  }

  get isOpen() {
    return !this.root.hidden;
  }

  /** Opens the editor on `photo` (a Blob) with the studio's mask preview `maskPng` (bytes, grey:
   * 40 = background … 255 = product, as `Studio.prepare` returns it), or with nothing selected when
   * null. `size` is the studio's working size when known; `why` says why the editor opened. */
  async open(photo, maskPng = null, size = null, why = '') {
    this.photo = await createImageBitmap(photo);
    const { width, height } = size ?? workingSize(this.photo.width, this.photo.height);
    this.mask = canvasOf(width, height);
    if (maskPng) await this.#loadPreview(maskPng, width, height);
    this.initial = this.#copy(this.mask);
    this.undo = [];
    const scale = Math.min(1, VIEW_MAX_SIDE / Math.max(width, height));
    this.ui.canvas.width = Math.max(1, Math.round(width * scale));
    this.ui.canvas.height = Math.max(1, Math.round(height * scale));
    this.tint = canvasOf(this.ui.canvas.width, this.ui.canvas.height);
    this.#setTool(maskPng ? this.tool : 'add');
    this.ui.hint.textContent = (why ? `${why} ` : '') + (maskPng
      ? 'Tinted parts are background and get replaced; the rest is your product, kept exactly. Drag to add to the product or erase from it.'
      : 'Paint over your product: what you paint is kept exactly, the tinted rest is replaced by the new scene.');
    this.root.hidden = false;
    this.#refresh();
    this.#draw();
  }

  close() {
    this.root.hidden = true;
    this.stroke = null;
    this.photo?.close?.();
    this.photo = null;
    this.mask = null;
    this.initial = null;
    this.undo = [];
    this.onClose();
  }

  /** The painted mask as PNG bytes at the working size (white; alpha = coverage). */
  async maskPng() {
    const blob = await new Promise((resolve, reject) => this.mask.toBlob(
      (b) => (b ? resolve(b) : reject(new Error('could not encode the mask'))), 'image/png'));
    return new Uint8Array(await blob.arrayBuffer());
  }

  /** The mask preview (grey 40…255) as coverage in the alpha channel. */
  async #loadPreview(png, width, height) {
    const bitmap = await createImageBitmap(new Blob([png], { type: 'image/png' }));
    const tmp = canvasOf(width, height);
    const ctx = tmp.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0, width, height);
    bitmap.close?.();
    const img = ctx.getImageData(0, 0, width, height);
    const d = img.data;
    for (let i = 0; i < d.length; i += 4) {
      const a = Math.max(0, Math.min(1, (d[i] - 40) / 215));
      d[i] = d[i + 1] = d[i + 2] = 255;
      d[i + 3] = Math.round(a * 255);
    }
    this.mask.getContext('2d').putImageData(img, 0, 0);
  }

  #copy(canvas) {
    const c = canvasOf(canvas.width, canvas.height);
    c.getContext('2d').drawImage(canvas, 0, 0);
    return c;
  }

  #restore(from) {
    const ctx = this.mask.getContext('2d');
    ctx.globalCompositeOperation = 'copy';
    ctx.drawImage(from, 0, 0);
    ctx.globalCompositeOperation = 'source-over';
  }

  #setTool(tool) {
    this.tool = tool;
    this.ui.add.setAttribute('aria-pressed', String(tool === 'add'));
    this.ui.erase.setAttribute('aria-pressed', String(tool === 'erase'));
  }

  #refresh() {
    this.ui.undo.disabled = this.undo.length === 0;
    this.ui.sizeOut.textContent = this.ui.size.value;
  }

  /** Photo pixels per screen pixel of the view. */
  #photoPerScreen() {
    const r = this.ui.canvas.getBoundingClientRect();
    return r.width > 0 ? this.mask.width / r.width : 1;
  }

  #toPhoto(e) {
    const r = this.ui.canvas.getBoundingClientRect();
    return {
      x: ((e.clientX - r.left) / r.width) * this.mask.width,
      y: ((e.clientY - r.top) / r.height) * this.mask.height,
    };
  }

  /** The brush's width in photo pixels: the slider is in screen pixels, as the user sees it. */
  #brush() {
    return Number(this.ui.size.value) * this.#photoPerScreen();
  }

  #paint(from, to) {
    const ctx = this.mask.getContext('2d');
    ctx.globalCompositeOperation = this.tool === 'add' ? 'source-over' : 'destination-out';
    ctx.strokeStyle = ctx.fillStyle = '#fff';
    ctx.lineWidth = this.#brush();
    ctx.lineCap = ctx.lineJoin = 'round';
    ctx.beginPath();
    if (from.x === to.x && from.y === to.y) {
      ctx.arc(to.x, to.y, ctx.lineWidth / 2, 0, 2 * Math.PI);
      ctx.fill();
    } else {
      ctx.moveTo(from.x, from.y);
      ctx.lineTo(to.x, to.y);
      ctx.stroke();
    }
    ctx.globalCompositeOperation = 'source-over';
    this.#draw();
  }

  /** Redraws the view on the next frame: the photo, the background tinted, the brush outline. */
  #draw() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      if (!this.photo || !this.mask) return;
      const { width, height } = this.ui.canvas;
      const v = this.view;
      v.globalCompositeOperation = 'copy';
      v.drawImage(this.photo, 0, 0, width, height);
      v.globalCompositeOperation = 'source-over';
      const t = this.tint.getContext('2d');
      t.globalCompositeOperation = 'copy';
      t.fillStyle = 'rgba(30, 27, 110, 0.5)';
      t.fillRect(0, 0, width, height);
      t.globalCompositeOperation = 'destination-out';
      t.drawImage(this.mask, 0, 0, width, height);
      v.drawImage(this.tint, 0, 0);
      if (this.pointer) {
        const s = width / this.mask.width;
        v.beginPath();
        v.arc(this.pointer.x * s, this.pointer.y * s, (this.#brush() * s) / 2, 0, 2 * Math.PI);
        v.lineWidth = 1.5;
        v.strokeStyle = this.tool === 'add' ? '#fff' : '#fca5a5';
        v.stroke();
      }
    });
  }

  #wire() {
    const ui = this.ui;
    const c = ui.canvas;
    ui.add.addEventListener('click', () => this.#setTool('add'));
    ui.erase.addEventListener('click', () => this.#setTool('erase'));
    ui.size.addEventListener('input', () => { this.#refresh(); this.#draw(); });
    ui.undo.addEventListener('click', () => {
      const last = this.undo.pop();
      if (last) this.#restore(last);
      this.#refresh();
      this.#draw();
    });
    ui.reset.addEventListener('click', () => {
      this.undo.push(this.#copy(this.mask));
      if (this.undo.length > UNDO_DEPTH) this.undo.shift();
      this.#restore(this.initial);
      this.#refresh();
      this.#draw();
    });
    ui.close.addEventListener('click', () => this.close());
    ui.apply.addEventListener('click', async () => {
      ui.apply.disabled = true;
      try {
        await this.onApply(await this.maskPng());
        this.close();
      } catch {
        // The caller said why (status line); the strokes stay for another try.
      } finally {
        ui.apply.disabled = false;
      }
    });
    c.addEventListener('pointerdown', (e) => {
      if (!this.mask || e.button !== 0) return;
      e.preventDefault();
      c.setPointerCapture(e.pointerId);
      this.undo.push(this.#copy(this.mask));
      if (this.undo.length > UNDO_DEPTH) this.undo.shift();
      const p = this.#toPhoto(e);
      this.stroke = { last: p };
      this.pointer = p;
      this.#paint(p, p);
      this.#refresh();
    });
    c.addEventListener('pointermove', (e) => {
      if (!this.mask) return;
      const p = this.#toPhoto(e);
      this.pointer = p;
      if (this.stroke) {
        this.#paint(this.stroke.last, p);
        this.stroke.last = p;
      } else {
        this.#draw();
      }
    });
    const end = () => { this.stroke = null; };
    c.addEventListener('pointerup', end);
    c.addEventListener('pointercancel', end);
    c.addEventListener('pointerleave', () => { this.pointer = null; this.#draw(); });
  }
}
