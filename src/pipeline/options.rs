//! What to generate ([`GenerateOptions`]), and the canvas those options make for a model.

use image::RgbaImage;

use super::error::PipelineError;
use crate::denoise::scheduler::SchedulerKind;
use crate::encoders::reference::ReferenceOptions;
use crate::input::layout::Placement;
use crate::model::Model;

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
    /// Every this many steps, a picture of the latents for the studio to show
    /// ([`crate::pipeline::preview`]); 0: none.
    pub preview_every: usize,
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
            preview_every: 0,
        }
    }
}

/// The canvas in pixels and in latents, checked against the model: sides that are positive
/// multiples of the model's step, and a sane number of steps.
#[derive(Debug, Clone, Copy)]
pub(super) struct Canvas {
    pub w: usize,
    pub h: usize,
    /// The VAE's downscale factor.
    pub f: usize,
    pub lw: usize,
    pub lh: usize,
}

impl Canvas {
    pub fn check(model: &Model, options: &GenerateOptions) -> Result<Self, PipelineError> {
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
        // Weights a page may send as anything JavaScript has: a NaN or an infinity would turn
        // every latent into NaN and the ad into a black square.
        for (name, value) in [
            ("guidance", options.guidance_scale),
            ("text weight", options.text_weight),
            ("depth scale", options.depth_scale),
            ("style reference scale", options.reference.scale),
        ] {
            if !value.is_finite() || !(-100.0..=100.0).contains(&value) {
                return Err(PipelineError::Options(format!(
                    "The {name} must be a number between -100 and 100; got {value}."
                )));
            }
        }
        let f = model.manifest.vae.downscale();
        let (w, h) = (options.width as usize, options.height as usize);
        Ok(Self { w, h, f, lw: w / f, lh: h / f })
    }
}

/// Index of the first step an [`InitImage`] run takes: diffusers' `t_start = steps − int(steps · strength)`.
pub(super) fn first_refining_step(init: &InitImage, steps: usize, w: usize, h: usize) -> Result<usize, PipelineError> {
    if init.image.dimensions() != (w as u32, h as u32) {
        let (iw, ih) = init.image.dimensions();
        return Err(PipelineError::Options(format!("The image to refine is {iw}×{ih}; the output is {w}×{h}.")));
    }
    Ok(steps - refining_steps(init.strength, steps)?)
}

/// How many of `steps` a refining `strength` runs: diffusers' `int(steps · strength)`, at least one.
pub(super) fn refining_steps(strength: f32, steps: usize) -> Result<usize, PipelineError> {
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
