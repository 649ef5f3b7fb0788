//! The product: its photo decoded and masked once per upload, and where it goes on an ad.

use super::error::PipelineError;
use super::options::GenerateOptions;
use crate::encoders::segmenter::Segmenter;
use crate::input::image_io::{DecodeLimits, DecodedImage, decode_image};
use crate::input::layout::{LayoutOptions, Placement, place_product};
use crate::input::mask::{
    MaskError, MaskOptions, ProductMask, decontaminate_edges, given_mask, network_mask, product_mask,
};
use crate::pack::ProductShare;

/// A decoded product photo and its mask: computed once per upload, shown to the user,
/// reused for every generation.
#[derive(Debug, Clone)]
pub struct Product {
    pub image: DecodedImage,
    pub mask: ProductMask,
}

impl Product {
    /// The cut-out as it will be pasted: the photo's colours (the soft edge decontaminated) with
    /// the mask as alpha, for the user to check over a checkerboard before generating.
    pub fn cutout(&self) -> image::RgbaImage {
        let mut out = self.image.rgba.clone();
        for (p, &a) in out.pixels_mut().zip(&self.mask.alpha) {
            p.0[3] = (a.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
        out
    }
}

/// Decodes a product photo and finds its mask (alpha channel, or automatic on a plain
/// background, whose soft edge then takes the product's colours instead of the backdrop's).
pub fn prepare_product(bytes: &[u8]) -> Result<Product, PipelineError> {
    let mut image = decode_image(bytes, &DecodeLimits::default())?;
    let mask = product_mask(&image, &MaskOptions::default())?;
    decontaminate_edges(&mut image.rgba, &mask);
    Ok(Product { image, mask })
}

/// [`prepare_product`], and where the photo's background is not plain (which it refuses), the
/// cut-out network's mask when the model has the network: one pass of it at its own size, on the
/// CPU. Without a network, or where it is unsure, the refusal says to paint the product.
pub async fn prepare_product_segmented(bytes: &[u8], segmenter: Option<&Segmenter>) -> Result<Product, PipelineError> {
    let mut image = decode_image(bytes, &DecodeLimits::default())?;
    let opts = MaskOptions::default();
    let mask = match (product_mask(&image, &opts), segmenter) {
        (Err(MaskError::BusyBackground { .. }), Some(segmenter)) => {
            let probability = segmenter.probability(&image.rgba).await.map_err(PipelineError::Gpu)?;
            network_mask(&image, &probability, &opts)?
        }
        (mask, _) => mask?,
    };
    decontaminate_edges(&mut image.rgba, &mask);
    Ok(Product { image, mask })
}

/// Decodes a product photo with the mask the user gave for it (white or opaque = product, at the
/// photo's size): for photos the automatic mask cannot separate, or gets wrong. Its soft edge takes
/// the product's colours as an automatic mask's does.
pub fn prepare_product_with_mask(bytes: &[u8], mask_bytes: &[u8]) -> Result<Product, PipelineError> {
    let mut image = decode_image(bytes, &DecodeLimits::default())?;
    let mask_image = decode_image(mask_bytes, &DecodeLimits::default())?;
    let mask = given_mask(&image, &mask_image)?;
    decontaminate_edges(&mut image.rgba, &mask);
    Ok(Product { image, mask })
}

/// Where the product goes: `options.placement` when given (checked against the canvas), else
/// laid out by [`place_product`] (standing on the floor line, across where `options.position`
/// says, scaled by `options.fill`, never above the photo's own size).
pub(super) fn placement_for(product: &Product, options: &GenerateOptions) -> Result<Placement, PipelineError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::mask::Rect;

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
}
