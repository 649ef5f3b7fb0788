//! The pipeline, in the order it runs: image → mask → layout → (PFV, encoders) →
//! denoise (UNet, scheduler, classifier-free guidance) → decode → composite.
//!
//! The web app, the widget and the CLI all call [`prepare_product`] and [`generate`];
//! only how bytes arrive and where pixels go differ. The loop is `async` because in
//! the browser every GPU read-back must yield to the event loop; natively it is driven
//! by `pollster::block_on`.

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbaImage;
use web_time::Instant;

use crate::composite::{CompositeError, composite};
use crate::denoise::scheduler::{Scheduler, SchedulerError, SchedulerKind};
use crate::image_io::{DecodeLimits, DecodedImage, ImageError, decode_image};
use crate::layout::{LayoutError, LayoutOptions, PlacedProduct, Placement, place_product, render_placed};
use crate::mask::{MaskError, MaskOptions, ProductMask, product_mask};
use crate::model::Model;
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

/// Decodes a product photo and finds its mask (alpha channel, or automatic on a plain background).
pub fn prepare_product(bytes: &[u8]) -> Result<Product, PipelineError> {
    let image = decode_image(bytes, &DecodeLimits::default())?;
    let mask = product_mask(&image, &MaskOptions::default())?;
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
    /// Fraction of the canvas's shorter side the product's longer side occupies.
    pub fill: f32,
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
        }
    }
}

/// Milliseconds spent per stage, in pipeline order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings(pub Vec<(&'static str, f64)>);

impl Timings {
    fn record(&mut self, stage: &'static str, since: Instant) -> Instant {
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
    pub placement: Placement,
    pub placed: PlacedProduct,
    pub timings: Timings,
}

impl Model {
    /// Whether prompts influence this model's output (packs without a text encoder ignore them).
    pub fn prompt_used(&self) -> bool {
        self.text_encoder.is_some()
    }
}

/// Runs layout → denoise → decode → composite for `product`.
///
/// `progress(step, total)` is called after every denoising step; returning `false`
/// cancels the run (the result is `Err(PipelineError::Cancelled)`).
pub async fn generate(
    model: &Model,
    product: &Product,
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
    // LCM draws fresh noise between steps: seeded from the same seed, so runs repeat.
    let mut scheduler = Scheduler::new(options.scheduler, &model.manifest.scheduler, options.steps)?.with_noise_seed(options.seed);

    // 2. Layout: where the product goes, as data; then the canvas-size product layer.
    let layout = LayoutOptions { canvas_w: options.width, canvas_h: options.height, fill: options.fill, allow_upscale: false };
    let placement = place_product(&product.mask, &layout)?;
    let placed = render_placed(&product.image, &product.mask, &placement);
    t = timings.record("layout", t);

    // 3. Inpainting inputs (diffusers StableDiffusionInpaintPipeline.prepare_mask_latents):
    //    mask = 1 where the background is generated; masked image keeps the product only.
    let (w, h) = (options.width as usize, options.height as usize);
    let f = model.manifest.vae.downscale();
    let (lw, lh) = (w / f, h / f);
    let inpaint = inpaint_mask(&placed.mask);
    let masked_image = masked_image_tensor(&placed, &inpaint, w, h, device);
    let mask_latent = Tensor::<4>::from_data(TensorData::new(downsample_nearest(&inpaint, w, h, f), [1, 1, lh, lw]), device);
    let masked_latents = model.vae_encoder.encode(masked_image);
    t = timings.record("encode", t);

    // 4. Prompt conditioning: the prompt's hidden states, and the empty prompt's as the
    //    unconditional context. Without a text encoder the context is one zero token, which
    //    makes every cross-attention add only its output bias; guidance is then a no-op
    //    and skipped (cond = uncond), as it is for an empty prompt.
    let (cond, uncond, guidance) = match &model.text_encoder {
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

    // 5. Initial noise from the seed, drawn on the CPU so every device starts identically.
    let lat_ch = model.manifest.vae.latent_channels();
    let noise = gaussian_noise(options.seed, lat_ch * lh * lw);
    let mut latents = Tensor::<4>::from_data(TensorData::new(noise, [1, lat_ch, lh, lw]), device)
        .mul_scalar(scheduler.init_noise_sigma());

    // 6. Denoise.
    let timesteps = scheduler.timesteps().to_vec();
    let total = timesteps.len();
    for (i, &step_t) in timesteps.iter().enumerate() {
        // Only the noisy latents are scaled (Euler), as diffusers' inpainting pipeline does.
        let scaled = scheduler.scale_model_input(latents.clone(), step_t);
        let input = Tensor::cat(vec![scaled, mask_latent.clone(), masked_latents.clone()], 1);
        let eps = predict_noise(model, input, step_t as f32, &cond, &uncond, guidance);
        latents = scheduler.step(eps, step_t, latents);
        // Wait for the GPU here: it bounds queued work, lets the browser repaint, and
        // surfaces a lost device at the step where it happened.
        latents.to_data_async().await.map_err(|e| PipelineError::Gpu(format!("{e:?}")))?;
        if !progress(i + 1, total) {
            return Err(PipelineError::Cancelled);
        }
    }
    t = timings.record("denoise", t);

    // 7. Decode to pixels.
    let decoded = model.vae_decoder.decode(latents);
    let data = decoded.into_data_async().await.map_err(|e| PipelineError::Gpu(format!("{e:?}")))?;
    let values: Vec<f32> = data.try_into_vec().map_err(|e| PipelineError::Gpu(format!("{e:?}")))?;
    let background = tensor_to_rgba(&values, w, h);
    t = timings.record("decode", t);

    // 8. Paste the product's own pixels back.
    let image = composite(&background, &placed)?;
    timings.record("composite", t);

    Ok(Generated { image, background, placement, placed, timings })
}

/// ε̂ = ε_uncond + s·(ε_cond − ε_uncond); with `s == 1` only the conditional half is
/// computed. The halves batch into one UNet call when their contexts have the same token
/// count; otherwise they run as two calls (the runtime never pads prompts, so attention
/// sees exactly the prompt's tokens, as in training).
pub fn predict_noise(model: &Model, input: Tensor<4>, t: f32, cond: &Tensor<3>, uncond: &Tensor<3>, scale: f32) -> Tensor<4> {
    if scale == 1.0 {
        return model.unet.forward(input, t, cond);
    }
    let (eps_uncond, eps_cond) = if cond.dims() == uncond.dims() {
        let batched_input = Tensor::cat(vec![input.clone(), input], 0);
        let batched_ctx = Tensor::cat(vec![uncond.clone(), cond.clone()], 0);
        let out = model.unet.forward(batched_input, t, &batched_ctx);
        (out.clone().narrow(0, 0, 1), out.narrow(0, 1, 1))
    } else {
        (model.unet.forward(input.clone(), t, uncond), model.unet.forward(input, t, cond))
    };
    eps_uncond.clone() + (eps_cond - eps_uncond).mul_scalar(scale)
}

/// 1 where the background is to be generated: pixels that are not solidly product.
/// Binarised at 0.5 like diffusers' inpainting mask.
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
    fn inpaint_mask_is_binary_complement() {
        assert_eq!(inpaint_mask(&[0.0, 0.49, 0.5, 1.0]), vec![1.0, 1.0, 0.0, 0.0]);
    }
}
