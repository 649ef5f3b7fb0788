//! Browser glue: converts JS values, fetches the model pack, forwards progress and
//! cancel, maps errors to messages. Everything else is the shared pipeline.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use js_sys::{Array, Float32Array, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::denoise::scheduler::SchedulerError;
use crate::encoders::reference::{Reference, ReferenceOptions};
use crate::encoders::segmenter::Segmenter;
use crate::gpu::{DeviceChoice, open, open_device};
use crate::input::mask::{MaskError, MaskSource};
use crate::model::Model;
use crate::pack::Manifest;
use crate::pack::weights::QuantizedWeights;
use crate::pfv::{PfvConfig, patch_visibility};
use crate::pipeline::preview::calibrate;
use crate::pipeline::{
    GenerateOptions, GuidancePartner, Half, InitImage, PipelineError, Product, SwapFuture, generate,
    generate_in_lockstep, prepare_product, prepare_product_segmented, prepare_product_with_mask,
};

// Two browser-only gaps between cubecl's WGSL and what Chrome's WebGPU accepts:
// 1. cubecl's kernels (matmul, reductions) read subgroup builtins and so start with
//    `enable subgroups;`, which the browser accepts only on a device created with the
//    "subgroups" feature; wgpu's WebGPU backend has no mapping for that feature and never
//    requests it. The shim adds it to every device request on an adapter that offers it.
// 2. Tint rejects subgroup shuffles it cannot prove subgroup-uniform; naga (native) does
//    not check this, and cubecl's kernels are written for that. The shim turns the rule
//    off (`diagnostic(off, subgroup_uniformity)`) for shaders that enable subgroups.
#[wasm_bindgen(inline_js = r#"
export function request_subgroups_on_device() {
  if (typeof GPUAdapter === 'undefined' || GPUAdapter.prototype.__adcanvasSubgroups) return;
  const createShaderModule = GPUDevice.prototype.createShaderModule;
  GPUDevice.prototype.createShaderModule = function (descriptor) {
    if (descriptor && typeof descriptor.code === 'string' && descriptor.code.includes('enable subgroups;')) {
      descriptor = Object.assign({}, descriptor, { code: 'diagnostic(off, subgroup_uniformity);\n' + descriptor.code });
    }
    return createShaderModule.call(this, descriptor);
  };
  const original = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = function (descriptor = {}) {
    if (this.features && this.features.has('subgroups')) {
      const features = new Set(descriptor.requiredFeatures || []);
      features.add('subgroups');
      descriptor = Object.assign({}, descriptor, { requiredFeatures: [...features] });
    }
    return original.call(this, descriptor);
  };
  GPUAdapter.prototype.__adcanvasSubgroups = true;
}
"#)]
extern "C" {
    fn request_subgroups_on_device();
}

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
    request_subgroups_on_device();
}

fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    Reflect::set(obj, &JsValue::from_str(key), &value.into()).expect("setting a property on a plain object");
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// What this browser's WebGPU offers: `{ available, software, message }`. Without it (or with a
/// software adapter) adcanvas runs on the CPU; the message says why and how to get GPU speed.
#[wasm_bindgen]
pub async fn webgpu_status() -> JsValue {
    let probe = crate::gpu::browser::probe().await;
    let out = Object::new();
    set(&out, "available", probe.usable);
    set(&out, "software", probe.software);
    set(&out, "message", probe.message);
    out.into()
}

/// `fetch` from the page or from a worker: the studio runs in a worker where it can
/// (www/studio.js), so the GPU's work never holds the page's main thread.
fn fetch(url: &str) -> Result<Promise, String> {
    let global = js_sys::global();
    if let Some(window) = global.dyn_ref::<web_sys::Window>() {
        Ok(window.fetch_with_str(url))
    } else if let Some(worker) = global.dyn_ref::<web_sys::WorkerGlobalScope>() {
        Ok(worker.fetch_with_str(url))
    } else {
        Err(format!("could not fetch {url}: this is neither a page nor a worker"))
    }
}

async fn fetch_bytes(url: &str) -> Result<Vec<u8>, String> {
    let response: web_sys::Response = JsFuture::from(fetch(url)?)
        .await
        .map_err(|e| format!("could not fetch {url}: {e:?}"))?
        .dyn_into()
        .map_err(|_| format!("fetch {url} did not return a response"))?;
    if !response.ok() {
        return Err(format!("could not fetch {url}: HTTP {}", response.status()));
    }
    let buffer = JsFuture::from(response.array_buffer().map_err(|e| format!("{e:?}"))?)
        .await
        .map_err(|e| format!("reading {url} failed: {e:?}"))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// A loaded model, shared by every studio made from it with [`Studio::share`] (several widgets
/// on one page hold one copy of the weights).
struct Loaded {
    model: Model,
    /// The pack's folder URL (ending in `/`).
    base_url: String,
    /// The pack's cut-out network, fetched for the first photo on a busy background rather than
    /// on every first visit (most product photos are on a plain one); locked while it downloads,
    /// so two widgets' photos fetch it once.
    segmenter: futures_util::lock::Mutex<Option<Rc<Segmenter>>>,
    /// "gpu" or "cpu", and why not the GPU under `auto` (shown to the user).
    device: &'static str,
    device_note: Option<String>,
    /// Which model load this is, for the page to see that its studios share one.
    id: u32,
    /// One generation at a time on the model: its step previews and the device's memory are
    /// the model's, not one studio's.
    turn: futures_util::lock::Mutex<()>,
}

impl Loaded {
    /// The pack's cut-out network, fetched and loaded the first time a photo needs it; `None`
    /// for a pack without one.
    async fn fetch_segmenter(&self) -> Result<Option<Rc<Segmenter>>, String> {
        let mut slot = self.segmenter.lock().await;
        if slot.is_none() && self.model.manifest.segmenter.is_some() {
            let file = &self.model.manifest.file("segmenter").map_err(|e| e.to_string())?.file;
            let bytes = fetch_bytes(&format!("{}{file}", self.base_url)).await?;
            *slot = self.model.load_segmenter(&bytes).map_err(|e| e.to_string())?.map(Rc::new);
        }
        Ok(slot.clone())
    }
}

struct Inner {
    loaded: Rc<Loaded>,
    product: RefCell<Option<Rc<Product>>>,
    reference: RefCell<Option<Rc<Reference>>>,
    cancel: Cell<bool>,
    busy: Cell<bool>,
    /// Set by a generation that wants the model's turn while [`Studio::warm_up`] holds it.
    stop_warm_up: Cell<bool>,
}

/// One loaded model (perhaps shared with other studios) and the current product photo.
#[wasm_bindgen]
pub struct Studio {
    inner: Rc<Inner>,
}

impl Studio {
    fn on(loaded: Rc<Loaded>) -> Studio {
        Studio {
            inner: Rc::new(Inner {
                loaded,
                product: RefCell::new(None),
                reference: RefCell::new(None),
                cancel: Cell::new(false),
                busy: Cell::new(false),
                stop_warm_up: Cell::new(false),
            }),
        }
    }
}

#[wasm_bindgen]
impl Studio {
    /// Opens the device and loads the model pack at `model_url` (a folder URL with `manifest.json`).
    /// `options` (may be undefined): `{ device: "auto"|"gpu"|"cpu", quantized_weights:
    /// "auto"|"keep"|"expand" }`. `device` auto (the default) takes WebGPU on a hardware GPU and
    /// the CPU otherwise (src/gpu/browser.rs); `quantized_weights` is what to do with a q8/q4
    /// pack's weights (default auto: keep them quantised when they would pass 1 GiB as f32;
    /// docs/PACKS.md).
    pub async fn open(model_url: String, options: JsValue) -> Result<Studio, JsError> {
        let choice = match get(&options, "device").as_string().as_deref() {
            None | Some("auto") => DeviceChoice::Auto,
            Some("gpu") => DeviceChoice::Gpu,
            Some("cpu") => DeviceChoice::Cpu,
            Some(other) => return Err(JsError::new(&format!("device {other:?}: expected auto, gpu or cpu"))),
        };
        let quantized = match get(&options, "quantized_weights").as_string().as_deref() {
            None | Some("auto") => None,
            Some("keep") => Some(QuantizedWeights::Keep),
            Some("expand") => Some(QuantizedWeights::Expand),
            Some(other) => {
                return Err(JsError::new(&format!("quantized_weights {other:?}: expected auto, keep or expand")));
            }
        };
        let opened = open(choice).await.map_err(|e| JsError::new(&e.to_string()))?;
        let device = opened.device.clone();
        let base = if model_url.ends_with('/') { model_url } else { format!("{model_url}/") };
        let manifest_bytes = fetch_bytes(&format!("{base}manifest.json"))
            .await
            .map_err(|e| JsError::new(&format!("The model could not be loaded: {e}")))?;
        let manifest = Manifest::parse(&manifest_bytes).map_err(|e| JsError::new(&e.to_string()))?;
        let mut files = BTreeMap::new();
        for (component, entry) in manifest.files.iter().filter(|(component, _)| *component != "segmenter") {
            let bytes = fetch_bytes(&format!("{base}{}", entry.file))
                .await
                .map_err(|e| JsError::new(&format!("The model could not be loaded: {e}")))?;
            files.insert(component.clone(), bytes);
        }
        let quantized = quantized.unwrap_or_else(|| manifest.quantized_weights());
        let model =
            Model::from_pack_with(manifest, &files, &device, quantized).map_err(|e| JsError::new(&e.to_string()))?;
        // Step previews from the first ad where the fit is cheap to learn (on a GPU, the first
        // ad teaches it instead, without compiling the encoder's kernels at start-up).
        if opened.kind() == "cpu" {
            calibrate(&model).await.map_err(|e| JsError::new(&e.to_string()))?;
        }
        static LOADS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let loaded = Loaded {
            model,
            base_url: base,
            segmenter: futures_util::lock::Mutex::new(None),
            device: opened.kind(),
            device_note: opened.note,
            id: LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
            turn: futures_util::lock::Mutex::new(()),
        };
        Ok(Studio::on(Rc::new(loaded)))
    }

    /// Another studio on this one's model (no second copy): its own product, style reference and
    /// cancel; generations on the shared model take turns.
    pub fn share(&self) -> Studio {
        Studio::on(self.inner.loaded.clone())
    }

    /// `{ name, trained, label, prompt_used, size_multiple, native_size, reference_used,
    /// depth_used, quantized_weights, device_weights_mb, device, device_note, model_id }`: `device` is
    /// "gpu" or "cpu", `device_note` (or null) why `auto` did not take the GPU; studios with the
    /// same `model_id` share one copy of the model ([`Studio::share`]).
    pub fn model_info(&self) -> JsValue {
        let m = &self.inner.loaded.model;
        let out = Object::new();
        set(&out, "name", m.manifest.name.as_str());
        set(&out, "trained", m.manifest.trained);
        set(&out, "label", m.manifest.label.as_str());
        set(&out, "prompt_used", m.prompt_used());
        set(&out, "size_multiple", m.size_multiple() as u32);
        set(&out, "native_size", m.native_size() as u32);
        set(&out, "reference_used", m.reference_encoder.is_some());
        set(&out, "depth_used", m.controlnet.is_some());
        // Large q8/q4 packs stay quantised on the GPU (Manifest::quantized_weights).
        set(&out, "quantized_weights", if m.quantized == QuantizedWeights::Keep { "keep" } else { "expand" });
        set(&out, "device_weights_mb", m.device_weight_bytes as f64 / 1048576.0);
        set(&out, "device", self.inner.loaded.device);
        set(&out, "device_note", self.inner.loaded.device_note.as_deref().map_or(JsValue::NULL, JsValue::from_str));
        set(&out, "model_id", self.inner.loaded.id);
        out.into()
    }

    /// Decodes the photo and finds the product mask (on a busy background, with the pack's cut-out
    /// network: fetched for the first such photo, then one pass of it on the CPU); keeps the product for `generate`. Resolves to
    /// `{ width, height, mask_source, mask_area, mask_png, cutout_png }`: the mask as the CLI's
    /// `--mask-out` writes it, and the cut-out (product colours, mask as alpha).
    pub fn prepare(&self, bytes: &[u8]) -> Promise {
        let inner = self.inner.clone();
        let bytes = bytes.to_vec();
        wasm_bindgen_futures::future_to_promise(async move {
            let loaded = &inner.loaded;
            let fetched = loaded.segmenter.lock().await.clone();
            let product = match prepare_product_segmented(&bytes, fetched.as_deref()).await {
                Err(busy @ PipelineError::Mask(MaskError::BusyBackground { .. })) if fetched.is_none() => {
                    match loaded.fetch_segmenter().await {
                        Ok(Some(segmenter)) => prepare_product_segmented(&bytes, Some(&segmenter)).await,
                        Ok(None) => Err(busy),
                        // Still the busy photo's message (the page opens the brush for it), and why
                        // the network could not help.
                        Err(why) => {
                            return Err(JsError::new(&format!(
                                "{busy} (The cut-out network for busy backgrounds could not be loaded: {why}.)"
                            ))
                            .into());
                        }
                    }
                }
                other => other,
            };
            keep_product(&inner, product).map_err(JsValue::from)
        })
    }

    /// As `prepare`, with the user's own mask for the photo (white or opaque = product, at the
    /// photo's size), as the CLI's `--mask` takes it.
    pub fn prepare_with_mask(&self, bytes: &[u8], mask: &[u8]) -> Result<JsValue, JsError> {
        keep_product(&self.inner, prepare_product_with_mask(bytes, mask))
    }

    /// Sets the style reference, or clears it when `bytes` is empty. With `pfv` its foreground is
    /// found like the product's (to be hidden); without, it is used whole (the PFV-off ablation,
    /// or a busy picture with nothing to hide). Returns `{ width, height }` of the reference.
    pub fn set_reference(&self, bytes: &[u8], pfv: bool) -> Result<JsValue, JsError> {
        if bytes.is_empty() {
            *self.inner.reference.borrow_mut() = None;
            return Ok(JsValue::NULL);
        }
        if self.inner.loaded.model.reference_encoder.is_none() {
            return Err(JsError::new("This model takes no style reference (its pack has no image encoder)."));
        }
        let reference = if pfv { Reference::from_bytes(bytes) } else { Reference::whole(bytes) };
        let reference = reference.map_err(|e| JsError::new(&e.to_string()))?;
        let out = Object::new();
        set(&out, "width", reference.image.width());
        set(&out, "height", reference.image.height());
        *self.inner.reference.borrow_mut() = Some(Rc::new(reference));
        Ok(out.into())
    }

    /// Generates an ad for the prepared product.
    /// `opts`: `{ prompt, size (a square's side) or width and height, fill, position, steps, seed, guidance, scheduler: "ddim"|"euler"|"euler-karras"|"dpm++2m"|"dpm++2m-karras"|"lcm",
    /// reference_scale, pfv, region_masks, text_weight, depth_scale, vae_tile, anchor_product, refine_strength,
    /// init_png, init_strength, preview_every }`
    /// (`refine_strength` 0: one pass even at twice the model's size; the reference ones
    /// apply with a style reference; depth_scale with a pack that has a depth ControlNet; vae_tile,
    /// the VAE's latent tile side, defaults to tiling only when the GPU's buffers are too small);
    /// `on_progress(step, total, preview)` after each denoising step; `preview` is
    /// `{ width, height, rgba }` (one pixel per latent cell) every `preview_every` steps, else null. Resolves to
    /// `{ width, height, rgba, png, placement: {x, y, w, h}, timings_ms, depth_used, vae_tile, notes }`
    /// (`vae_tile` 0: untiled).
    ///
    /// `partner` (may be undefined): on the CPU, another worker's studio making the same ad in
    /// lockstep, sharing the guidance ([`crate::pipeline::partner`]): `{ half: "cond"|"uncond",
    /// exchange(step, fingerprint, Float32Array) }`, `exchange` sending this studio's half and
    /// resolving to the partner's `{ fingerprint, half: Float32Array }`. The "uncond" studio is
    /// the helper: it resolves to null once its share is done. Ignored on a GPU.
    pub fn generate(&self, opts: JsValue, on_progress: Function, partner: JsValue) -> Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let partner = if inner.loaded.device == "cpu" { JsPartner::from_js(&partner)? } else { None };
            let product =
                inner.product.borrow().clone().ok_or_else(|| JsError::new("Choose a product photo first."))?;
            if inner.busy.get() {
                return Err(JsError::new("A generation is already running.").into());
            }
            let options = generate_options(&opts)?;
            let reference = inner.reference.borrow().clone();
            inner.busy.set(true);
            inner.cancel.set(false);
            // A warm-up holding the turn gives it up after its current step: what it compiled
            // stays compiled, and the seller's ad compiles the rest.
            inner.stop_warm_up.set(true);
            let cancel = inner.clone();
            let mut progress = |step: usize, total: usize| {
                // Every `preview_every` steps, what the ad looks like so far: `{ width, height, rgba }`.
                let preview = cancel.loaded.model.preview.lock().expect("preview lock").take_latest().map(|img| {
                    let p = Object::new();
                    set(&p, "width", img.width());
                    set(&p, "height", img.height());
                    set(&p, "rgba", Uint8Array::from(img.as_raw().as_slice()));
                    JsValue::from(p)
                });
                let _ = on_progress.call3(
                    &JsValue::NULL,
                    &JsValue::from(step as u32),
                    &JsValue::from(total as u32),
                    &preview.unwrap_or(JsValue::NULL),
                );
                !cancel.cancel.get()
            };
            let result = {
                let _turn = inner.loaded.turn.lock().await;
                if inner.cancel.get() {
                    Err(PipelineError::Cancelled)
                } else {
                    let model = &inner.loaded.model;
                    let partner = partner.as_ref().map(|p| p as &dyn GuidancePartner);
                    generate_in_lockstep(model, &product, reference.as_deref(), &options, partner, &mut progress).await
                }
            };
            inner.busy.set(false);
            let generated = match result {
                Ok(generated) => generated,
                Err(PipelineError::ShareDone) => return Ok(JsValue::NULL),
                Err(PipelineError::Cancelled) => return Err(JsError::new("cancelled").into()),
                Err(other) => return Err(JsError::new(&other.to_string()).into()),
            };
            let out = Object::new();
            set(&out, "width", generated.image.width());
            set(&out, "height", generated.image.height());
            set(&out, "rgba", Uint8Array::from(generated.image.as_raw().as_slice()));
            let png = encode_png(&generated.image).map_err(|e| JsError::new(&e))?;
            set(&out, "png", Uint8Array::from(png.as_slice()));
            let p = &generated.placement;
            let placement = Object::new();
            set(&placement, "x", p.x);
            set(&placement, "y", p.y);
            set(&placement, "w", p.w);
            set(&placement, "h", p.h);
            set(&out, "placement", placement);
            let timings = Object::new();
            for (stage, ms) in &generated.timings.0 {
                set(&timings, stage, *ms);
            }
            set(&out, "timings_ms", timings);
            set(&out, "depth_used", generated.depth_used);
            set(&out, "vae_tile", generated.vae_tile.map_or(0.0, |t| t as f64));
            set(&out, "notes", generated.notes.iter().map(|n| JsValue::from_str(n)).collect::<Array>());
            if let Some(r) = &generated.reference {
                let info = Object::new();
                set(&info, "patches", r.grid.visible.len() as u32);
                set(&info, "hidden_patches", r.hidden_patches() as u32);
                set(&info, "tokens", r.tokens as u32);
                set(&out, "reference", info);
            }
            Ok(out.into())
        })
    }

    /// Compiles the GPU kernels an ad with these `opts` (as [`Studio::generate`] takes them)
    /// needs, while the seller is still choosing a photo: one denoising step of such an ad for a
    /// synthetic product, the result dropped. On a GPU a first ad is mostly kernel compilation
    /// (BENCHMARKS.md); on the CPU there is nothing to compile and it returns at once. Takes the
    /// model's turn like a generation, leaves the studio's product and reference as they are,
    /// and stops after its current step when a generation starts. Resolves to `{ warmed, ms }`
    /// (`warmed` false: skipped on the CPU, or stopped early).
    pub fn warm_up(&self, opts: JsValue) -> Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let out = Object::new();
            let started = js_sys::Date::now();
            if inner.loaded.device == "cpu" || inner.busy.get() {
                set(&out, "warmed", false);
                set(&out, "ms", 0.0);
                return Ok(out.into());
            }
            let mut options = generate_options(&opts)?;
            options.steps = 1;
            options.preview_every = 0;
            let product = warm_up_product().map_err(|e| JsError::new(&e))?;
            let _turn = inner.loaded.turn.lock().await;
            inner.stop_warm_up.set(false);
            let stop = inner.clone();
            let mut progress = |_: usize, _: usize| !stop.stop_warm_up.get();
            let result = generate(&inner.loaded.model, &product, None, &options, &mut progress).await;
            let warmed = match result {
                Ok(_) => true,
                Err(PipelineError::Cancelled) => false,
                Err(other) => return Err(JsError::new(&other.to_string()).into()),
            };
            set(&out, "warmed", warmed);
            set(&out, "ms", js_sys::Date::now() - started);
            Ok(out.into())
        })
    }

    /// Stops the running generation after its current step.
    pub fn cancel(&self) {
        self.inner.cancel.set(true);
    }
}

/// The other worker of a lockstep pair, as [`Studio::generate`] takes it.
struct JsPartner {
    half: Half,
    exchange: Function,
}

impl JsPartner {
    fn from_js(partner: &JsValue) -> Result<Option<JsPartner>, JsError> {
        if partner.is_undefined() || partner.is_null() {
            return Ok(None);
        }
        let half = match get(partner, "half").as_string().as_deref() {
            Some("cond") => Half::Conditional,
            Some("uncond") => Half::Unconditional,
            other => return Err(JsError::new(&format!("partner half {other:?}: expected cond or uncond"))),
        };
        let exchange = get(partner, "exchange")
            .dyn_into::<Function>()
            .map_err(|_| JsError::new("partner.exchange is not a function"))?;
        Ok(Some(JsPartner { half, exchange }))
    }
}

impl GuidancePartner for JsPartner {
    fn half(&self) -> Half {
        self.half
    }

    fn exchange(&self, step: usize, fingerprint: u32, mine: Vec<f32>) -> SwapFuture<'_> {
        let sent = self.exchange.call3(
            &JsValue::NULL,
            &JsValue::from(step as u32),
            &JsValue::from(fingerprint),
            &Float32Array::from(mine.as_slice()),
        );
        Box::pin(async move {
            let why = |e: JsValue| {
                e.as_string().or_else(|| get(&e, "message").as_string()).unwrap_or_else(|| format!("{e:?}"))
            };
            let promise =
                sent.map_err(why)?.dyn_into::<Promise>().map_err(|_| "exchange returned no promise".to_string())?;
            let theirs = JsFuture::from(promise).await.map_err(why)?;
            let fingerprint = get(&theirs, "fingerprint").as_f64().ok_or("the partner sent no fingerprint")? as u32;
            let half = get(&theirs, "half").dyn_into::<Float32Array>().map_err(|_| "the partner sent no half")?;
            Ok((fingerprint, half.to_vec()))
        })
    }
}

/// The warm-up's product: a 64² photo with alpha, an opaque rounded block on transparency,
/// so that its mask comes from the alpha channel without the cut-out network.
fn warm_up_product() -> Result<Product, String> {
    let img = image::RgbaImage::from_fn(64, 64, |x, y| {
        let (dx, dy) = ((x as f32 - 31.5).abs(), (y as f32 - 31.5).abs());
        let inside = dx.max(dy) < 20.0 && (dx - 12.0).max(0.0).hypot((dy - 12.0).max(0.0)) < 8.0;
        if inside { image::Rgba([180, 90, 40, 255]) } else { image::Rgba([0, 0, 0, 0]) }
    });
    prepare_product(&encode_png(&img)?).map_err(|e| e.to_string())
}

fn encode_png(img: &image::RgbaImage) -> Result<Vec<u8>, String> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).map_err(|e| format!("PNG encoding failed: {e}"))?;
    Ok(out.into_inner())
}

/// Several finished ads as one stored `.zip` ([`crate::archive::zip_files`]): `names` and
/// `files` (PNG bytes) pair up in order.
#[wasm_bindgen]
pub fn zip_files(names: Array, files: Array) -> Result<Vec<u8>, JsError> {
    if names.length() != files.length() {
        return Err(JsError::new(&format!("{} names for {} files", names.length(), files.length())));
    }
    let names: Vec<String> = names.iter().map(|n| n.as_string().unwrap_or_default()).collect();
    let files: Vec<Vec<u8>> = files.iter().map(|f| Uint8Array::new(&f).to_vec()).collect();
    crate::archive::zip_files(names.iter().map(String::as_str).zip(files.iter().map(Vec::as_slice)))
        .map_err(|e| JsError::new(&e))
}

/// PFV on a decision mask (1 = keep, 0 = hide), exported so the browser tests can check that
/// wasm computes exactly what the native build does: `{ cols, rows, visible, token_keep }`
/// with `visible` per patch and `token_keep` for a `token_cols × token_rows` encoder grid (1/0 bytes).
#[wasm_bindgen]
pub fn pfv_visibility(
    mask: &[f32],
    width: u32,
    height: u32,
    patch: u32,
    threshold: f32,
    token_cols: u32,
    token_rows: u32,
) -> Result<JsValue, JsError> {
    let grid = patch_visibility(mask, width, height, &PfvConfig { patch, threshold })
        .map_err(|e| JsError::new(&e.to_string()))?;
    let bytes = |v: &[bool]| Uint8Array::from(v.iter().map(|&b| u8::from(b)).collect::<Vec<u8>>().as_slice());
    let out = Object::new();
    set(&out, "cols", grid.cols);
    set(&out, "rows", grid.rows);
    set(&out, "visible", bytes(&grid.visible));
    set(&out, "token_keep", bytes(&grid.token_keep(token_cols, token_rows)));
    Ok(out.into())
}

/// The page's generation options over [`GenerateOptions::default`]: each key given replaces its
/// default, so the defaults live in one place (the pipeline's) for the page, the widget and the CLI.
fn generate_options(opts: &JsValue) -> Result<GenerateOptions, JsError> {
    let d = GenerateOptions::default();
    let number = |key: &str| get(opts, key).as_f64();
    let flag = |key: &str| get(opts, key).as_bool();
    let size = number("size").map(|s| s.max(0.0) as u32);
    Ok(GenerateOptions {
        prompt: get(opts, "prompt").as_string().unwrap_or(d.prompt),
        width: number("width").map(|w| w as u32).or(size).unwrap_or(d.width),
        height: number("height").map(|h| h as u32).or(size).unwrap_or(d.height),
        fill: number("fill").map_or(d.fill, |v| v as f32),
        position: number("position").map_or(d.position, |v| v as f32),
        steps: number("steps").map_or(d.steps, |v| v.max(0.0) as usize),
        seed: number("seed").map_or(d.seed, |v| v.max(0.0) as u64),
        guidance_scale: number("guidance").map_or(d.guidance_scale, |v| v as f32),
        scheduler: match get(opts, "scheduler").as_string() {
            Some(name) => name.parse().map_err(|e: SchedulerError| JsError::new(&e.to_string()))?,
            None => d.scheduler,
        },
        reference: ReferenceOptions {
            scale: number("reference_scale").map_or(d.reference.scale, |v| v as f32),
            pfv: flag("pfv").unwrap_or(d.reference.pfv),
            region_masks: flag("region_masks").unwrap_or(d.reference.region_masks),
            ..d.reference
        },
        text_weight: number("text_weight").map_or(d.text_weight, |v| v as f32),
        depth_scale: number("depth_scale").map_or(d.depth_scale, |v| v as f32),
        vae_tile: number("vae_tile").filter(|&t| t > 0.0).map(|t| t as usize),
        anchor_product: flag("anchor_product").unwrap_or(d.anchor_product),
        refine_strength: number("refine_strength").map(|s| s as f32).or(d.refine_strength).filter(|&s| s != 0.0),
        init: init_image(opts, number("init_strength"))?,
        preview_every: number("preview_every").map_or(0, |v| v.max(0.0) as usize),
        ..d
    })
}

/// `init_png` (an earlier ad's PNG bytes, at this ad's size) and `init_strength` (default 0.5):
/// refine that ad instead of starting from noise ("more like this", "refine" on the page).
fn init_image(opts: &JsValue, strength: Option<f64>) -> Result<Option<InitImage>, JsError> {
    let png = get(opts, "init_png");
    if png.is_undefined() || png.is_null() {
        return Ok(None);
    }
    let bytes = Uint8Array::new(&png).to_vec();
    let image = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .map_err(|e| JsError::new(&format!("The ad to refine could not be read as a PNG: {e}")))?
        .to_rgba8();
    Ok(Some(InitImage { image, strength: strength.map_or(0.5, |s| s as f32) }))
}

/// Keeps a prepared product in `inner` for `generate` and describes it to the page.
fn keep_product(inner: &Inner, product: Result<Product, PipelineError>) -> Result<JsValue, JsError> {
    let product = product.map_err(|e| JsError::new(&e.to_string()))?;
    let out = Object::new();
    set(&out, "width", product.image.rgba.width());
    set(&out, "height", product.image.rgba.height());
    set(
        &out,
        "mask_source",
        match product.mask.source {
            MaskSource::Alpha => "alpha",
            MaskSource::Given => "given",
            MaskSource::Background { .. } => "background",
            MaskSource::Network { .. } => "network",
        },
    );
    set(&out, "mask_area", product.mask.area_fraction());
    let png = encode_png(&product.mask.to_preview_rgba()).map_err(|e| JsError::new(&e))?;
    set(&out, "mask_png", Uint8Array::from(png.as_slice()));
    let cutout = encode_png(&product.cutout()).map_err(|e| JsError::new(&e))?;
    set(&out, "cutout_png", Uint8Array::from(cutout.as_slice()));
    *inner.product.borrow_mut() = Some(Rc::new(product));
    Ok(out.into())
}

/// Our kernels against the tensor ops they replace ([`crate::nn::kernel_check`]), on this
/// browser's WebGPU, or on the wasm CPU path when `device` is `"cpu"`: an array of
/// `{ case, ran_ours, max_abs_diff, largest, agrees }`. The browser test calls it; a seller's
/// page never needs to.
#[wasm_bindgen]
pub async fn check_kernels(device: Option<String>) -> Result<JsValue, JsError> {
    let choice = match device.as_deref() {
        None | Some("gpu") => DeviceChoice::Gpu,
        Some("cpu") => DeviceChoice::Cpu,
        Some(other) => return Err(JsError::new(&format!("check_kernels: no device '{other}' (gpu or cpu)"))),
    };
    let device = open_device(choice).await.map_err(|e| JsError::new(&e.to_string()))?;
    let checked = crate::nn::kernel_check::all(&device).await.map_err(|e| JsError::new(&e))?;
    let out = Array::new();
    for c in checked {
        let row = Object::new();
        set(&row, "case", c.case.as_str());
        set(&row, "ran_ours", c.ran_ours);
        set(&row, "max_abs_diff", c.max_abs_diff);
        set(&row, "largest", c.largest);
        set(&row, "agrees", c.agrees());
        out.push(&row);
    }
    Ok(out.into())
}
