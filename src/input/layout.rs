//! Placing the product on the output canvas.
//!
//! Placement is plain data (computed once, shown to the user, reused for the
//! diffusion conditioning and the paste-back) so the product lands at exactly the
//! same pixels in every stage. Scaling is uniform and, by default, never enlarges
//! the product, because upscaled product pixels look soft next to a sharp
//! generated background.

use std::fmt;

use image::imageops::FilterType;
use image::{Rgba32FImage, RgbaImage};

use crate::input::image_io::DecodedImage;
use crate::input::mask::{ProductMask, Rect};

/// Smallest accepted canvas side: smaller canvases cannot hold a recognisable product.
pub const MIN_CANVAS_SIDE: u32 = 8;
/// Largest accepted canvas side: bounds memory for the diffusion model and the browser.
pub const MAX_CANVAS_SIDE: u32 = 4096;

/// Where the product goes on the canvas.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    /// Canvas width in pixels.
    pub canvas_w: u32,
    /// Canvas height in pixels.
    pub canvas_h: u32,
    /// Product bounding box in the source image (what is cut out and placed).
    pub crop: Rect,
    /// Left of the placed rectangle on the canvas.
    pub x: i32,
    /// Top of the placed rectangle on the canvas.
    pub y: i32,
    /// Placed width (≈ crop.w × scale, rounded).
    pub w: u32,
    /// Placed height (≈ crop.h × scale, rounded).
    pub h: u32,
    /// Uniform scale from source to canvas; exactly 1.0 means a pixel-exact copy.
    pub scale: f32,
}

/// Where a product stands, as a fraction of the canvas height from the top: the floor line of the
/// default model's training scenes (`training/scenes.py`: products stand at `floor_y` ± 0.04, most
/// scenes at 0.72–0.8), and where the default fill's bottom edge already fell when centred. A small
/// product centred on the canvas floats above the surface the model paints; on this line it stands
/// on it.
pub const FLOOR_LINE: f64 = 0.8;

/// Layout request; defaults give a product standing on the floor line, with breathing room for the scene.
#[derive(Clone, Debug, PartialEq)]
pub struct LayoutOptions {
    /// Canvas width (8..=4096, default 512).
    pub canvas_w: u32,
    /// Canvas height (8..=4096, default 512).
    pub canvas_h: u32,
    /// Fraction of the canvas's shorter side the product's longer side should
    /// occupy (0 < fill ≤ 1, default 0.6: leaves room for the generated scene).
    pub fill: f32,
    /// Allow scale > 1 (default false: upscaling blurs the product; scale is capped at 1.0).
    pub allow_upscale: bool,
    /// Where the product sits across the canvas, as the share of the free width left of it:
    /// 0 flush left, 0.5 centred (default), 1 flush right. Off-centre leaves room for copy.
    pub position: f32,
}

impl Default for LayoutOptions {
    fn default() -> Self {
        Self { canvas_w: 512, canvas_h: 512, fill: 0.6, allow_upscale: false, position: 0.5 }
    }
}

/// Why a placement could not be computed; `Display` is user-facing.
#[derive(Clone, Debug, PartialEq)]
pub enum LayoutError {
    /// Canvas side outside [`MIN_CANVAS_SIDE`]..=[`MAX_CANVAS_SIDE`].
    CanvasSize {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
    },
    /// `fill` not in (0, 1] (or not finite).
    Fill(f32),
    /// `position` not in [0, 1] (or not finite).
    Position(f32),
    /// The mask has no product pixels to place.
    EmptyMask,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::CanvasSize { width, height } => write!(
                f,
                "The canvas size {width}×{height} is not supported; each side must be between {MIN_CANVAS_SIDE} and {MAX_CANVAS_SIDE} pixels."
            ),
            LayoutError::Fill(v) => write!(
                f,
                "The product size {v} is not valid; it must be a fraction greater than 0 and at most 1 of the canvas."
            ),
            LayoutError::Position(v) => write!(
                f,
                "The product position {v} is not valid; it must be from 0 (left) to 1 (right), 0.5 being the centre."
            ),
            LayoutError::EmptyMask => write!(f, "There is no product to place: the product mask is empty."),
        }
    }
}

impl std::error::Error for LayoutError {}

/// Coverage threshold for the crop: keeps faint soft-edge pixels, drops numerical dust.
const CROP_THRESHOLD: f32 = 0.01;

/// Compute a uniformly scaled placement of the mask's bounding box: standing on the
/// [`FLOOR_LINE`] (centred instead when it is too tall for the line to hold it), across the
/// canvas where `opts.position` says.
pub fn place_product(mask: &ProductMask, opts: &LayoutOptions) -> Result<Placement, LayoutError> {
    let (cw, ch) = (opts.canvas_w, opts.canvas_h);
    let ok = |s: u32| (MIN_CANVAS_SIDE..=MAX_CANVAS_SIDE).contains(&s);
    if !ok(cw) || !ok(ch) {
        return Err(LayoutError::CanvasSize { width: cw, height: ch });
    }
    if !(opts.fill.is_finite() && opts.fill > 0.0 && opts.fill <= 1.0) {
        return Err(LayoutError::Fill(opts.fill));
    }
    if !(opts.position.is_finite() && (0.0..=1.0).contains(&opts.position)) {
        return Err(LayoutError::Position(opts.position));
    }
    let crop = mask.bbox(CROP_THRESHOLD).ok_or(LayoutError::EmptyMask)?;
    let target = f64::from(opts.fill) * f64::from(cw.min(ch));
    let mut scale = target / f64::from(crop.w.max(crop.h));
    if !opts.allow_upscale {
        scale = scale.min(1.0);
    }
    // Both sides must fit (fill ≤ 1 already implies it; this guards rounding).
    scale = scale.min(f64::from(cw) / f64::from(crop.w)).min(f64::from(ch) / f64::from(crop.h));
    let (w, h) = if scale == 1.0 {
        (crop.w, crop.h)
    } else {
        (
            ((f64::from(crop.w) * scale).round() as u32).clamp(1, cw),
            ((f64::from(crop.h) * scale).round() as u32).clamp(1, ch),
        )
    };
    // floor((cw − w) · position): exactly the integer centring at 0.5.
    let x = (f64::from(cw - w) * f64::from(opts.position)).floor() as i32;
    // Bottom edge on the floor line, or lower when centring puts it lower (a product taller than
    // 2·FLOOR_LINE − 1 of the canvas), which keeps the default fill's tall products where they were.
    let centred = (ch - h) / 2;
    let standing = ((f64::from(ch) * FLOOR_LINE).round() as u32).saturating_sub(h);
    let y = centred.max(standing) as i32;
    Ok(Placement { canvas_w: cw, canvas_h: ch, crop, x, y, w, h, scale: scale as f32 })
}

impl Placement {
    /// The same layout on a canvas of half the size, the product scaled by half about the
    /// same relative centre: how a two-pass ad's first pass must hold the product so that its
    /// upscaled result agrees with the full-size placement it is refined at
    /// ([`crate::pipeline::generate_refined`]). Laying the half-size canvas out on its own would
    /// not: a small photo sits at scale 1 on both canvases, so at twice its share of the first.
    pub fn halved(&self) -> Placement {
        let (cw, ch) = (self.canvas_w / 2, self.canvas_h / 2);
        let scale = f64::from(self.scale) / 2.0;
        let w = ((f64::from(self.crop.w) * scale).round() as u32).clamp(1, cw);
        let h = ((f64::from(self.crop.h) * scale).round() as u32).clamp(1, ch);
        // Centre at half the full-size centre.
        let x = ((f64::from(self.x) + f64::from(self.w) / 2.0) / 2.0 - f64::from(w) / 2.0).round() as i32;
        let y = ((f64::from(self.y) + f64::from(self.h) / 2.0) / 2.0 - f64::from(h) / 2.0).round() as i32;
        Placement { canvas_w: cw, canvas_h: ch, crop: self.crop, x, y, w, h, scale: scale as f32 }
    }
}

/// The product on a transparent canvas plus its canvas-size mask: the inputs to
/// the diffusion conditioning and to [`crate::composite::composite`].
#[derive(Clone, Debug, PartialEq)]
pub struct PlacedProduct {
    /// Canvas-size image: product colour at the placement, alpha = round(mask·255), alpha 0 elsewhere.
    pub rgba: RgbaImage,
    /// Canvas-size row-major coverage, 1 = product.
    pub mask: Vec<f32>,
}

/// Render the product onto an empty canvas according to `p`.
///
/// At scale 1.0 the photo's pixels are copied exactly (no resampling). When scaled,
/// colour is resampled premultiplied by the mask (so the old background cannot
/// bleed into the edge) and the mask with the same Lanczos3 filter; for a photo
/// the colour comes from the photo and the alpha from the mask. Coverage within
/// 0.001 of 0 or 1 is snapped so the resampled interior is exactly 1.0.
pub fn render_placed(img: &DecodedImage, mask: &ProductMask, p: &Placement) -> PlacedProduct {
    let (cw, ch) = (p.canvas_w, p.canvas_h);
    let mut rgba = RgbaImage::new(cw, ch);
    let mut out_mask = vec![0.0f32; cw as usize * ch as usize];
    let c = p.crop;
    let mw = mask.width as usize;
    let exact = p.w == c.w && p.h == c.h;
    // Fill a canvas pixel (skipping those off-canvas).
    let mut put = |dx: u32, dy: u32, rgb: [u8; 3], m: f32| {
        let (x, y) = (p.x + dx as i32, p.y + dy as i32);
        if x < 0 || y < 0 || x >= cw as i32 || y >= ch as i32 {
            return;
        }
        let (x, y) = (x as u32, y as u32);
        out_mask[y as usize * cw as usize + x as usize] = m;
        let a = (m * 255.0).round() as u8;
        rgba.put_pixel(x, y, image::Rgba(if a == 0 { [0, 0, 0, 0] } else { [rgb[0], rgb[1], rgb[2], a] }));
    };
    if exact {
        for dy in 0..c.h {
            for dx in 0..c.w {
                let (sx, sy) = (c.x + dx, c.y + dy);
                let s = img.rgba.get_pixel(sx, sy).0;
                let m = mask.alpha[sy as usize * mw + sx as usize];
                put(dx, dy, [s[0], s[1], s[2]], m);
            }
        }
    } else {
        let mut pre = Rgba32FImage::new(c.w, c.h);
        for (dx, dy, d) in pre.enumerate_pixels_mut() {
            let (sx, sy) = (c.x + dx, c.y + dy);
            let s = img.rgba.get_pixel(sx, sy).0;
            let m = mask.alpha[sy as usize * mw + sx as usize];
            d.0 = [f32::from(s[0]) / 255.0 * m, f32::from(s[1]) / 255.0 * m, f32::from(s[2]) / 255.0 * m, m];
        }
        let res = image::imageops::resize(&pre, p.w, p.h, FilterType::Lanczos3);
        for (dx, dy, s) in res.enumerate_pixels() {
            let mut m = s.0[3].clamp(0.0, 1.0);
            if m >= 0.999 {
                m = 1.0;
            } else if m <= 0.001 {
                m = 0.0;
            }
            let a = s.0[3].max(1e-6);
            let col = |v: f32| ((v / a).clamp(0.0, 1.0) * 255.0).round() as u8;
            put(dx, dy, [col(s.0[0]), col(s.0[1]), col(s.0[2])], m);
        }
    }
    PlacedProduct { rgba, mask: out_mask }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::image_io::{DecodeLimits, decode_image};
    use crate::input::mask::{MaskOptions, MaskSource, product_mask};

    fn load(bytes: &[u8]) -> (DecodedImage, ProductMask) {
        let img = decode_image(bytes, &DecodeLimits::default()).unwrap();
        let m = product_mask(&img, &MaskOptions::default()).unwrap();
        (img, m)
    }

    fn opts(cw: u32, ch: u32, fill: f32) -> LayoutOptions {
        LayoutOptions { canvas_w: cw, canvas_h: ch, fill, ..Default::default() }
    }

    #[test]
    fn position_moves_the_product_across_and_is_checked() {
        let (_, m) = load(include_bytes!("../../tests/fixtures/product_alpha_32.png"));
        let at = |position: f32| place_product(&m, &LayoutOptions { position, ..opts(96, 64, 0.6) });
        assert_eq!(at(0.5).unwrap().x, 32, "centred, as before");
        assert_eq!((at(0.0).unwrap().x, at(1.0).unwrap().x, at(0.25).unwrap().x), (0, 64, 16));
        assert_eq!(at(0.25).unwrap().y, 51 - 32, "standing on the floor line (0.8 · 64) whatever the position");
        for bad in [-0.1, 1.5, f32::NAN] {
            let e = at(bad).unwrap_err();
            assert!(matches!(e, LayoutError::Position(_)), "{e:?}");
            assert!(e.to_string().contains("from 0 (left) to 1 (right)"), "{e}");
        }
    }

    /// A two-pass ad's first pass holds the product as the full-size layout does, at half the
    /// scale: the same share of the canvas, about the same relative centre. Laid out on its own,
    /// the 32-px product would sit at scale 1 on the half canvas too (twice its share).
    #[test]
    fn halved_placement_keeps_the_full_layouts_share_and_centre() {
        let (_, m) = load(include_bytes!("../../tests/fixtures/product_alpha_32.png"));
        let full = place_product(&m, &opts(512, 384, 0.6)).unwrap();
        assert_eq!((full.x, full.y, full.w, full.h, full.scale), (240, 307 - 32, 32, 32, 1.0));
        let half = full.halved();
        assert_eq!((half.canvas_w, half.canvas_h, half.crop), (256, 192, full.crop));
        assert_eq!((half.x, half.y, half.w, half.h, half.scale), (120, 138, 16, 16, 0.5), "on the half floor line too");
        let alone = place_product(&m, &opts(256, 192, 0.6)).unwrap();
        assert_eq!((alone.w, alone.scale), (32, 1.0), "what the first pass used to do");
        // Odd sizes: the centre moves by at most half a pixel of the half canvas.
        let odd = Placement {
            canvas_w: 100,
            canvas_h: 60,
            crop: Rect { x: 0, y: 0, w: 33, h: 21 },
            x: 7,
            y: 20,
            w: 33,
            h: 21,
            scale: 1.0,
        };
        let h = odd.halved();
        assert_eq!((h.w, h.h), (17, 11));
        let centre = |p: &Placement| (f64::from(p.x) + f64::from(p.w) / 2.0, f64::from(p.y) + f64::from(p.h) / 2.0);
        let (fc, hc) = (centre(&odd), centre(&h));
        assert!((hc.0 - fc.0 / 2.0).abs() <= 0.5 && (hc.1 - fc.1 / 2.0).abs() <= 0.5, "{fc:?} → {hc:?}");
    }

    #[test]
    fn alpha32_stands_one_to_one_on_the_floor_line() {
        let (img, m) = load(include_bytes!("../../tests/fixtures/product_alpha_32.png"));
        let p = place_product(&m, &opts(64, 64, 0.6)).unwrap();
        assert_eq!(p.crop, Rect { x: 0, y: 0, w: 32, h: 32 });
        // Centred across; its bottom edge on row round(0.8 · 64) = 51, not 48 as centring would put it.
        assert_eq!((p.x, p.y, p.w, p.h, p.scale), (16, 19, 32, 32, 1.0));
        let placed = render_placed(&img, &m, &p);
        assert_eq!(placed.rgba.dimensions(), (64, 64));
        for y in 0..64u32 {
            for x in 0..64u32 {
                let inside = (16..48).contains(&x) && (19..51).contains(&y);
                let mv = placed.mask[(y * 64 + x) as usize];
                let q = placed.rgba.get_pixel(x, y).0;
                if inside {
                    let s = img.rgba.get_pixel(x - 16, y - 19).0;
                    assert_eq!(mv, f32::from(s[3]) / 255.0);
                    if s[3] > 0 {
                        assert_eq!(q, s, "exact copy at ({x},{y})");
                    } else {
                        assert_eq!(q[3], 0);
                    }
                } else {
                    assert_eq!(mv, 0.0);
                    assert_eq!(q[3], 0);
                }
            }
        }
    }

    /// Small products stand on the floor line; one too tall for it (bottom below the line when
    /// centred) stays centred, so the line never pushes a product up and out of the canvas.
    #[test]
    fn products_stand_on_the_floor_line_unless_taller_than_it_allows() {
        let (_, m) = load(include_bytes!("../../tests/fixtures/product_alpha_32.png"));
        let small = place_product(&m, &opts(256, 256, 0.6)).unwrap();
        assert_eq!((small.y, small.h), (205 - 32, 32), "bottom edge on row round(0.8 · 256)");
        let tall = place_product(&m, &LayoutOptions { allow_upscale: true, ..opts(64, 64, 0.9) }).unwrap();
        assert_eq!((tall.y, tall.h), (3, 58), "centred: 58 > 0.6 · 64");
        let at_line = place_product(&m, &LayoutOptions { allow_upscale: true, ..opts(80, 80, 0.6) }).unwrap();
        assert_eq!((at_line.y, at_line.h), (16, 48), "0.6 of the canvas: both rules agree");
    }

    #[test]
    fn upscale_only_when_allowed() {
        let (_, m) = load(include_bytes!("../../tests/fixtures/product_alpha_32.png"));
        let o = LayoutOptions { allow_upscale: true, ..opts(64, 64, 0.75) };
        let p = place_product(&m, &o).unwrap();
        assert_eq!((p.w, p.h, p.x, p.y), (48, 48, 8, 8));
        assert!((p.scale - 1.5).abs() < 1e-6);
    }

    #[test]
    fn downscale_keeps_the_aspect_on_the_floor_line() {
        let (img, m) = load(include_bytes!("../../tests/fixtures/product_alpha_128.png"));
        // bbox 80×112 (fixture), canvas 100×60: target = 0.5·60 = 30 → scale 30/112.
        let p = place_product(&m, &opts(100, 60, 0.5)).unwrap();
        assert_eq!(p.crop, Rect { x: 24, y: 8, w: 80, h: 112 });
        assert_eq!(p.h, 30);
        assert_eq!(p.w, (80.0f64 * 30.0 / 112.0).round() as u32); // 21
        let ratio_err = (f64::from(p.w) - f64::from(p.h) * 80.0 / 112.0).abs();
        assert!(ratio_err < 1.0);
        assert_eq!((p.x, p.y), (((100 - p.w) / 2) as i32, 48 - 30), "on the floor line, row 0.8 · 60");
        let placed = render_placed(&img, &m, &p);
        let at = |x: u32, y: u32| placed.mask[(y * 100 + x) as usize];
        // Centre of the placed product is solid; outside the placed rect is empty.
        let (cx, cy) = (p.x as u32 + p.w / 2, p.y as u32 + p.h / 2);
        assert_eq!(at(cx, cy), 1.0);
        assert_eq!(placed.rgba.get_pixel(cx, cy).0[3], 255);
        for y in 0..60 {
            for x in 0..100 {
                let inside = x >= p.x as u32 && x < p.x as u32 + p.w && y >= p.y as u32 && y < p.y as u32 + p.h;
                if !inside {
                    assert_eq!(at(x, y), 0.0);
                }
                let mv = at(x, y);
                assert!((0.0..=1.0).contains(&mv));
            }
        }
        // Premultiplied resampling: edge pixels keep the product's red, never darken
        // toward the black stored under alpha 0.
        for (q, &mv) in placed.rgba.pixels().zip(&placed.mask) {
            if mv > 0.05 {
                let s = u32::from(q.0[0]) + u32::from(q.0[1]) + u32::from(q.0[2]);
                assert!(q.0[0] >= 25 && s > 150, "{q:?} at mask {mv}");
            }
        }
    }

    #[test]
    fn jpeg_on_white_takes_alpha_from_mask() {
        let (img, m) = load(include_bytes!("../../tests/fixtures/product_white.jpg"));
        assert!(matches!(m.source, MaskSource::Background { .. }));
        let p = place_product(&m, &opts(256, 256, 0.6)).unwrap();
        assert_eq!(p.scale, 1.0);
        let placed = render_placed(&img, &m, &p);
        let c = p.crop;
        for dy in 0..c.h {
            for dx in 0..c.w {
                let mv = m.alpha[((c.y + dy) * m.width + c.x + dx) as usize];
                let (x, y) = (p.x as u32 + dx, p.y as u32 + dy);
                assert_eq!(placed.mask[(y * 256 + x) as usize], mv);
                let q = placed.rgba.get_pixel(x, y).0;
                assert_eq!(q[3], (mv * 255.0).round() as u8);
                if mv == 1.0 {
                    let s = img.rgba.get_pixel(c.x + dx, c.y + dy).0;
                    assert_eq!(&q[..3], &s[..3]);
                }
            }
        }
    }

    #[test]
    fn validates_canvas_and_fill() {
        let (_, m) = load(include_bytes!("../../tests/fixtures/product_alpha_32.png"));
        for (w, h) in [(4, 64), (64, 7), (5000, 64), (64, 4097), (0, 0)] {
            let e = place_product(&m, &opts(w, h, 0.6)).unwrap_err();
            assert_eq!(e, LayoutError::CanvasSize { width: w, height: h });
            assert!(e.to_string().contains("between 8 and 4096"));
        }
        for f in [0.0, -0.1, 1.5, f32::NAN] {
            assert!(matches!(place_product(&m, &opts(64, 64, f)), Err(LayoutError::Fill(_))));
        }
        assert!(place_product(&m, &opts(8, 4096, 1.0)).is_ok());
        let empty = ProductMask { width: 4, height: 4, alpha: vec![0.0; 16], source: MaskSource::Alpha };
        assert_eq!(place_product(&empty, &opts(64, 64, 0.6)).unwrap_err(), LayoutError::EmptyMask);
    }
}
