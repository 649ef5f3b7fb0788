//! Ads of twice the model's size or more: a half-size pass, upscaled, then refined at full size.

use web_time::Instant;

use super::error::PipelineError;
use super::options::{GenerateOptions, InitImage, refining_steps};
use super::pass::{Generated, Lockstep, generate_pass};
use super::product::{Product, placement_for};
use crate::encoders::reference::Reference;
use crate::model::Model;

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
    lockstep: Option<&Lockstep<'_>>,
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
    // A helper needs the first pass's image too: the second pass refines it.
    let first_lockstep = lockstep.map(|l| Lockstep { image_needed: true, ..*l });
    let first =
        generate_pass(model, product, reference, &half, first_lockstep.as_ref(), &mut |i, _| progress(i, total))
            .await?;
    let t = Instant::now();
    let image =
        image::imageops::resize(&first.image, options.width, options.height, image::imageops::FilterType::CatmullRom);
    let upscale_ms = t.elapsed().as_secs_f64() * 1000.0;
    let full =
        GenerateOptions { init: Some(InitImage { image, strength }), placement: Some(placement), ..options.clone() };
    let mut second =
        generate_pass(model, product, reference, &full, lockstep, &mut |i, _| progress(first_steps + i, total)).await?;
    let first_ms = first.timings.0.iter().map(|(_, ms)| ms).sum::<f64>();
    second.timings.0.splice(0..0, [("first pass", first_ms), ("upscale", upscale_ms)]);
    Ok(second)
}

/// Whether [`generate_refined`] should make a `width × height` ad with `model`: when half of it
/// is still at least the size the model was trained at and a valid size.
pub fn refines_at(model: &Model, width: u32, height: u32) -> bool {
    let (native, multiple) = (model.native_size() as u32, 2 * model.size_multiple() as u32);
    width.min(height) >= 2 * native && width.is_multiple_of(multiple) && height.is_multiple_of(multiple)
}
