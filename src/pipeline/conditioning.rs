//! What the UNet is conditioned on: the prompt's hidden states for both halves of classifier-free
//! guidance, the style reference as MEPA's image prompt on the background region, and the
//! product's pseudo-depth for the ControlNet.

use burn::tensor::{Tensor, TensorData};

use super::error::PipelineError;
use super::inpaint::area_average;
use super::options::{Canvas, GenerateOptions};
use crate::denoise::mepa::{Conditioning, ImagePrompt};
use crate::encoders::reference::{Reference, ReferenceReport};
use crate::input::layout::PlacedProduct;
use crate::model::Model;

/// The prompt's hidden states and the empty prompt's (the unconditional context), with the
/// guidance scale the text alone calls for.
pub(super) struct TextContexts {
    cond: Tensor<3>,
    uncond: Tensor<3>,
    guidance: f32,
}

/// Encodes the prompt. Without a text encoder the context is one zero token, which makes every
/// cross-attention add only its output bias; guidance is then a no-op and skipped (cond =
/// uncond), as it is for an empty prompt.
pub(super) fn encode_prompt(model: &Model, options: &GenerateOptions) -> Result<TextContexts, PipelineError> {
    let device = &model.device;
    Ok(match &model.text_encoder {
        Some(encoder) => {
            let uncond = encoder.encode("", device)?;
            let prompt = options.prompt.trim();
            if prompt.is_empty() {
                TextContexts { cond: uncond.clone(), uncond, guidance: 1.0 }
            } else {
                TextContexts { cond: encoder.encode(prompt, device)?, uncond, guidance: options.guidance_scale }
            }
        }
        None => {
            let zero = Tensor::<3>::zeros([1, 1, model.manifest.unet.cross_attention_dim], device);
            TextContexts { cond: zero.clone(), uncond: zero, guidance: 1.0 }
        }
    })
}

/// The style reference as MEPA's image prompt: PFV-masked tokens that act on the background
/// region B = 1 − m only (area-averaged to latent resolution), with what PFV did to it. `None`
/// without a reference, or with its weight at 0.
pub(super) fn encode_reference(
    model: &Model,
    reference: Option<&Reference>,
    options: &GenerateOptions,
    placed: &PlacedProduct,
    canvas: &Canvas,
) -> Result<Option<(ImagePrompt, ReferenceReport)>, PipelineError> {
    let Some(reference) = reference.filter(|_| options.reference.scale != 0.0) else { return Ok(None) };
    let encoder = model.reference_encoder.as_ref().ok_or_else(|| {
        PipelineError::Options("This model takes no style reference (its pack has no image encoder).".into())
    })?;
    let device = &model.device;
    let encoded = encoder.encode(reference, &options.reference, device)?;
    let Canvas { w, h, f, lw, lh } = *canvas;
    let region = options.reference.region_masks.then(|| {
        let background: Vec<f32> = placed.mask.iter().map(|m| 1.0 - m).collect();
        Tensor::<4>::from_data(TensorData::new(area_average(&background, w, h, f), [1, 1, lh, lw]), device)
    });
    Ok(Some((ImagePrompt { tokens: encoded.tokens, scale: options.reference.scale, region }, encoded.report)))
}

/// Both halves of classifier-free guidance and its scale.
pub struct Guidance {
    pub cond: Conditioning,
    pub uncond: Conditioning,
    /// 1: only the conditional half runs.
    pub scale: f32,
}

impl Guidance {
    /// The unconditional half has no reference, as in training (the reference is dropped 15 %
    /// of the time); with a reference, guidance runs even for an empty prompt.
    pub(super) fn new(text: TextContexts, image_prompt: Option<ImagePrompt>, options: &GenerateOptions) -> Self {
        let scale = if image_prompt.is_some() { options.guidance_scale } else { text.guidance };
        Self {
            cond: Conditioning { text: text.cond, text_scale: options.text_weight, image: image_prompt },
            uncond: Conditioning { text_scale: options.text_weight, ..Conditioning::text(text.uncond) },
            scale,
        }
    }
}

/// The depth ControlNet's input for one generation: the embedded control image and its scale.
pub struct Depth {
    /// The depth map through the ControlNet's conditioning embedding (`[1, C, h, w]`).
    pub embedding: Tensor<4>,
    pub scale: f32,
}

/// The ControlNet's control image: the placed product's pseudo-depth, near = bright, the same for
/// both halves of guidance, as diffusers passes it. Its embedding does not depend on the step, so
/// it is computed once. `None` without a ControlNet or with depth turned off.
pub(super) fn depth_control(model: &Model, placed: &PlacedProduct, canvas: &Canvas, scale: f32) -> Option<Depth> {
    let controlnet = model.controlnet.as_ref().filter(|_| scale != 0.0)?;
    let (w, h) = (canvas.w, canvas.h);
    let d = crate::input::depth::pseudo_depth(&placed.mask, w, h);
    let rgb: Vec<f32> = (0..3).flat_map(|_| d.iter().copied()).collect();
    let image = Tensor::from_data(TensorData::new(rgb, [1, 3, h, w]), &model.device);
    Some(Depth { embedding: controlnet.embed_control(image), scale })
}
