//! Paste-back: put the product's own pixels over the generated background.
//!
//! The diffusion model may repaint the product region slightly; advertising needs
//! the real product (label text, colours, logo) untouched, so the final image takes
//! every solid product pixel bit-for-bit from the placed product and blends only
//! in the soft edge.

use std::fmt;

use image::RgbaImage;

use crate::input::layout::PlacedProduct;

/// Why compositing failed (always a caller bug, reported instead of panicking).
#[derive(Clone, Debug, PartialEq)]
pub enum CompositeError {
    /// Background, placed image and mask do not all have the same canvas size.
    SizeMismatch {
        /// Background size.
        background: (u32, u32),
        /// Placed product image size.
        product: (u32, u32),
        /// Placed mask length in pixels.
        mask_len: usize,
    },
}

impl fmt::Display for CompositeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompositeError::SizeMismatch { background, product, mask_len } => write!(
                f,
                "The generated background is {}×{} pixels but the placed product is {}×{} (mask of {} pixels); they must match to be combined.",
                background.0, background.1, product.0, product.1, mask_len
            ),
        }
    }
}

impl std::error::Error for CompositeError {}

/// Blend the placed product over `background`: out = m·product + (1−m)·background
/// per channel, opaque. Where m == 1.0 the RGB is copied bit-identically from the
/// product, where m == 0.0 from the background; only 0 < m < 1 (the soft edge) is
/// blended. The background's own alpha is ignored (the result is always opaque).
pub fn composite(background: &RgbaImage, placed: &PlacedProduct) -> Result<RgbaImage, CompositeError> {
    let (w, h) = background.dimensions();
    if placed.rgba.dimensions() != (w, h) || placed.mask.len() != w as usize * h as usize {
        return Err(CompositeError::SizeMismatch {
            background: (w, h),
            product: placed.rgba.dimensions(),
            mask_len: placed.mask.len(),
        });
    }
    let mut out = RgbaImage::new(w, h);
    for (((o, b), p), &m) in out.pixels_mut().zip(background.pixels()).zip(placed.rgba.pixels()).zip(&placed.mask) {
        let (b, p) = (b.0, p.0);
        o.0 = if m >= 1.0 {
            [p[0], p[1], p[2], 255]
        } else if m > 0.0 {
            let mix = |pc: u8, bc: u8| (m * f32::from(pc) + (1.0 - m) * f32::from(bc)).round().clamp(0.0, 255.0) as u8;
            [mix(p[0], b[0]), mix(p[1], b[1]), mix(p[2], b[2]), 255]
        } else {
            // m == 0, negative or NaN: background.
            [b[0], b[1], b[2], 255]
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::image_io::{DecodeLimits, decode_image};
    use crate::input::layout::{LayoutOptions, place_product, render_placed};
    use crate::input::mask::{MaskOptions, product_mask};

    fn placed_from(bytes: &[u8], cw: u32, ch: u32) -> PlacedProduct {
        let img = decode_image(bytes, &DecodeLimits::default()).unwrap();
        let m = product_mask(&img, &MaskOptions::default()).unwrap();
        let p = place_product(&m, &LayoutOptions { canvas_w: cw, canvas_h: ch, ..Default::default() }).unwrap();
        render_placed(&img, &m, &p)
    }

    fn noise_bg(w: u32, h: u32) -> RgbaImage {
        RgbaImage::from_fn(w, h, |x, y| {
            let v = x.wrapping_mul(2_654_435_761).wrapping_add(y.wrapping_mul(40_503)) >> 7;
            image::Rgba([v as u8, (v >> 8) as u8, (v >> 16) as u8, 255])
        })
    }

    fn check(bg: &RgbaImage, placed: &PlacedProduct) {
        let out = composite(bg, placed).unwrap();
        let mut solid = 0;
        for (i, ((o, b), p)) in out.pixels().zip(bg.pixels()).zip(placed.rgba.pixels()).enumerate() {
            let m = placed.mask[i];
            assert_eq!(o.0[3], 255);
            if m == 1.0 {
                solid += 1;
                assert_eq!(o.0, [p.0[0], p.0[1], p.0[2], 255]);
            } else if m == 0.0 {
                assert_eq!(o.0, b.0);
            } else {
                for c in 0..3 {
                    let want = m * f32::from(p.0[c]) + (1.0 - m) * f32::from(b.0[c]);
                    assert!((f32::from(o.0[c]) - want).abs() <= 0.5 + 1e-3);
                }
            }
        }
        assert!(solid > 100);
    }

    #[test]
    fn solid_pixels_bit_identical_and_background_elsewhere() {
        check(&noise_bg(96, 80), &placed_from(include_bytes!("../tests/fixtures/product_alpha_128.png"), 96, 80));
        check(&noise_bg(200, 200), &placed_from(include_bytes!("../tests/fixtures/product_white.jpg"), 200, 200));
        check(&noise_bg(64, 64), &placed_from(include_bytes!("../tests/fixtures/product_alpha_32.png"), 64, 64));
    }

    #[test]
    fn transparent_background_becomes_opaque() {
        let placed = placed_from(include_bytes!("../tests/fixtures/product_alpha_32.png"), 64, 64);
        let bg = RgbaImage::from_pixel(64, 64, image::Rgba([10, 20, 30, 0]));
        let out = composite(&bg, &placed).unwrap();
        assert!(out.pixels().all(|p| p.0[3] == 255));
        assert_eq!(out.get_pixel(0, 0).0, [10, 20, 30, 255]);
    }

    #[test]
    fn size_mismatch_is_an_error() {
        let placed = placed_from(include_bytes!("../tests/fixtures/product_alpha_32.png"), 64, 64);
        let e = composite(&noise_bg(64, 63), &placed).unwrap_err();
        assert!(matches!(e, CompositeError::SizeMismatch { background: (64, 63), .. }));
        let mut bad = placed.clone();
        bad.mask.pop();
        assert!(composite(&noise_bg(64, 64), &bad).is_err());
    }
}
