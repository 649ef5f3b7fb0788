//! The pipeline, in the order it runs: photo → mask → layout ([`product`]) → the inpainting
//! inputs ([`inpaint`]) → conditioning: text, style reference through PFV, depth
//! ([`conditioning`]) → denoise: UNet with MEPA, scheduler, classifier-free guidance, the
//! product's latents anchored ([`denoise`]) → decode ([`decode`]) → composite. Ads of twice the
//! model's size are made in two passes ([`refine`]).
//!
//! The web app, the widget and the CLI all call [`prepare_product`] and [`generate`];
//! only how bytes arrive and where pixels go differ. The loop is `async` because in
//! the browser every GPU read-back must yield to the event loop; natively it is driven
//! by `pollster::block_on`.

mod conditioning;
mod decode;
mod denoise;
mod error;
mod inpaint;
mod options;
mod partner;
mod pass;
pub mod preview;
mod product;
mod refine;

pub use conditioning::{Depth, Guidance};
pub use denoise::{both, gaussian_noise, predict_noise};
pub use error::PipelineError;
pub use options::{GenerateOptions, InitImage};
pub use partner::{GuidancePartner, Half, SwapFuture, fingerprint};
pub use pass::{Generated, Lockstep, Timings, generate_pass};
pub use product::{Product, prepare_product, prepare_product_segmented, prepare_product_with_mask, product_size_note};
pub use refine::{generate_refined, refines_at};

use crate::encoders::reference::Reference;
use crate::model::Model;

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
    generate_in_lockstep(model, product, reference, options, None, progress).await
}

/// [`generate`] sharing classifier-free guidance with a `partner` instance that runs the same
/// generation ([`partner`]). The conditional half's instance makes the ad; the unconditional
/// half's (the helper) ends with [`PipelineError::ShareDone`] once its share is computed.
pub async fn generate_in_lockstep(
    model: &Model,
    product: &Product,
    reference: Option<&Reference>,
    options: &GenerateOptions,
    partner: Option<&dyn GuidancePartner>,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Generated, PipelineError> {
    // Without guidance there are no halves to share: the helper has nothing to do.
    if partner.is_some_and(|p| p.half() == Half::Unconditional) && options.guidance_scale == 1.0 {
        return Err(PipelineError::ShareDone);
    }
    let lockstep = partner.map(|partner| Lockstep { partner, image_needed: false });
    match options.refine_strength {
        Some(strength) if options.init.is_none() && refines_at(model, options.width, options.height) => {
            generate_refined(model, product, reference, options, strength, lockstep.as_ref(), progress).await
        }
        _ => generate_pass(model, product, reference, options, lockstep.as_ref(), progress).await,
    }
}
