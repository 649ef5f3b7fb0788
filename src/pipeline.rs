//! The pipeline, in the order it runs: image → mask → layout → encoders (text; style
//! reference through PFV) → denoise (UNet with MEPA, scheduler, classifier-free guidance, the
//! product's latents anchored) → decode → composite.
//!
//! The web app, the widget and the CLI all call [`prepare_product`] and [`generate`];
//! only how bytes arrive and where pixels go differ. The loop is `async` because in
//! the browser every GPU read-back must yield to the event loop; natively it is driven
//! by `pollster::block_on`.

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbaImage;
use web_time::Instant;

use crate::composite::{CompositeError, composite};
use crate::denoise::mepa::{Conditioning, ImagePrompt};
use crate::denoise::scheduler::{Scheduler, SchedulerError, SchedulerKind};
use crate::image_io::{DecodeLimits, DecodedImage, ImageError, decode_image};
use crate::layout::{LayoutError, LayoutOptions, PlacedProduct, Placement, place_product, render_placed};
use crate::mask::{MaskError, MaskOptions, ProductMask, extend_product_colours, product_mask};
use crate::model::Model;
use crate::pack::ProductShare;
use crate::reference::{Reference, ReferenceOptions, ReferenceReport};
use crate::vae::VaeModelConfig;
use crate::vae_tiny::ProductPixels;
use crate::weights::ModelError;

/// Any reason a generation did not produce an image. `Display` is for the user.
#[derive(Debug, Clone, PartialEq)]
pub enum PipelineError {
    Image(ImageError),
    Mask(MaskError),
    Layout(LayoutError),
    Model(ModelError),
    Scheduler(SchedulerError),
    Composite(CompositeError),
    /// An option is out of range (size not a multiple of the model's, zero steps, …).
    Options(String),
    /// The user pressed Cancel.
    Cancelled,
    /// The GPU failed or was lost mid-run (driver reset, tab in background too long, …).
    Gpu(String),
}

impl std::fmt::Display for PipelineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PipelineError::Image(e) => e.fmt(f),
            PipelineError::Mask(e) => e.fmt(f),
            PipelineError::Layout(e) => e.fmt(f),
            PipelineError::Model(e) => e.fmt(f),
            PipelineError::Scheduler(e) => e.fmt(f),
            PipelineError::Composite(e) => e.fmt(f),
            PipelineError::Options(m) => f.write_str(m),
            PipelineError::Cancelled => f.write_str("cancelled"),
            PipelineError::Gpu(m) => write!(
                f,
                "The GPU stopped responding ({m}). Your photo and settings are kept: reload the page (or rerun) to try again."
            ),
        }
    }
}

impl std::error::Error for PipelineError {}

macro_rules! from_error {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for PipelineError { fn from(e: $t) -> Self { PipelineError::$v(e) } }
    )*};
}
from_error!(ImageError => Image, MaskError => Mask, LayoutError => Layout, ModelError => Model, SchedulerError => Scheduler, CompositeError => Composite);

/// A decoded product photo and its mask: computed once per upload, shown to the user,
/// reused for every generation.
#[derive(Debug, Clone)]
pub struct Product {
    pub image: DecodedImage,
    pub mask: ProductMask,
}

/// Decodes a product photo and finds its mask (alpha channel, or automatic on a plain
/// background, whose soft edge then takes the product's colours instead of the backdrop's).
pub fn prepare_product(bytes: &[u8]) -> Result<Product, PipelineError> {
    let mut image = decode_image(bytes, &DecodeLimits::default())?;
    let mask = product_mask(&image, &MaskOptions::default())?;
    extend_product_colours(&mut image.rgba, &mask);
    Ok(Product { image, mask })
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Scene description. Not used by a model without a text encoder (see [`Model::prompt_used`]).
    pub prompt: String,
    pub width: u32,
    pub height: u32,
    pub steps: usize,
    pub seed: u64,
    /// Classifier-free guidance scale; 1 disables guidance.
    pub guidance_scale: f32,
    /// Sampler: DDIM (default), Euler, DPM-Solver++ (2M) or LCM.
    pub scheduler: SchedulerKind,
    /// Fraction of the canvas's shorter side the product's longer side occupies (never more
    /// than the photo's own size: the product is not upscaled).
    pub fill: f32,
    /// Where the product sits across the ad: 0 left, 0.5 centred, 1 right ([`LayoutOptions::position`]).
    pub position: f32,
    /// How a style reference is used (weight λ, PFV and region masks on/off); ignored without one.
    pub reference: ReferenceOptions,
    /// λ_t, MEPA's weight on the text prompt's attention (1 as trained; other values are an ablation).
    pub text_weight: f32,
    /// The depth ControlNet's conditioning scale (diffusers' `controlnet_conditioning_scale`);
    /// 0 turns depth off (an ablation). Ignored by packs without a ControlNet.
    pub depth_scale: f32,
    /// Encode and decode in tiles of this many latent pixels (diffusers' `enable_tiling()` for KL
    /// VAEs; the same blend for AutoencoderTiny; a multiple of 4, at least 8). `None`: tile only when the device could not
    /// hold a whole pass's largest activation in one buffer ([`crate::gpu::max_buffer_bytes`]).
    pub vae_tile: Option<usize>,
    /// After every step, reset the latent cells wholly inside the product to the product's own
    /// latents, noised to the next step's level (clean after the last): diffusers' inpainting
    /// pipeline does this for 4-channel UNets (docs/METHOD.md §3). It keeps the sampler on the
    /// trajectory the model was trained on inside the product; off is an ablation.
    pub anchor_product: bool,
    /// Start from this canvas-size image instead of pure noise: it is encoded, noised to the
    /// level of the last `⌊steps · strength⌋` steps, and only those run (diffusers' img2img and
    /// inpainting pipelines with `image` and `strength` < 1). [`generate_refined`] uses it.
    pub init: Option<InitImage>,
    /// At sizes of at least twice the model's own ([`refines_at`]), generate at half the size
    /// and refine the upscaled ad at this strength ([`generate_refined`]); `None`: one pass.
    pub refine_strength: Option<f32>,
    /// Put the product here instead of laying it out by `fill` (its canvas must be
    /// `width × height`): [`generate_refined`] gives both passes the full-size layout.
    pub placement: Option<Placement>,
}

/// An image to refine rather than generate from noise (see [`GenerateOptions::init`]).
#[derive(Debug, Clone, PartialEq)]
pub struct InitImage {
    pub image: RgbaImage,
    /// In (0, 1]: how much of the schedule runs, so how far the result may move from `image`.
    pub strength: f32,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            width: 512,
            height: 512,
            steps: 20,
            seed: 42,
            guidance_scale: 7.5,
            scheduler: SchedulerKind::Ddim,
            fill: 0.6,
            position: 0.5,
            reference: ReferenceOptions::default(),
            text_weight: 1.0,
            depth_scale: 1.0,
            vae_tile: None,
            anchor_product: true,
            init: None,
            refine_strength: Some(0.5),
            placement: None,
        }
    }
}

/// Milliseconds spent per stage, in pipeline order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings(pub Vec<(&'static str, f64)>);

impl Timings {
    fn record(&mut self, stage: &'static str, since: Instant) -> Instant {
        crate::gpu::watchdog::beat(stage);
        self.0.push((stage, since.elapsed().as_secs_f64() * 1000.0));
        Instant::now()
    }
}

/// A finished ad.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The ad: generated background with the product's own pixels pasted back.
    pub image: RgbaImage,
    /// The decoder's full-canvas output before paste-back (for evaluation).
    pub background: RgbaImage,
    /// What PFV did to the style reference, when one was used.
    pub reference: Option<ReferenceReport>,
    /// Whether the depth ControlNet steered the UNet (a pack with one, depth scale ≠ 0).
    pub depth_used: bool,
    /// The latent tile side the VAE ran in, when it was tiled.
    pub vae_tile: Option<usize>,
    pub placement: Placement,
    pub placed: PlacedProduct,
    pub timings: Timings,
    /// What the user should know about this ad (see [`product_size_note`]); shown beside it.
    pub notes: Vec<String>,
}

impl Model {
    /// Whether prompts influence this model's output (packs without a text encoder ignore them).
    pub fn prompt_used(&self) -> bool {
        self.text_encoder.is_some()
    }
}

/// Makes an ad of `product`, with an optional style `reference` whose background style guides
/// the new background: one [`generate_pass`], or, where [`GenerateOptions::refine_strength`]
/// asks for it and the size is at least twice the model's own, [`generate_refined`].
///
/// `progress(step, total)` is called after every denoising step; returning `false`
/// cancels the run (the result is `Err(PipelineError::Cancelled)`).
pub async fn generate(
    model: &Model,
    product: &Product,
    reference: Option<&Reference>,
    options: &GenerateOptions,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Generated, PipelineError> {
    match options.refine_strength {
        Some(strength) if options.init.is_none() && refines_at(model, options.width, options.height) => {
            generate_refined(model, product, reference, options, strength, progress).await
        }
        _ => generate_pass(model, product, reference, options, progress).await,
    }
}

/// Runs layout → encoders → denoise → decode → composite once, at the requested size.
pub async fn generate_pass(
    model: &Model,
    product: &Product,
    reference: Option<&Reference>,
    options: &GenerateOptions,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Generated, PipelineError> {
    let mut timings = Timings::default();
    let mut t = Instant::now();
    let device = &model.device;

    // 1. Check options against the model.
    let multiple = model.size_multiple() as u32;
    for (name, side) in [("width", options.width), ("height", options.height)] {
        if side == 0 || side % multiple != 0 {
            return Err(PipelineError::Options(format!(
                "The output {name} must be a positive multiple of {multiple} pixels for this model; got {side}."
            )));
        }
    }
    if options.steps == 0 || options.steps > 1000 {
        return Err(PipelineError::Options(format!("Steps must be between 1 and 1000; got {}.", options.steps)));
    }
    let f = model.manifest.vae.downscale();
    let (w, h) = (options.width as usize, options.height as usize);
    let (lw, lh) = (w / f, h / f);
    let vae_tile = vae_tile(model, options.vae_tile, lh, lw)?;
    // LCM draws fresh noise between steps: seeded from the same seed, so runs repeat.
    let mut scheduler =
        Scheduler::new(options.scheduler, &model.manifest.scheduler, options.steps)?.with_noise_seed(options.seed);

    // 2. Layout: where the product goes, as data; then the canvas-size product layer.
    let placement = placement_for(product, options)?;
    let placed = render_placed(&product.image, &product.mask, &placement);
    t = timings.record("layout", t);

    // 3. Inpainting inputs (diffusers StableDiffusionInpaintPipeline.prepare_mask_latents):
    //    mask = 1 where the background is generated; masked image keeps the product only.
    let inpaint = inpaint_mask(&placed.mask);
    let masked_image = masked_image_tensor(&placed, &inpaint, w, h, device);
    let mask_latent =
        Tensor::<4>::from_data(TensorData::new(downsample_nearest(&inpaint, w, h, f), [1, 1, lh, lw]), device);
    let masked_latents = model.vae_encoder.encode_tiled(masked_image, vae_tile);
    t = timings.record("encode", t);

    // 4. Prompt conditioning: the prompt's hidden states, and the empty prompt's as the
    //    unconditional context. Without a text encoder the context is one zero token, which
    //    makes every cross-attention add only its output bias; guidance is then a no-op
    //    and skipped (cond = uncond), as it is for an empty prompt.
    let (cond_text, uncond_text, text_guidance) = match &model.text_encoder {
        Some(encoder) => {
            let uncond = encoder.encode("", device)?;
            let prompt = options.prompt.trim();
            if prompt.is_empty() {
                (uncond.clone(), uncond, 1.0)
            } else {
                (encoder.encode(prompt, device)?, uncond, options.guidance_scale)
            }
        }
        None => {
            let zero = Tensor::<3>::zeros([1, 1, model.manifest.unet.cross_attention_dim], device);
            (zero.clone(), zero, 1.0)
        }
    };
    t = timings.record("text", t);

    // 5. Style reference (MEPA's image prompt): PFV-masked tokens that act on the background
    //    region B = 1 − m only (area-averaged to latent resolution). The unconditional half of
    //    guidance has no reference, as in training (the reference is dropped 15 % of the time).
    let reference = reference.filter(|_| options.reference.scale != 0.0);
    let mut reference_report = None;
    let image_prompt = match reference {
        Some(reference) => {
            let encoder = model.reference_encoder.as_ref().ok_or_else(|| {
                PipelineError::Options("This model takes no style reference (its pack has no image encoder).".into())
            })?;
            let encoded = encoder.encode(reference, &options.reference, device)?;
            reference_report = Some(encoded.report);
            let region = options.reference.region_masks.then(|| {
                let background: Vec<f32> = placed.mask.iter().map(|m| 1.0 - m).collect();
                Tensor::<4>::from_data(TensorData::new(area_average(&background, w, h, f), [1, 1, lh, lw]), device)
            });
            t = timings.record("reference", t);
            Some(ImagePrompt { tokens: encoded.tokens, scale: options.reference.scale, region })
        }
        None => None,
    };
    let guidance = if image_prompt.is_some() { options.guidance_scale } else { text_guidance };
    let cond = Conditioning { text: cond_text, text_scale: options.text_weight, image: image_prompt };
    let uncond = Conditioning { text_scale: options.text_weight, ..Conditioning::text(uncond_text) };

    // 5b. Depth (the ControlNet's control image): the placed product's pseudo-depth, near =
    //     bright, the same for both halves of guidance, as diffusers passes it. Its embedding
    //     does not depend on the step, so it is computed once.
    let depth = match &model.controlnet {
        Some(controlnet) if options.depth_scale != 0.0 => {
            let d = crate::depth::pseudo_depth(&placed.mask, w, h);
            let rgb: Vec<f32> = (0..3).flat_map(|_| d.iter().copied()).collect();
            let image = Tensor::from_data(TensorData::new(rgb, [1, 3, h, w]), device);
            t = timings.record("depth", t);
            Some(Depth { embedding: controlnet.embed_control(image), scale: options.depth_scale })
        }
        _ => None,
    };

    // 6. Initial noise from the seed, drawn on the CPU so every device starts identically;
    //    or the image to refine, noised to the first step that runs.
    let lat_ch = model.manifest.vae.latent_channels();
    let noise = Tensor::<4>::from_data(
        TensorData::new(gaussian_noise(options.seed, lat_ch * lh * lw), [1, lat_ch, lh, lw]),
        device,
    );
    let timesteps = scheduler.timesteps().to_vec();
    let total = timesteps.len();
    let (mut latents, start) = match &options.init {
        None => (noise.clone().mul_scalar(scheduler.init_noise_sigma()), 0),
        Some(init) => {
            let start = first_refining_step(init, total, w, h)?;
            let image = model.vae_encoder.encode_tiled(rgba_tensor(&init.image, device), vae_tile);
            let (a, b) = scheduler.noise_coefficients(start);
            (image.mul_scalar(a) + noise.clone().mul_scalar(b), start)
        }
    };
    // Latent cells no generated pixel falls in, as 1 (and the rest as 0), for anchoring.
    let anchor = options.anchor_product.then(|| {
        let inside = cells_inside(&inpaint, w, h, f);
        let outside: Vec<f32> = inside.iter().map(|v| 1.0 - v).collect();
        let cells = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [1, 1, lh, lw]), device);
        (cells(inside), cells(outside))
    });

    // 7. Denoise.
    for (i, &step_t) in timesteps.iter().enumerate().skip(start) {
        // Only the noisy latents are scaled (Euler), as diffusers' inpainting pipeline does.
        let scaled = scheduler.scale_model_input(latents.clone(), step_t);
        let input = Tensor::cat(vec![scaled, mask_latent.clone(), masked_latents.clone()], 1);
        let eps = predict_noise(model, input, step_t, &cond, &uncond, guidance, depth.as_ref());
        latents = scheduler.step(eps, step_t, latents);
        if let Some((inside, outside)) = &anchor {
            // diffusers: init_latents_proper = add_noise(image_latents, noise, t_next), clean
            // after the last step; latents = (1 − mask) · proper + mask · latents.
            let (a, b) = if i + 1 < total { scheduler.noise_coefficients(i + 1) } else { (1.0, 0.0) };
            let known = masked_latents.clone().mul_scalar(a) + noise.clone().mul_scalar(b);
            latents = known * inside.clone() + latents * outside.clone();
        }
        // Wait for the GPU here: it bounds queued work, lets the browser repaint, and
        // surfaces a lost device at the step where it happened.
        latents.to_data_async().await.map_err(|e| PipelineError::Gpu(format!("{e:?}")))?;
        crate::gpu::watchdog::beat("a denoising step");
        if !progress(i + 1 - start, total - start) {
            return Err(PipelineError::Cancelled);
        }
    }
    t = timings.record("denoise", t);

    // 8. Decode to pixels; a conditioned decoder also reads the product's own pixels.
    let product_pixels = model.vae_decoder.is_conditioned().then(|| product_pixels(&placed, w, h, device));
    let decoded = model.vae_decoder.decode_tiled_with(latents, vae_tile, product_pixels.as_ref());
    let data = decoded.into_data_async().await.map_err(|e| PipelineError::Gpu(format!("{e:?}")))?;
    let values: Vec<f32> = data.try_into_vec().map_err(|e| PipelineError::Gpu(format!("{e:?}")))?;
    let background = tensor_to_rgba(&values, w, h);
    t = timings.record("decode", t);

    // 9. Paste the product's own pixels back.
    let image = composite(&background, &placed)?;
    timings.record("composite", t);

    Ok(Generated {
        image,
        background,
        reference: reference_report,
        depth_used: depth.is_some(),
        vae_tile,
        notes: product_size_note(model.manifest.smallest_product, &placement).into_iter().collect(),
        placement,
        placed,
        timings,
    })
}

/// Says so when a layout puts the product below the smallest the model was trained on (a pack's
/// [`ProductShare`]): the scene around it is then less reliable, and since a photo is never
/// enlarged, the remedy is a larger photo or, where the photo was scaled down, a larger fill.
pub fn product_size_note(smallest: Option<ProductShare>, placement: &Placement) -> Option<String> {
    let smallest = smallest?;
    let height = placement.h as f32 / placement.canvas_h as f32;
    let width = placement.w as f32 / placement.canvas_w as f32;
    if height >= smallest.height || width >= smallest.width {
        return None;
    }
    let remedy = if placement.scale < 1.0 {
        "choose a larger product size".to_string()
    } else {
        let needed = (smallest.height * placement.canvas_h as f32).ceil() as u32;
        format!("use a photo in which the product is at least {needed} px tall (photos are never enlarged)")
    };
    Some(format!(
        "The product is {:.0} % of the ad's height; this model was trained on products at least {:.0} % tall, \
         so the scene around a smaller one is less reliable: {remedy}.",
        height * 100.0,
        smallest.height * 100.0
    ))
}

/// Generates at half the requested size, pastes the product back, upscales that ad (Catmull-Rom)
/// and refines it at the full size from `strength` (SD's "hires fix", two [`generate_pass`] runs):
/// the layout comes from a size the model knows, the detail from the full one. A model trained
/// at 256² generating 512² in one pass repeats structures (two or three horizons); see
/// [`refines_at`] for when this is worth it and docs/EVAL.md for what it changes.
pub async fn generate_refined(
    model: &Model,
    product: &Product,
    reference: Option<&Reference>,
    options: &GenerateOptions,
    strength: f32,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Generated, PipelineError> {
    let multiple = 2 * model.size_multiple() as u32;
    if !options.width.is_multiple_of(multiple) || !options.height.is_multiple_of(multiple) {
        return Err(PipelineError::Options(format!(
            "Refining from half the size needs sides that are multiples of {multiple} pixels; got {}×{}.",
            options.width, options.height
        )));
    }
    let first_steps = options.steps;
    let second_steps = refining_steps(strength, options.steps)?;
    let total = first_steps + second_steps;
    // One layout for both passes: the full size's, halved for the first.
    let placement = placement_for(product, options)?;
    let half = GenerateOptions {
        width: options.width / 2,
        height: options.height / 2,
        init: None,
        refine_strength: None,
        placement: Some(placement.halved()),
        ..options.clone()
    };
    let first = generate_pass(model, product, reference, &half, &mut |i, _| progress(i, total)).await?;
    let t = Instant::now();
    let image =
        image::imageops::resize(&first.image, options.width, options.height, image::imageops::FilterType::CatmullRom);
    let upscale_ms = t.elapsed().as_secs_f64() * 1000.0;
    let full =
        GenerateOptions { init: Some(InitImage { image, strength }), placement: Some(placement), ..options.clone() };
    let mut second =
        generate_pass(model, product, reference, &full, &mut |i, _| progress(first_steps + i, total)).await?;
    let first_ms = first.timings.0.iter().map(|(_, ms)| ms).sum::<f64>();
    second.timings.0.splice(0..0, [("first pass", first_ms), ("upscale", upscale_ms)]);
    Ok(second)
}

/// Where the product goes: `options.placement` when given (checked against the canvas), else
/// laid out by [`place_product`] (standing on the floor line, across where `options.position`
/// says, scaled by `options.fill`, never above the photo's own size).
fn placement_for(product: &Product, options: &GenerateOptions) -> Result<Placement, PipelineError> {
    match &options.placement {
        Some(p) if (p.canvas_w, p.canvas_h) == (options.width, options.height) => Ok(p.clone()),
        Some(p) => Err(PipelineError::Options(format!(
            "The placement is for a {}×{} canvas, but the ad is {}×{}.",
            p.canvas_w, p.canvas_h, options.width, options.height
        ))),
        None => {
            let layout = LayoutOptions {
                canvas_w: options.width,
                canvas_h: options.height,
                fill: options.fill,
                allow_upscale: false,
                position: options.position,
            };
            Ok(place_product(&product.mask, &layout)?)
        }
    }
}

/// Whether [`generate_refined`] should make a `width × height` ad with `model`: when half of it
/// is still at least the size the model was trained at and a valid size.
pub fn refines_at(model: &Model, width: u32, height: u32) -> bool {
    let (native, multiple) = (model.native_size() as u32, 2 * model.size_multiple() as u32);
    width.min(height) >= 2 * native && width.is_multiple_of(multiple) && height.is_multiple_of(multiple)
}

/// The depth ControlNet's input for one generation: the embedded control image and its scale.
pub struct Depth {
    /// The depth map through the ControlNet's conditioning embedding (`[1, C, h, w]`).
    pub embedding: Tensor<4>,
    pub scale: f32,
}

/// ε̂ = ε_uncond + s·(ε_cond − ε_uncond); with `s == 1` only the conditional half is
/// computed. The halves batch into one UNet call when their text contexts have the same
/// token count; otherwise they run as two calls (the runtime never pads prompts, so attention
/// sees exactly the prompt's tokens, as in training). With `depth`, the ControlNet runs on the
/// same batch and its residuals steer every UNet call.
pub fn predict_noise(
    model: &Model,
    input: Tensor<4>,
    t: f32,
    cond: &Conditioning,
    uncond: &Conditioning,
    scale: f32,
    depth: Option<&Depth>,
) -> Tensor<4> {
    let unet = |input: Tensor<4>, c: &Conditioning| {
        let residuals = match (&model.controlnet, depth) {
            (Some(controlnet), Some(depth)) => {
                // The ControlNet reads the noisy latents (4 channels) or the whole inpainting input.
                let sample = input.clone().narrow(1, 0, controlnet.config().in_channels);
                Some(controlnet.forward_embedded(
                    sample,
                    t,
                    &Conditioning::text(c.text.clone()),
                    depth.embedding.clone(),
                    depth.scale,
                ))
            }
            _ => None,
        };
        model.unet.forward_controlled(input, t, c, residuals.as_ref())
    };
    if scale == 1.0 {
        return unet(input, cond);
    }
    let (eps_uncond, eps_cond) = match batch_pair(uncond, cond, &input) {
        Some(batched) => {
            let out = unet(Tensor::cat(vec![input.clone(), input], 0), &batched);
            (out.clone().narrow(0, 0, 1), out.narrow(0, 1, 1))
        }
        None => (unet(input.clone(), uncond), unet(input, cond)),
    };
    eps_uncond.clone() + (eps_cond - eps_uncond).mul_scalar(scale)
}

/// `[uncond; cond]` as one batch of 2, when their token counts allow it. A half without an
/// image prompt gets the other half's tokens under an all-zero region mask, which adds exactly
/// nothing (M ⊙ Attn = 0), so one UNet call computes both.
fn batch_pair(uncond: &Conditioning, cond: &Conditioning, input: &Tensor<4>) -> Option<Conditioning> {
    if uncond.text.dims() != cond.text.dims() || uncond.text_scale != cond.text_scale {
        return None;
    }
    let text = Tensor::cat(vec![uncond.text.clone(), cond.text.clone()], 0);
    let image = match (&uncond.image, &cond.image) {
        (None, None) => None,
        (Some(a), Some(b)) if a.tokens.dims() != b.tokens.dims() || a.scale != b.scale => return None,
        (a, b) => {
            let [_, _, h, w] = input.dims();
            let device = input.device();
            let region = |p: Option<&ImagePrompt>| match p {
                None => Tensor::<4>::zeros([1, 1, h, w], &device),
                Some(p) => p.region.clone().unwrap_or_else(|| Tensor::ones([1, 1, h, w], &device)),
            };
            let some = a.as_ref().or(b.as_ref()).expect("one half has an image prompt");
            let tokens = |p: Option<&ImagePrompt>| p.unwrap_or(some).tokens.clone();
            Some(ImagePrompt {
                tokens: Tensor::cat(vec![tokens(a.as_ref()), tokens(b.as_ref())], 0),
                scale: some.scale,
                region: Some(Tensor::cat(vec![region(a.as_ref()), region(b.as_ref())], 0)),
            })
        }
    };
    Some(Conditioning { text, text_scale: cond.text_scale, image })
}

/// 1 where the background is to be generated: pixels that are not solidly product.
/// Binarised at 0.5 like diffusers' inpainting mask.
/// The latent tile side the VAE runs in for an `lh × lw`-latent image: the one asked for, or,
/// when none is, one small enough for the device's largest buffer (None: untiled).
fn vae_tile(model: &Model, asked: Option<usize>, lh: usize, lw: usize) -> Result<Option<usize>, PipelineError> {
    match asked {
        Some(tile) if tile < 8 || tile % 4 != 0 => Err(PipelineError::Options(format!(
            "The VAE tile must be a multiple of 4 latent pixels, at least 8; got {tile}."
        ))),
        Some(tile) => Ok(Some(tile)),
        None => Ok(crate::gpu::max_buffer_bytes(&model.device).and_then(|limit| match &model.manifest.vae {
            VaeModelConfig::Kl(config) => config.tile_within(lh, lw, limit),
            VaeModelConfig::Tiny(config) => config.tile_within(lh, lw, limit),
        })),
    }
}

fn inpaint_mask(product: &[f32]) -> Vec<f32> {
    product.iter().map(|&m| if m >= 0.5 { 0.0 } else { 1.0 }).collect()
}

/// The product on a neutral (0 in [-1, 1]) canvas: `image * (mask < 0.5)` in diffusers' terms.
fn masked_image_tensor(placed: &PlacedProduct, inpaint: &[f32], w: usize, h: usize, device: &Device) -> Tensor<4> {
    let mut chw = vec![0f32; 3 * w * h];
    for (i, px) in placed.rgba.pixels().enumerate() {
        if inpaint[i] < 0.5 {
            for c in 0..3 {
                chw[c * w * h + i] = px.0[c] as f32 / 127.5 - 1.0;
            }
        }
    }
    Tensor::from_data(TensorData::new(chw, [1, 3, h, w]), device)
}

/// Index of the first step an [`InitImage`] run takes: diffusers' `t_start = steps − int(steps · strength)`.
fn first_refining_step(init: &InitImage, steps: usize, w: usize, h: usize) -> Result<usize, PipelineError> {
    if init.image.dimensions() != (w as u32, h as u32) {
        let (iw, ih) = init.image.dimensions();
        return Err(PipelineError::Options(format!("The image to refine is {iw}×{ih}; the output is {w}×{h}.")));
    }
    Ok(steps - refining_steps(init.strength, steps)?)
}

/// How many of `steps` a refining `strength` runs: diffusers' `int(steps · strength)`, at least one.
fn refining_steps(strength: f32, steps: usize) -> Result<usize, PipelineError> {
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(PipelineError::Options(format!("Strength must be in (0, 1]; got {strength}.")));
    }
    match (steps as f64 * strength as f64) as usize {
        0 => Err(PipelineError::Options(format!(
            "Strength {strength} runs none of the {steps} steps; raise it or the steps."
        ))),
        runs => Ok(runs),
    }
}

/// An RGBA image's colours as a `[1, 3, h, w]` tensor in [-1, 1].
fn rgba_tensor(image: &RgbaImage, device: &Device) -> Tensor<4> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut chw = vec![0f32; 3 * w * h];
    for (i, px) in image.pixels().enumerate() {
        for c in 0..3 {
            chw[c * w * h + i] = px.0[c] as f32 / 127.5 - 1.0;
        }
    }
    Tensor::from_data(TensorData::new(chw, [1, 3, h, w]), device)
}

/// The placed product for a conditioned decoder: its colours in [-1, 1] and its soft mask,
/// as `training/condition_decoder.py` trains it (it multiplies the two itself).
fn product_pixels(placed: &PlacedProduct, w: usize, h: usize, device: &Device) -> ProductPixels {
    ProductPixels {
        image: rgba_tensor(&placed.rgba, device),
        mask: Tensor::from_data(TensorData::new(placed.mask.clone(), [1, 1, h, w]), device),
    }
}

/// 1 for each f×f cell whose pixels are all kept (inpaint mask 0), else 0: the latent cells that
/// hold only the product.
fn cells_inside(inpaint: &[f32], w: usize, h: usize, f: usize) -> Vec<f32> {
    let (lw, lh) = (w / f, h / f);
    let mut out = Vec::with_capacity(lw * lh);
    for y in 0..lh {
        for x in 0..lw {
            let all_kept = (0..f).all(|dy| (0..f).all(|dx| inpaint[(y * f + dy) * w + x * f + dx] == 0.0));
            out.push(if all_kept { 1.0 } else { 0.0 });
        }
    }
    out
}

/// Nearest downsampling by an integer factor (`F.interpolate(mode="nearest")`: picks the top-left pixel).
fn downsample_nearest(mask: &[f32], w: usize, h: usize, f: usize) -> Vec<f32> {
    let (lw, lh) = (w / f, h / f);
    let mut out = Vec::with_capacity(lw * lh);
    for y in 0..lh {
        for x in 0..lw {
            out.push(mask[(y * f) * w + x * f]);
        }
    }
    out
}

/// Area average by an integer factor: each f×f cell's mean (MEPA's region masks at latent
/// resolution keep the soft product edge as fractional weights).
fn area_average(mask: &[f32], w: usize, h: usize, f: usize) -> Vec<f32> {
    let (lw, lh) = (w / f, h / f);
    let mut out = vec![0f32; lw * lh];
    for y in 0..lh * f {
        for x in 0..lw * f {
            out[(y / f) * lw + x / f] += mask[y * w + x];
        }
    }
    let n = (f * f) as f32;
    out.iter_mut().for_each(|v| *v /= n);
    out
}

/// Standard normal samples from a seeded ChaCha8 stream (Box–Muller): the same seed
/// gives the same noise on every device and platform. Stream 0 of
/// [`crate::denoise::scheduler::seeded_noise`]; LCM's step noise uses the later streams.
pub fn gaussian_noise(seed: u64, n: usize) -> Vec<f32> {
    crate::denoise::scheduler::seeded_noise(seed, 0, n)
}

/// `[1, 3, h, w]` values in [-1, 1] → opaque RGBA (as diffusers' `(x / 2 + 0.5).clamp(0, 1)`, rounded).
fn tensor_to_rgba(values: &[f32], w: usize, h: usize) -> RgbaImage {
    let mut img = RgbaImage::new(w as u32, h as u32);
    for (i, px) in img.pixels_mut().enumerate() {
        for c in 0..3 {
            let v = (values[c * w * h + i] / 2.0 + 0.5).clamp(0.0, 1.0);
            px.0[c] = (v * 255.0).round() as u8;
        }
        px.0[3] = 255;
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Rect;

    /// A `w × h` product at `scale` on a `cw × ch` canvas.
    fn placed(cw: u32, ch: u32, w: u32, h: u32, scale: f32) -> Placement {
        let crop = Rect { x: 0, y: 0, w: (w as f32 / scale) as u32, h: (h as f32 / scale) as u32 };
        Placement { canvas_w: cw, canvas_h: ch, crop, x: 0, y: 0, w, h, scale }
    }

    #[test]
    fn small_products_get_a_note_only_from_packs_that_declare_a_smallest() {
        let smallest = Some(ProductShare { height: 0.35, width: 0.8 });
        // 32 of 256 rows (12.5 %) at the photo's own size: a larger photo is the remedy.
        let note = product_size_note(smallest, &placed(256, 256, 40, 32, 1.0)).expect("a note");
        assert!(note.starts_with("The product is 12 % of the ad's height"), "{note}");
        assert!(note.contains("at least 35 % tall") && note.contains("at least 90 px tall"), "{note}");
        // Scaled down by the layout: a larger product size is.
        let note = product_size_note(smallest, &placed(256, 256, 40, 32, 0.5)).expect("a note");
        assert!(note.ends_with("choose a larger product size."), "{note}");
        // At the smallest height, or as wide as training's widest: in distribution.
        assert_eq!(product_size_note(smallest, &placed(256, 256, 40, 90, 1.0)), None);
        assert_eq!(product_size_note(smallest, &placed(256, 256, 205, 40, 1.0)), None);
        assert!(product_size_note(smallest, &placed(256, 256, 204, 89, 1.0)).is_some());
        // Stable Diffusion packs declare none.
        assert_eq!(product_size_note(None, &placed(256, 256, 8, 8, 1.0)), None);
    }

    #[test]
    fn noise_is_seeded_and_standard() {
        let a = gaussian_noise(7, 10_000);
        assert_eq!(a, gaussian_noise(7, 10_000));
        assert_ne!(a, gaussian_noise(8, 10_000));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        let var = a.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
    }

    #[test]
    fn nearest_downsample_picks_top_left() {
        let mask: Vec<f32> = (0..16).map(|i| i as f32).collect();
        assert_eq!(downsample_nearest(&mask, 4, 4, 2), vec![0.0, 2.0, 8.0, 10.0]);
    }

    #[test]
    fn area_average_is_the_cell_mean() {
        let mask = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.5, 0.5];
        assert_eq!(area_average(&mask, 4, 2, 2), vec![0.25, 0.75]);
    }

    #[test]
    fn cells_inside_need_every_pixel_kept() {
        // 4×2 pixels, 2×2 cells: the left cell is all kept (0); one generated pixel excludes the right.
        let inpaint = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(cells_inside(&inpaint, 4, 2, 2), vec![1.0, 0.0]);
    }

    #[test]
    fn inpaint_mask_is_binary_complement() {
        assert_eq!(inpaint_mask(&[0.0, 0.49, 0.5, 1.0]), vec![1.0, 1.0, 0.0, 0.0]);
    }
}
