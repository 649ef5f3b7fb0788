//! The inpainting UNet's extra inputs (diffusers' `StableDiffusionInpaintPipeline.prepare_mask_latents`):
//! where the background is generated, the product alone on a neutral canvas as latents, and the
//! latent cells that hold only the product; and the small pixel ↔ tensor conversions around them.

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbaImage;

use super::options::Canvas;
use crate::input::layout::PlacedProduct;
use crate::model::Model;
use crate::vae::tiny::ProductPixels;

/// What the UNet reads beside the noisy latents at every step.
pub(super) struct InpaintInputs {
    /// 1 where the background is generated, per pixel.
    pub inpaint: Vec<f32>,
    /// The same at latent resolution, `[1, 1, lh, lw]`.
    pub mask_latent: Tensor<4>,
    /// The product on a neutral canvas, encoded: `[1, C, lh, lw]`.
    pub masked_latents: Tensor<4>,
}

impl InpaintInputs {
    /// mask = 1 where the background is generated; the masked image keeps the product only.
    pub fn new(model: &Model, placed: &PlacedProduct, canvas: &Canvas, vae_tile: Option<usize>) -> Self {
        let Canvas { w, h, f, lw, lh } = *canvas;
        let device = &model.device;
        let inpaint = inpaint_mask(&placed.mask);
        let masked_image = masked_image_tensor(placed, &inpaint, w, h, device);
        let mask_latent =
            Tensor::<4>::from_data(TensorData::new(downsample_nearest(&inpaint, w, h, f), [1, 1, lh, lw]), device);
        let masked_latents = model.vae_encoder.encode_tiled(masked_image, vae_tile);
        Self { inpaint, mask_latent, masked_latents }
    }
}

/// 1 where the background is to be generated: pixels that are not solidly product.
/// Binarised at 0.5 like diffusers' inpainting mask.
pub(super) fn inpaint_mask(product: &[f32]) -> Vec<f32> {
    product.iter().map(|&m| if m >= 0.5 { 0.0 } else { 1.0 }).collect()
}

/// The product on a neutral (0 in [-1, 1]) canvas: `image * (mask < 0.5)` in diffusers' terms.
pub(super) fn masked_image_tensor(
    placed: &PlacedProduct,
    inpaint: &[f32],
    w: usize,
    h: usize,
    device: &Device,
) -> Tensor<4> {
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

/// An RGBA image's colours as a `[1, 3, h, w]` tensor in [-1, 1].
pub(super) fn rgba_tensor(image: &RgbaImage, device: &Device) -> Tensor<4> {
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
pub(super) fn product_pixels(placed: &PlacedProduct, w: usize, h: usize, device: &Device) -> ProductPixels {
    ProductPixels {
        image: rgba_tensor(&placed.rgba, device),
        mask: Tensor::from_data(TensorData::new(placed.mask.clone(), [1, 1, h, w]), device),
    }
}

/// 1 for each f×f cell whose pixels are all kept (inpaint mask 0), else 0: the latent cells that
/// hold only the product.
pub(super) fn cells_inside(inpaint: &[f32], w: usize, h: usize, f: usize) -> Vec<f32> {
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
pub(super) fn downsample_nearest(mask: &[f32], w: usize, h: usize, f: usize) -> Vec<f32> {
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
pub(super) fn area_average(mask: &[f32], w: usize, h: usize, f: usize) -> Vec<f32> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
