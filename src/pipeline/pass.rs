//! One pass of the pipeline at the requested size, as a list of its stages, each timed.

use image::RgbaImage;
use web_time::Instant;

use super::conditioning::{self, Guidance};
use super::decode;
use super::denoise;
use super::error::PipelineError;
use super::inpaint::InpaintInputs;
use super::options::{Canvas, GenerateOptions};
use super::partner::{GuidancePartner, Half};
use super::product::{Product, placement_for, product_size_note};
use crate::composite::composite;
use crate::denoise::scheduler::Scheduler;
use crate::encoders::reference::{Reference, ReferenceReport};
use crate::input::layout::{PlacedProduct, Placement, render_placed};
use crate::model::Model;

/// Milliseconds spent per stage, in pipeline order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings(pub Vec<(&'static str, f64)>);

impl Timings {
    pub(super) fn record(&mut self, stage: &'static str, since: Instant) -> Instant {
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

/// A run in lockstep with a [`GuidancePartner`].
#[derive(Clone, Copy)]
pub struct Lockstep<'a> {
    pub partner: &'a dyn GuidancePartner,
    /// Whether this pass's image is used even on the helper (the first of two passes, which the
    /// second refines); a helper stops after denoising a pass that is not.
    pub image_needed: bool,
}

/// Runs layout → encoders → denoise → decode → composite once, at the requested size; with
/// `lockstep`, sharing the guidance with a partner ([`super::partner`]).
pub async fn generate_pass(
    model: &Model,
    product: &Product,
    reference: Option<&Reference>,
    options: &GenerateOptions,
    lockstep: Option<&Lockstep<'_>>,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Generated, PipelineError> {
    let mut timings = Timings::default();
    let mut t = Instant::now();

    // 1. The options checked against the model; how the VAE tiles; the sampler (LCM draws fresh
    //    noise between steps: seeded from the same seed, so runs repeat).
    let canvas = Canvas::check(model, options)?;
    let vae_tile = decode::vae_tile(model, options.vae_tile, canvas.lh, canvas.lw)?;
    let mut scheduler =
        Scheduler::new(options.scheduler, &model.manifest.scheduler, options.steps)?.with_noise_seed(options.seed);

    // 2. Layout: where the product goes, as data; then the canvas-size product layer.
    let placement = placement_for(product, options)?;
    let placed = render_placed(&product.image, &product.mask, &placement);
    t = timings.record("layout", t);

    // 3. The inpainting inputs: what is generated, and the product alone, encoded.
    let inputs = InpaintInputs::new(model, &placed, &canvas, vae_tile);
    t = timings.record("encode", t);

    // 4. The prompt, and the empty prompt for guidance's unconditional half.
    let text = conditioning::encode_prompt(model, options)?;
    t = timings.record("text", t);

    // 5. The style reference, PFV-masked, as MEPA's image prompt on the background.
    let (image_prompt, reference_report) =
        match conditioning::encode_reference(model, reference, options, &placed, &canvas)? {
            Some((prompt, report)) => {
                t = timings.record("reference", t);
                (Some(prompt), Some(report))
            }
            None => (None, None),
        };
    let guidance = Guidance::new(text, image_prompt, options);

    // 6. The product's depth for the ControlNet.
    let depth = conditioning::depth_control(model, &placed, &canvas, options.depth_scale);
    if depth.is_some() {
        t = timings.record("depth", t);
    }

    // 7. Denoise.
    let latents = denoise::denoise(
        model,
        &mut scheduler,
        &canvas,
        &inputs,
        &guidance,
        depth.as_ref(),
        options,
        vae_tile,
        lockstep.map(|l| l.partner),
        progress,
    )
    .await?;
    t = timings.record("denoise", t);
    if lockstep.is_some_and(|l| l.partner.half() == Half::Unconditional && !l.image_needed) {
        return Err(PipelineError::ShareDone);
    }

    // 8. Decode to pixels.
    let background = decode::decode(model, latents, &placed, &canvas, vae_tile).await?;
    if options.preview_every > 0 {
        // The previews' colour fit learns from the ads made with previews (the studio's).
        model.preview.lock().expect("preview lock").learn_last(&background);
    }
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
