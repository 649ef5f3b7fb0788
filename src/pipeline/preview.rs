//! The step previews' colour fit, learnt at load where that is cheap (see [`crate::vae::preview`]).

use image::{Rgba, RgbaImage};

use super::error::PipelineError;
use super::inpaint::rgba_tensor;
use crate::model::Model;

/// Learns the fit from a palette image through the VAE encoder (a grid of flat colours, each
/// block two latent cells wide), so that the first ad already has previews. A few encoder calls'
/// worth of work: the studio runs it where that is cheap, on the CPU.
pub async fn calibrate(model: &Model) -> Result<(), PipelineError> {
    let f = model.manifest.vae.downscale();
    let (cells, block) = (16usize, 2 * f);
    let side = (cells * block) as u32;
    let mut palette = RgbaImage::new(side, side);
    // A fixed spread of colours: a 6 × 6 × 6 grid of the RGB cube, cycled over the blocks.
    for (i, px) in palette.pixels_mut().enumerate() {
        let (x, y) = (i % side as usize / block, i / side as usize / block);
        let n = (y * cells + x) * 37 % 216;
        let level = |v: usize| (v * 51) as u8;
        *px = Rgba([level(n / 36), level(n / 6 % 6), level(n % 6), 255]);
    }
    let latents = model.vae_encoder.encode(rgba_tensor(&palette, &model.device));
    let data = latents.into_data_async().await.map_err(|e| PipelineError::Gpu(format!("{e:?}")))?;
    model.preview.lock().expect("preview lock").learn(&data, &palette);
    Ok(())
}
