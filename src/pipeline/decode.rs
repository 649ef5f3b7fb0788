//! Latents to pixels: the VAE decoder, tiled where the device's buffers are too small; a
//! conditioned decoder also reads the product's own pixels.

use burn::tensor::Tensor;
use image::RgbaImage;

use super::error::PipelineError;
use super::inpaint::product_pixels;
use super::options::Canvas;
use crate::input::layout::PlacedProduct;
use crate::model::Model;
use crate::vae::VaeModelConfig;

/// The decoded canvas as opaque RGBA.
pub(super) async fn decode(
    model: &Model,
    latents: Tensor<4>,
    placed: &PlacedProduct,
    canvas: &Canvas,
    vae_tile: Option<usize>,
) -> Result<RgbaImage, PipelineError> {
    let (w, h) = (canvas.w, canvas.h);
    let product = model.vae_decoder.is_conditioned().then(|| product_pixels(placed, w, h, &model.device));
    let decoded = model.vae_decoder.decode_tiled_with(latents, vae_tile, product.as_ref());
    let data = decoded.into_data_async().await.map_err(|e| PipelineError::Gpu(format!("{e:?}")))?;
    let values: Vec<f32> = data.try_into_vec().map_err(|e| PipelineError::Gpu(format!("{e:?}")))?;
    Ok(tensor_to_rgba(&values, w, h))
}

/// The latent tile side the VAE runs in for an `lh × lw`-latent image: the one asked for, or,
/// when none is, one small enough for the device's largest buffer (None: untiled).
pub(super) fn vae_tile(
    model: &Model,
    asked: Option<usize>,
    lh: usize,
    lw: usize,
) -> Result<Option<usize>, PipelineError> {
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
