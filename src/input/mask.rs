//! The product mask: which pixels of the photo are the product.
//!
//! The product's pixels are pasted back unchanged after the diffusion model paints
//! a new background, so the mask decides what is preserved. A cut-out PNG gives it
//! directly; a photo on a plain background gets an automatic mask by region growing
//! from the border; a busy one, the cut-out network's ([`network_mask`], when the pack has one),
//! unless the network is unsure: a wrong mask would silently cut the product apart, so then the
//! user is asked to paint it.

use std::collections::VecDeque;
use std::fmt;

use image::{GrayImage, Luma, RgbaImage};
use imageproc::distance_transform::{Norm, euclidean_squared_distance_transform};
use imageproc::morphology;
use imageproc::region_labelling::{Connectivity, connected_components};

use crate::input::image_io::DecodedImage;

/// An axis-aligned pixel rectangle (top-left `x`,`y`, size `w`×`h`), the one
/// rectangle type shared by masks and layout: a mask's bounding box is
/// the crop that layout places.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rect {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width in pixels.
    pub w: u32,
    /// Height in pixels.
    pub h: u32,
}

/// Where a mask came from, so the UI can tell the user what was assumed.
#[derive(Clone, Debug, PartialEq)]
pub enum MaskSource {
    /// The photo's own alpha channel (a cut-out).
    Alpha,
    /// A mask the user gave with the photo (`--mask FILE`, the page's brush).
    Given,
    /// Automatic: everything connected to the border within `tolerance` of `color` is background.
    Background {
        /// Estimated background colour (per-channel median of the border ring).
        color: [u8; 3],
        /// Colour-distance tolerance used (see [`MaskOptions::tolerance`]).
        tolerance: f32,
    },
    /// The cut-out network ([`crate::encoders::segmenter`]), for a photo whose border is not plain.
    Network {
        /// How sure it was: the mean of |2p − 1| over the photo (1: every pixel certain).
        confidence: f32,
    },
}

/// A soft product mask at the decoded image's size.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductMask {
    /// Width in pixels (equals the decoded image's width).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major coverage: 1.0 = product, 0.0 = background, soft edge in between.
    pub alpha: Vec<f32>,
    /// How the mask was obtained.
    pub source: MaskSource,
}

/// Tuning for the automatic (background) mask; the defaults suit a product shot
/// on a plain white or light studio background.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskOptions {
    /// Colour distance (0..1, see [`color_distance`]) below which a pixel joins the
    /// background. Default 0.08 ≈ 20 levels on every channel: absorbs JPEG noise,
    /// paper texture and a gentle vignette while keeping light-grey product edges.
    pub tolerance: f32,
    /// Largest accepted border spread (90th percentile of border pixels' distance
    /// to the background colour). Default 0.10: above this the border is not a
    /// plain background and the photo is refused as busy.
    pub max_border_spread: f32,
    /// Radius (px, square element) of the morphological open/close clean-up.
    /// Default 1: removes single-pixel noise and closes 1-2 px cracks without
    /// eating thin product details.
    pub morph_radius: u32,
    /// Product components smaller than this fraction of the image are dropped as
    /// specks (dust, noise); the largest component is always kept. Default 0.001.
    pub min_area_fraction: f32,
    /// Width of the soft edge in pixels (default 1.5: anti-aliases the paste-back
    /// seam without a visible halo). Pixels deeper than about `feather_px/2 + 0.5`
    /// inside the product stay exactly 1.0. 0 gives a hard mask.
    pub feather_px: f32,
}

impl Default for MaskOptions {
    fn default() -> Self {
        Self { tolerance: 0.08, max_border_spread: 0.10, morph_radius: 1, min_area_fraction: 0.001, feather_px: 1.5 }
    }
}

/// Why no usable mask was found; `Display` tells the user what to do instead.
#[derive(Clone, Debug, PartialEq)]
pub enum MaskError {
    /// Nothing was recognised as product.
    Empty,
    /// The image has transparency and every pixel is fully transparent: it shows nothing.
    Transparent,
    /// ≥ 99.5 % of the photo is product: there is no background to replace.
    FullFrame,
    /// The photo's border is not a near-uniform colour, so the automatic mask would be a guess.
    BusyBackground {
        /// Measured border spread (same units as [`MaskOptions::max_border_spread`]).
        spread: f32,
    },
    /// The cut-out network could not tell the product from a busy background with confidence.
    Unsure {
        /// Its mean |2p − 1| over the photo, below [`MIN_NETWORK_CONFIDENCE`].
        confidence: f32,
    },
    /// A given mask is not the photo's size.
    SizeMismatch {
        /// The photo's size (after EXIF rotation).
        photo: (u32, u32),
        /// The mask's size.
        mask: (u32, u32),
    },
}

impl fmt::Display for MaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaskError::Empty => write!(
                f,
                "No product found: the mask is empty. Use a PNG cut-out with transparency, or a photo with the product clearly visible on a plain light background."
            ),
            MaskError::Transparent => write!(
                f,
                "The image is fully transparent: there is nothing in it to use as the product. Choose the photo itself, or a cut-out in which the product is visible."
            ),
            MaskError::FullFrame => write!(
                f,
                "The product fills the whole photo; there is no background to replace. Use a photo with some plain background around the product, or a PNG cut-out with transparency."
            ),
            MaskError::BusyBackground { spread } => write!(
                f,
                "The background of this photo is not plain enough to separate the product automatically (border variation {spread:.2}). Use a PNG cut-out with transparency or a photo on a plain light background."
            ),
            MaskError::Unsure { confidence } => write!(
                f,
                "The background of this photo is busy and the cut-out network is not sure where the product ends (confidence {confidence:.2}). Paint the product with the brush (or give a mask with --mask), or use a photo on a plainer background."
            ),
            MaskError::SizeMismatch { photo, mask } => write!(
                f,
                "The mask is {}×{} pixels but the photo is {}×{}; draw the mask on the photo itself (white or opaque = product) and save it at the photo's size.",
                mask.0, mask.1, photo.0, photo.1
            ),
        }
    }
}

impl std::error::Error for MaskError {}

/// Perceptual-ish colour distance in 0..1: the "redmean" weighted RGB distance
/// (cheap, no colour-space conversion, tracks human judgement far better than
/// plain Euclidean RGB), divided by its maximum 765.
pub fn color_distance(a: [u8; 3], b: [u8; 3]) -> f32 {
    let rmean = (f32::from(a[0]) + f32::from(b[0])) * 0.5;
    let dr = f32::from(a[0]) - f32::from(b[0]);
    let dg = f32::from(a[1]) - f32::from(b[1]);
    let db = f32::from(a[2]) - f32::from(b[2]);
    let d2 = (2.0 + rmean / 256.0) * dr * dr + 4.0 * dg * dg + (2.0 + (255.0 - rmean) / 256.0) * db * db;
    d2.sqrt() / 765.0
}

/// Find the product in a decoded photo: its alpha channel when it has one,
/// otherwise an automatic mask against a plain border-coloured background.
pub fn product_mask(img: &DecodedImage, opts: &MaskOptions) -> Result<ProductMask, MaskError> {
    let (w, h) = img.rgba.dimensions();
    let n = (w as usize) * (h as usize);
    if n == 0 {
        return Err(MaskError::Empty);
    }
    let mask = if img.has_alpha {
        if img.rgba.pixels().all(|p| p.0[3] == 0) {
            return Err(MaskError::Transparent);
        }
        ProductMask { width: w, height: h, alpha: coverage(img), source: MaskSource::Alpha }
    } else {
        auto_mask(&img.rgba, opts)?
    };
    usable(mask)
}

/// The product as the user marked it: a mask image at the photo's size, its alpha channel when it
/// has one (a cut-out saved as the mask), else its brightness (white = product, black = backdrop,
/// grey = partly). The same images [`Reference`](crate::encoders::reference) masks are read from.
pub fn given_mask(photo: &DecodedImage, mask: &DecodedImage) -> Result<ProductMask, MaskError> {
    let (w, h) = photo.rgba.dimensions();
    if mask.rgba.dimensions() != (w, h) {
        return Err(MaskError::SizeMismatch { photo: (w, h), mask: mask.rgba.dimensions() });
    }
    usable(ProductMask { width: w, height: h, alpha: coverage(mask), source: MaskSource::Given })
}

/// Coverage from a mask image: alpha when it has an alpha channel, else mean brightness.
pub fn coverage(mask: &DecodedImage) -> Vec<f32> {
    mask.rgba
        .pixels()
        .map(|p| {
            if mask.has_alpha {
                f32::from(p.0[3]) / 255.0
            } else {
                (f32::from(p.0[0]) + f32::from(p.0[1]) + f32::from(p.0[2])) / (3.0 * 255.0)
            }
        })
        .collect()
}

/// Below this mean confidence (|2p − 1| over the photo) the cut-out network's mask is not used:
/// the user is asked to paint the product instead (docs/EVAL.md, "The cut-out network").
pub const MIN_NETWORK_CONFIDENCE: f32 = 0.80;

/// The product from the cut-out network's per-pixel probabilities (`probability`, row-major at the
/// photo's size): kept where p ≥ ½, specks dropped, the edge matted from the photo's own colours
/// as the border-grown mask's is, so no fringe of the old background is pasted with it.
pub fn network_mask(img: &DecodedImage, probability: &[f32], opts: &MaskOptions) -> Result<ProductMask, MaskError> {
    let (w, h) = img.rgba.dimensions();
    let (wu, hu) = (w as usize, h as usize);
    assert_eq!(probability.len(), wu * hu, "one probability a pixel");
    let confidence = probability.iter().map(|p| (2.0 * p - 1.0).abs()).sum::<f32>() / probability.len().max(1) as f32;
    if confidence < MIN_NETWORK_CONFIDENCE {
        return Err(MaskError::Unsure { confidence });
    }
    let mut prod: Vec<bool> = probability.iter().map(|&p| p >= 0.5).collect();
    remove_specks(&mut prod, wu, hu, opts.min_area_fraction);
    let alpha = matte(&img.rgba, &prod, opts.feather_px);
    usable(ProductMask { width: w, height: h, alpha, source: MaskSource::Network { confidence } })
}

/// Refuses a mask with nothing to keep or nothing to replace.
fn usable(mask: ProductMask) -> Result<ProductMask, MaskError> {
    let solid = mask.alpha.iter().filter(|&&a| a >= 0.5).count();
    if solid == 0 {
        return Err(MaskError::Empty);
    }
    if solid as f64 >= 0.995 * mask.alpha.len() as f64 {
        return Err(MaskError::FullFrame);
    }
    Ok(mask)
}

fn px(img: &RgbaImage, x: u32, y: u32) -> [u8; 3] {
    let p = img.get_pixel(x, y).0;
    [p[0], p[1], p[2]]
}

fn auto_mask(img: &RgbaImage, opts: &MaskOptions) -> Result<ProductMask, MaskError> {
    let (w, h) = img.dimensions();
    let (wu, hu) = (w as usize, h as usize);
    // Border ring: ~2% of the shorter side, at least 1 px.
    let ring = (w.min(h) / 50).max(1);
    let in_ring = |x: u32, y: u32| x < ring || y < ring || x >= w.saturating_sub(ring) || y >= h.saturating_sub(ring);
    let mut border: Vec<[u8; 3]> = Vec::new();
    for y in 0..h {
        for x in 0..w {
            if in_ring(x, y) {
                border.push(px(img, x, y));
            }
        }
    }
    let mut color = [0u8; 3];
    for (c, slot) in color.iter_mut().enumerate() {
        let mut v: Vec<u8> = border.iter().map(|p| p[c]).collect();
        v.sort_unstable();
        *slot = v[v.len() / 2];
    }
    let mut dists: Vec<f32> = border.iter().map(|&p| color_distance(p, color)).collect();
    dists.sort_by(f32::total_cmp);
    // 90th percentile: a product touching up to ~10% of the border is tolerated.
    let spread = dists[((dists.len() - 1) as f32 * 0.9).round() as usize];
    if spread > opts.max_border_spread {
        return Err(MaskError::BusyBackground { spread });
    }

    let mut prod: Vec<bool> = grow_backdrop(img, color, opts).iter().map(|&b| !b).collect();

    // Clean-up: open removes specks and hairline bridges, close seals small cracks.
    let r = opts.morph_radius as usize;
    if r > 0 {
        prod = dilate(&erode(&prod, wu, hu, r), wu, hu, r);
        prod = erode(&dilate(&prod, wu, hu, r), wu, hu, r);
    }
    fill_holes(&mut prod, wu, hu);
    open_backdrop_holes(img, &mut prod, color, opts);
    remove_specks(&mut prod, wu, hu, opts.min_area_fraction);

    let alpha = matte(img, &prod, opts.feather_px);
    Ok(ProductMask { width: w, height: h, alpha, source: MaskSource::Background { color, tolerance: opts.tolerance } })
}

/// The backdrop: every pixel connected to the photo's border (4-connected) through pixels within
/// `tolerance` of its colour, and then through its soft shadows — pixels of the backdrop's own
/// hue, darker by up to half, reached in steps of at most [`SHADOW_STEP`] levels (a cast shadow
/// darkens smoothly; a product's edge is a step) and only in the lower half of the product's
/// height, where a studio shadow falls. Without the second pass the shadow under a product on a
/// white sweep is cut out with it and pasted onto the new scene as a grey smudge.
fn grow_backdrop(img: &RgbaImage, color: [u8; 3], opts: &MaskOptions) -> Vec<bool> {
    let (w, h) = img.dimensions();
    let wu = w as usize;
    let outline = outlines(img);
    let close = |x: u32, y: u32| {
        !outline[y as usize * wu + x as usize] && color_distance(px(img, x, y), color) <= opts.tolerance
    };
    let mut bg = vec![false; wu * h as usize];
    let mut queue = VecDeque::new();
    for y in 0..h {
        for x in 0..w {
            let border = x == 0 || y == 0 || x + 1 == w || y + 1 == h;
            if border && close(x, y) {
                bg[y as usize * wu + x as usize] = true;
                queue.push_back((x, y));
            }
        }
    }
    flood(&mut bg, &mut queue, w, h, |_, (x, y)| close(x, y));
    // The outline's own pixels of the backdrop's colour (its blur reaches a pixel or two beyond
    // the edge): taken from the backdrop's side only, so the flood never crosses into what the
    // outline encloses.
    let mut queue: VecDeque<(u32, u32)> =
        (0..bg.len()).filter(|&i| bg[i]).map(|i| ((i % wu) as u32, (i / wu) as u32)).collect();
    flood(&mut bg, &mut queue, w, h, |_, (x, y)| {
        outline[y as usize * wu + x as usize] && color_distance(px(img, x, y), color) <= opts.tolerance
    });

    // Shadows: only below the middle of what the first pass left as product.
    let rows: Vec<usize> = (0..bg.len()).filter(|&i| !bg[i]).map(|i| i / wu).collect();
    let (Some(&top), Some(&bottom)) = (rows.iter().min(), rows.iter().max()) else {
        return bg;
    };
    let shadow_top = ((top + bottom) / 2) as u32;
    let shade = |x: u32, y: u32| y >= shadow_top && is_shadow_of(px(img, x, y), color);
    let mut queue: VecDeque<(u32, u32)> =
        (0..bg.len()).filter(|&i| bg[i]).map(|i| ((i % wu) as u32, (i / wu) as u32)).collect();
    flood(&mut bg, &mut queue, w, h, |(fx, fy), (x, y)| {
        close(x, y) || (shade(x, y) && max_channel_step(px(img, fx, fy), px(img, x, y)) <= SHADOW_STEP)
    });
    bg
}

/// Where the photo has an edge no backdrop has: the gradient (Sobel on the photo smoothed by a
/// 3×3 binomial, |gx| + |gy|, the largest over the three channels) above three times what 99 % of
/// the border's pixels reach, and at least the gradient of a 4-level step. A white product on a
/// white sweep is within the backdrop's colour tolerance all over, and only its faint outline (a
/// few times the gradient of a sweep's JPEG noise) keeps the flood out of it. Written out rather
/// than through `imageproc`'s generic filters, which took 0.5 s of a 2048² photo.
fn outlines(img: &RgbaImage) -> Vec<bool> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    let mut magnitude = vec![0u32; w * h];
    let (mut plane, mut across, mut smooth) = (vec![0i32; w * h], vec![0i32; w * h], vec![0i32; w * h]);
    // [1, 2, 1] along a row (edges repeated), then along a column.
    let along_rows = |src: &[i32], dst: &mut [i32]| {
        for y in 0..h {
            let row = &src[y * w..(y + 1) * w];
            for x in 0..w {
                dst[y * w + x] = row[x.saturating_sub(1)] + 2 * row[x] + row[(x + 1).min(w - 1)];
            }
        }
    };
    let along_columns = |src: &[i32], dst: &mut [i32]| {
        for y in 0..h {
            let (up, down) = (y.saturating_sub(1) * w, (y + 1).min(h - 1) * w);
            for x in 0..w {
                dst[y * w + x] = src[up + x] + 2 * src[y * w + x] + src[down + x];
            }
        }
    };
    for c in 0..3 {
        for (v, p) in plane.iter_mut().zip(raw.chunks_exact(4)) {
            *v = i32::from(p[c]);
        }
        along_rows(&plane, &mut across);
        along_columns(&across, &mut smooth); // the binomial, ×16
        // Sobel: the difference one way, [1, 2, 1] the other.
        along_columns(&smooth, &mut across);
        along_rows(&smooth, &mut plane);
        for y in 0..h {
            let (up, down) = (y.saturating_sub(1) * w, (y + 1).min(h - 1) * w);
            for x in 0..w {
                let gx = across[y * w + (x + 1).min(w - 1)] - across[y * w + x.saturating_sub(1)];
                let gy = plane[down + x] - plane[up + x];
                let m = &mut magnitude[y * w + x];
                *m = (*m).max(gx.unsigned_abs() + gy.unsigned_abs());
            }
        }
    }
    let ring = (w.min(h) / 50).max(1);
    let mut border: Vec<u32> = (0..w * h)
        .filter(|&i| {
            let (x, y) = (i % w, i / w);
            x < ring || y < ring || x + ring >= w || y + ring >= h
        })
        .map(|i| magnitude[i])
        .collect();
    border.sort_unstable();
    let p99 = border.get(border.len() * 99 / 100).copied().unwrap_or(0);
    // A 4-level step: 16 (binomial) × 4 (Sobel) × 4.
    let threshold = (3 * p99).max(16 * 4 * 4);
    magnitude.iter().map(|&g| g > threshold).collect()
}

/// The median colour of the backdrop (`!prod`) in a window around `x0..=x1 × y0..=y1`, as wide
/// again on every side: the backdrop a hole there would show, with the photo's falloff; `None`
/// where the window holds under 64 backdrop pixels.
fn backdrop_near(img: &RgbaImage, prod: &[bool], (x0, y0, x1, y1): (usize, usize, usize, usize)) -> Option<[u8; 3]> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let reach = (x1 - x0).max(y1 - y0) + 1;
    let (x0, y0, x1, y1) =
        (x0.saturating_sub(reach), y0.saturating_sub(reach), (x1 + reach).min(w - 1), (y1 + reach).min(h - 1));
    let nearby: Vec<[u8; 3]> = (y0..=y1)
        .flat_map(|y| (x0..=x1).map(move |x| (x, y)))
        .filter(|&(x, y)| !prod[y * w + x])
        .map(|(x, y)| px(img, x as u32, y as u32))
        .collect();
    (nearby.len() >= 64).then(|| median_colour(&nearby))
}

fn median_colour(pixels: &[[u8; 3]]) -> [u8; 3] {
    std::array::from_fn(|c| {
        let mut v: Vec<u8> = pixels.iter().map(|p| p[c]).collect();
        v.sort_unstable();
        v[v.len() / 2]
    })
}

fn mean_colour(pixels: &[[u8; 3]]) -> [u8; 3] {
    let n = pixels.len().max(1) as f32;
    std::array::from_fn(|c| (pixels.iter().map(|p| f32::from(p[c])).sum::<f32>() / n).round() as u8)
}

/// Largest per-pixel change (levels, any channel) between neighbours inside a soft shadow.
const SHADOW_STEP: u8 = 6;

fn max_channel_step(a: [u8; 3], b: [u8; 3]) -> u8 {
    (0..3).map(|c| a[c].abs_diff(b[c])).max().unwrap_or(0)
}

/// The backdrop colour dimmed: every channel scaled by one factor between ½ and 1 (± 5 %).
fn is_shadow_of(p: [u8; 3], backdrop: [u8; 3]) -> bool {
    let k: [f32; 3] = std::array::from_fn(|c| f32::from(p[c]) / f32::from(backdrop[c]).max(1.0));
    let mean = (k[0] + k[1] + k[2]) / 3.0;
    (0.5..=1.02).contains(&mean) && k.iter().all(|&kc| (kc - mean).abs() <= 0.05)
}

/// Breadth-first growth of `set` from `queue` (4-connected): a neighbour joins when
/// `joins(from, to)` says so.
fn flood(
    set: &mut [bool],
    queue: &mut VecDeque<(u32, u32)>,
    w: u32,
    h: u32,
    joins: impl Fn((u32, u32), (u32, u32)) -> bool,
) {
    while let Some((x, y)) = queue.pop_front() {
        let mut visit = |nx: u32, ny: u32| {
            let i = ny as usize * w as usize + nx as usize;
            if !set[i] && joins((x, y), (nx, ny)) {
                set[i] = true;
                queue.push_back((nx, ny));
            }
        };
        if x > 0 {
            visit(x - 1, y);
        }
        if x + 1 < w {
            visit(x + 1, y);
        }
        if y > 0 {
            visit(x, y - 1);
        }
        if y + 1 < h {
            visit(x, y + 1);
        }
    }
}

/// Regions the product encloses that show the backdrop — the inside of a kettle's or a mug's
/// handle, a ring, the gap under a strap — go back to the backdrop. A region qualifies when all of
/// it is within `tolerance` of the backdrop colour, it is no speck (≥ [`MIN_HOLE_FRACTION`] of the
/// photo and 64 px), its inside is the backdrop's colour nearby to within [`HOLE_MATCH`] (a chrome
/// or glaze highlight is brighter than the backdrop it reflects), the product around it changes
/// sharply (most pixels 2–3 px outside it are far from the backdrop colour: a soft highlight fades
/// out, a hole's rim does not), and it holds no print (what it encloses is under 2 % of it: a white
/// label with text stays product).
fn open_backdrop_holes(img: &RgbaImage, prod: &mut [bool], color: [u8; 3], opts: &MaskOptions) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let candidate: Vec<bool> = (0..w * h)
        .map(|i| prod[i] && color_distance(px(img, (i % w) as u32, (i / w) as u32), color) <= opts.tolerance)
        .collect();
    let (label, sizes) = components(&candidate, w, h, true, false);
    let min = ((MIN_HOLE_FRACTION * (w * h) as f32).ceil() as usize).max(64);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); sizes.len()];
    for (i, &l) in label.iter().enumerate() {
        if candidate[i] && sizes[l as usize] >= min {
            members[l as usize].push(i);
        }
    }
    for pixels in members.iter().filter(|m| !m.is_empty()) {
        if is_backdrop_hole(img, prod, pixels, color, opts.tolerance) {
            for &i in pixels {
                prod[i] = false;
            }
        }
    }
}

/// Smallest enclosed backdrop region taken as a hole, as a share of the photo (0.05 %).
const MIN_HOLE_FRACTION: f32 = 0.0005;
/// Largest colour distance between a hole's mean inside and the backdrop around the product
/// (about 5 levels): measured on held-out studio photos, holes are within 0.01 and chrome
/// highlights 0.03 and more (`training/evaluate_cutout.py`).
const HOLE_MATCH: f32 = 0.02;

fn is_backdrop_hole(img: &RgbaImage, prod: &[bool], pixels: &[usize], color: [u8; 3], tolerance: f32) -> bool {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for &i in pixels {
        let (x, y) = (i % w, i / w);
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
    }
    let local = backdrop_near(img, prod, (x0, y0, x1, y1)).unwrap_or(color);
    // A window around the region, 4 px wider on every side.
    let (x0, y0) = (x0.saturating_sub(4), y0.saturating_sub(4));
    let (x1, y1) = ((x1 + 4).min(w - 1), (y1 + 4).min(h - 1));
    let (ww, wh) = (x1 - x0 + 1, y1 - y0 + 1);
    let at = |j: usize| px(img, (x0 + j % ww) as u32, (y0 + j / ww) as u32);
    let mut inside = vec![false; ww * wh];
    for &i in pixels {
        inside[(i / w - y0) * ww + (i % w - x0)] = true;
    }
    // Its colour, away from its edge (≥ 2 px in, where the edge's mixed pixels are not), against
    // the backdrop near it.
    let to_edge = distance_to(&inside.iter().map(|&b| !b).collect::<Vec<_>>(), ww, wh);
    let mut colours: Vec<[u8; 3]> = (0..ww * wh).filter(|&j| inside[j] && to_edge[j] >= 2.0).map(at).collect();
    if colours.is_empty() {
        colours = (0..ww * wh).filter(|&j| inside[j]).map(at).collect();
    }
    if color_distance(mean_colour(&colours), local) > HOLE_MATCH {
        return false;
    }
    // Sharp rim: pixels 2–3 px outside the region.
    let d = distance_to(&inside, ww, wh);
    let (mut rim, mut sharp) = (0usize, 0usize);
    for (j, &dj) in d.iter().enumerate() {
        if dj > 1.5 && dj <= 3.5 {
            rim += 1;
            sharp += usize::from(color_distance(at(j), color) > 2.5 * tolerance);
        }
    }
    if rim == 0 || (sharp as f32) < 0.75 * rim as f32 {
        return false;
    }
    // No print: what the region encloses within the window (not reachable from its edge).
    let mut outside = vec![false; ww * wh];
    let mut queue = VecDeque::new();
    for j in 0..ww * wh {
        let (x, y) = (j % ww, j / ww);
        if (x == 0 || y == 0 || x + 1 == ww || y + 1 == wh) && !inside[j] {
            outside[j] = true;
            queue.push_back((x as u32, y as u32));
        }
    }
    flood(&mut outside, &mut queue, ww as u32, wh as u32, |_, (x, y)| !inside[y as usize * ww + x as usize]);
    let enclosed = (0..ww * wh).filter(|&j| !inside[j] && !outside[j]).count();
    (enclosed as f32) < 0.02 * pixels.len() as f32
}

/// A boolean mask as the 0/255 grey image `imageproc` works on.
fn gray(m: &[bool], w: usize, h: usize, value: bool) -> GrayImage {
    GrayImage::from_vec(w as u32, h as u32, m.iter().map(|&b| if b == value { 255 } else { 0 }).collect())
        .expect("mask length is w·h")
}

fn bools(img: &GrayImage) -> Vec<bool> {
    img.as_raw().iter().map(|&v| v != 0).collect()
}

/// Square (L∞) erosion of radius `r`; pixels beyond the border do not count.
fn erode(m: &[bool], w: usize, h: usize, r: usize) -> Vec<bool> {
    bools(&morphology::erode(&gray(m, w, h, true), Norm::LInf, r.min(255) as u8))
}

/// Square (L∞) dilation of radius `r`.
fn dilate(m: &[bool], w: usize, h: usize, r: usize) -> Vec<bool> {
    bools(&morphology::dilate(&gray(m, w, h, true), Norm::LInf, r.min(255) as u8))
}

/// Label connected components of pixels equal to `value` (4- or 8-connected): a label per
/// pixel (`u32::MAX` for the others) and each component's size, labels counted from 0.
fn components(m: &[bool], w: usize, h: usize, value: bool, eight: bool) -> (Vec<u32>, Vec<usize>) {
    // imageproc 0.27 indexes its union-find forest (one entry a pixel) by label, counted from 1:
    // a one-pixel image of the value asks for entry 1 of 1 and panics (found by fuzzing,
    // tests/fuzz/mask_layout_pfv/crash-753a…). Any larger image has fewer labels than pixels.
    if let [pixel] = m {
        return if *pixel == value { (vec![0], vec![1]) } else { (vec![u32::MAX], Vec::new()) };
    }
    let connectivity = if eight { Connectivity::Eight } else { Connectivity::Four };
    let labelled = connected_components(&gray(m, w, h, value), connectivity, Luma([0u8]));
    let label: Vec<u32> = labelled.as_raw().iter().map(|&l| l.wrapping_sub(1)).collect();
    let mut sizes = Vec::new();
    for &l in label.iter().filter(|&&l| l != u32::MAX) {
        if l as usize >= sizes.len() {
            sizes.resize(l as usize + 1, 0);
        }
        sizes[l as usize] += 1;
    }
    (label, sizes)
}

/// Background regions not connected to the image border are holes in the product.
fn fill_holes(prod: &mut [bool], w: usize, h: usize) {
    let (label, sizes) = components(prod, w, h, false, false);
    let mut touches = vec![false; sizes.len()];
    for y in 0..h {
        for x in 0..w {
            if (x == 0 || y == 0 || x == w - 1 || y == h - 1) && !prod[y * w + x] {
                touches[label[y * w + x] as usize] = true;
            }
        }
    }
    for (i, p) in prod.iter_mut().enumerate() {
        if !*p && !touches[label[i] as usize] {
            *p = true;
        }
    }
}

/// Drop product components below `min_frac` of the image, always keeping the largest.
fn remove_specks(prod: &mut [bool], w: usize, h: usize, min_frac: f32) {
    let (label, sizes) = components(prod, w, h, true, true);
    let Some(largest) = (0..sizes.len()).max_by_key(|&i| sizes[i]) else {
        return;
    };
    let min = (min_frac.max(0.0) as f64 * prod.len() as f64).ceil() as usize;
    for (i, p) in prod.iter_mut().enumerate() {
        if *p {
            let l = label[i] as usize;
            if l != largest && sizes[l] < min {
                *p = false;
            }
        }
    }
}

/// Euclidean distance from every pixel to the nearest pixel where `target` is true (`w + h`
/// beyond any, where there is none).
fn distance_to(target: &[bool], w: usize, h: usize) -> Vec<f32> {
    let far = (w + h) as f32;
    euclidean_squared_distance_transform(&gray(target, w, h, true))
        .as_raw()
        .iter()
        .map(|&d2| if d2.is_finite() { (d2.sqrt() as f32).min(far) } else { far })
        .collect()
}

/// Soft edge as a ramp of the signed distance to the boundary: coverage =
/// clamp(0.5 + s / feather), s = +(d_to_background − ½) inside, −(d_to_product − ½)
/// outside. The clamp makes pixels more than ~feather/2 from the edge exactly 1.0
/// (or 0.0), so the product's interior is never touched.
fn feather(prod: &[bool], w: usize, h: usize, feather_px: f32) -> Vec<f32> {
    if feather_px <= 0.0 || !prod.iter().any(|&p| p) || prod.iter().all(|&p| p) {
        return prod.iter().map(|&p| if p { 1.0 } else { 0.0 }).collect();
    }
    let bg: Vec<bool> = prod.iter().map(|&p| !p).collect();
    let d_to_bg = distance_to(&bg, w, h);
    let d_to_prod = distance_to(prod, w, h);
    prod.iter()
        .enumerate()
        .map(|(i, &p)| {
            let s = if p { d_to_bg[i] - 0.5 } else { -(d_to_prod[i] - 0.5) };
            (0.5 + s / feather_px).clamp(0.0, 1.0)
        })
        .collect()
}

/// Soft coverage at the product's edge read from the photo itself (known-background matting): a
/// pixel within 2 px of the cut is a mix `I = α·F + (1−α)·B` of the nearest solid product colour
/// `F` (≥ 3 px inside) and the nearest clear backdrop colour `B` (≥ 3 px outside, so a shadow or a
/// vignette counts as it is), and `α` is `I`'s position on the line from `B` to `F`. Pixels that are
/// plainly product (α ≥ 0.95) stay exactly 1, so their colours are pasted unchanged; a light
/// fringe of the old backdrop gets the small α it really has. Where product and backdrop are too
/// alike to tell apart (under 40 levels), the geometric ramp of [`feather`] is used instead.
fn matte(img: &RgbaImage, prod: &[bool], feather_px: f32) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut alpha = feather(prod, w, h, feather_px);
    if feather_px <= 0.0 || !prod.iter().any(|&p| p) || prod.iter().all(|&p| p) {
        return alpha;
    }
    let bg: Vec<bool> = prod.iter().map(|&p| !p).collect();
    let d_to_bg = distance_to(&bg, w, h);
    let d_to_prod = distance_to(prod, w, h);
    let band = |i: usize| if prod[i] { d_to_bg[i] < 3.0 } else { d_to_prod[i] < 3.0 };
    let solid = |i: usize| prod[i] && !band(i);
    let clear = |i: usize| !prod[i] && !band(i);
    let colour = |i: usize| px(img, (i % w) as u32, (i / w) as u32).map(f32::from);
    let fg = nearest_colour(img, solid, band);
    let backdrop = nearest_colour(img, clear, band);
    for i in (0..w * h).filter(|&i| band(i)) {
        let (Some(f), Some(b)) = (fg[i], backdrop[i]) else { continue };
        let (f, b, c) = (f.map(f32::from), b.map(f32::from), colour(i));
        let fb: [f32; 3] = std::array::from_fn(|k| f[k] - b[k]);
        let len2 = fb.iter().map(|v| v * v).sum::<f32>();
        if len2 < 40.0 * 40.0 {
            continue;
        }
        let a = ((0..3).map(|k| (c[k] - b[k]) * fb[k]).sum::<f32>() / len2).clamp(0.0, 1.0);
        alpha[i] = if a >= 0.95 {
            1.0
        } else if a <= 0.05 {
            0.0
        } else {
            a
        };
    }
    alpha
}

/// For every pixel where `through` holds, the colour of the nearest pixel where `from` holds
/// (breadth-first, 8-connected, through `through` pixels only); `None` where none is reachable.
fn nearest_colour(
    img: &RgbaImage,
    from: impl Fn(usize) -> bool,
    through: impl Fn(usize) -> bool,
) -> Vec<Option<[u8; 3]>> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out: Vec<Option<[u8; 3]>> = vec![None; w * h];
    let mut queue = VecDeque::new();
    for i in (0..w * h).filter(|&i| from(i)) {
        out[i] = Some(px(img, (i % w) as u32, (i / w) as u32));
        queue.push_back(i);
    }
    while let Some(i) = queue.pop_front() {
        let (x, y) = ((i % w) as isize, (i / w) as isize);
        for (dx, dy) in [(-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)] {
            let (nx, ny) = (x + dx, y + dy);
            if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                continue;
            }
            let j = ny as usize * w + nx as usize;
            if out[j].is_none() && through(j) {
                out[j] = out[i];
                queue.push_back(j);
            }
        }
    }
    out
}

/// Colour decontamination of an automatic mask's soft edge: each pixel with coverage strictly
/// between 0 and 1 gets the product's own colour there instead of the photo's mix of product and
/// old backdrop — `(I − (1−α)·B) / α` with `B` the nearest backdrop pixel's colour where α ≥ ½
/// (the unmixed colour), the nearest solid product pixel's colour below that (where unmixing would
/// magnify noise). Without this the composite blends a ring of the old backdrop into the new scene
/// (a white fringe around products shot on white). Solid product pixels (α = 1) and the backdrop
/// keep their colours; cut-outs are left alone, as their colours already go with their alpha.
pub fn decontaminate_edges(img: &mut RgbaImage, mask: &ProductMask) {
    if mask.source == MaskSource::Alpha || img.dimensions() != (mask.width, mask.height) {
        return;
    }
    let a = &mask.alpha;
    let edge = |i: usize| a[i] > 0.0 && a[i] < 1.0;
    let fg = nearest_colour(img, |i| a[i] >= 1.0, edge);
    let bg = nearest_colour(img, |i| a[i] <= 0.0, edge);
    let w = mask.width as usize;
    for i in (0..a.len()).filter(|&i| edge(i)) {
        let p = img.get_pixel_mut((i % w) as u32, (i / w) as u32);
        let unmixed = match bg[i] {
            Some(b) if a[i] >= 0.5 => Some(std::array::from_fn::<u8, 3, _>(|k| {
                ((f32::from(p.0[k]) - (1.0 - a[i]) * f32::from(b[k])) / a[i]).round().clamp(0.0, 255.0) as u8
            })),
            _ => None,
        };
        if let Some(c) = unmixed.or(fg[i]) {
            p.0 = [c[0], c[1], c[2], p.0[3]];
        }
    }
}

impl ProductMask {
    /// Tight bounding box of pixels with coverage above `threshold`, used to crop the
    /// product before placing it; `None` when no pixel qualifies.
    pub fn bbox(&self, threshold: f32) -> Option<Rect> {
        let (w, h) = (self.width as usize, self.height as usize);
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0usize, 0usize);
        for y in 0..h {
            for x in 0..w {
                if self.alpha[y * w + x] > threshold {
                    x0 = x0.min(x);
                    x1 = x1.max(x);
                    y0 = y0.min(y);
                    y1 = y1.max(y);
                }
            }
        }
        (x0 != usize::MAX).then(|| Rect {
            x: x0 as u32,
            y: y0 as u32,
            w: (x1 - x0 + 1) as u32,
            h: (y1 - y0 + 1) as u32,
        })
    }

    /// Mean coverage (soft area) as a fraction of the image, for sanity checks
    /// and for telling the user how much of the photo is product.
    pub fn area_fraction(&self) -> f32 {
        if self.alpha.is_empty() {
            return 0.0;
        }
        (self.alpha.iter().map(|&a| f64::from(a)).sum::<f64>() / self.alpha.len() as f64) as f32
    }

    /// Opaque preview for the user to confirm the mask: product white, background
    /// dark grey (40), soft edge blended between them.
    pub fn to_preview_rgba(&self) -> RgbaImage {
        let mut out = RgbaImage::new(self.width, self.height);
        for (p, &a) in out.pixels_mut().zip(&self.alpha) {
            let v = (40.0 + a.clamp(0.0, 1.0) * 215.0).round() as u8;
            p.0 = [v, v, v, 255];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::image_io::{DecodeLimits, decode_image};

    /// A red square shot on white whose left column covers a quarter of a pixel and right column
    /// three quarters (an anti-aliased edge): the matte reads those coverages from the colours,
    /// decontamination gives the edge the square's red, and the rest keeps its colours exactly; a
    /// cut-out's colours are not touched.
    #[test]
    fn the_edge_coverage_is_read_from_the_photo_and_its_colour_is_the_product_s() {
        let (red, white) = ([200.0f32, 20.0, 20.0], [255.0f32, 255.0, 255.0]);
        let mix = |a: f32| std::array::from_fn::<u8, 3, _>(|k| (a * red[k] + (1.0 - a) * white[k]).round() as u8);
        let photo = solid(40, 40, |x, y| match (x, (12..28).contains(&y)) {
            (11, true) => mix(0.25),
            (28, true) => mix(0.75),
            (12..=27, true) => mix(1.0),
            _ => mix(0.0),
        });
        let mask = product_mask(&photo, &MaskOptions::default()).unwrap();
        let at = |x: u32, y: u32| mask.alpha[(y * 40 + x) as usize];
        assert!((at(11, 20) - 0.25).abs() < 0.02, "{}", at(11, 20));
        assert!((at(28, 20) - 0.75).abs() < 0.02, "{}", at(28, 20));
        assert_eq!((at(12, 20), at(27, 20), at(20, 12), at(20, 27)), (1.0, 1.0, 1.0, 1.0));
        assert_eq!((at(10, 20), at(29, 20), at(20, 11), at(20, 28)), (0.0, 0.0, 0.0, 0.0));
        let mut rgba = photo.rgba.clone();
        decontaminate_edges(&mut rgba, &mask);
        for (i, (before, after)) in photo.rgba.pixels().zip(rgba.pixels()).enumerate() {
            let a = mask.alpha[i];
            if a > 0.0 && a < 1.0 {
                let d = (0..3).map(|k| (f32::from(after.0[k]) - red[k]).abs()).fold(0.0, f32::max);
                assert!(d <= 3.0, "edge pixel {i} (coverage {a}) is {:?}, not the product's red", after.0);
            } else {
                assert_eq!(after, before, "pixel {i} (coverage {a}) changed");
            }
        }
        let cut_out = ProductMask { source: MaskSource::Alpha, ..mask };
        let mut untouched = photo.rgba.clone();
        decontaminate_edges(&mut untouched, &cut_out);
        assert_eq!(untouched, photo.rgba);
    }

    fn decode(bytes: &[u8]) -> DecodedImage {
        decode_image(bytes, &DecodeLimits::default()).unwrap()
    }

    fn solid(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> DecodedImage {
        let rgba = RgbaImage::from_fn(w, h, |x, y| {
            let c = f(x, y);
            image::Rgba([c[0], c[1], c[2], 255])
        });
        DecodedImage { rgba, has_alpha: false, original_size: (w, h) }
    }

    #[test]
    fn alpha_mask_equals_alpha() {
        let img = decode(include_bytes!("../../tests/fixtures/product_alpha_128.png"));
        let m = product_mask(&img, &MaskOptions::default()).unwrap();
        assert_eq!(m.source, MaskSource::Alpha);
        assert_eq!((m.width, m.height), (128, 128));
        for (a, p) in m.alpha.iter().zip(img.rgba.pixels()) {
            assert_eq!(*a, f32::from(p.0[3]) / 255.0);
        }
        assert_eq!(m.bbox(0.01), Some(Rect { x: 24, y: 8, w: 80, h: 112 }));
        let m32 =
            product_mask(&decode(include_bytes!("../../tests/fixtures/product_alpha_32.png")), &MaskOptions::default());
        // The 32 px jar touches every edge but leaves transparent corners.
        assert_eq!(m32.unwrap().bbox(0.01), Some(Rect { x: 0, y: 0, w: 32, h: 32 }));
    }

    #[test]
    fn white_background_auto_mask() {
        let img = decode(include_bytes!("../../tests/fixtures/product_white.jpg"));
        let m = product_mask(&img, &MaskOptions::default()).unwrap();
        let MaskSource::Background { color, .. } = m.source else { panic!("expected auto mask") };
        assert!(color.iter().all(|&c| c > 225), "{color:?}");
        // Generated coverage is 0.1626 (scripts/make_fixtures.py).
        let f = m.area_fraction();
        assert!((0.15..0.18).contains(&f), "area {f}");
        let at = |x: u32, y: u32| m.alpha[(y * m.width + x) as usize];
        // Bottle body, label, neck and cap interiors exactly 1.
        for (x, y) in [(80, 90), (80, 70), (80, 50), (80, 30), (80, 22), (62, 70), (98, 70)] {
            assert_eq!(at(x, y), 1.0, "({x},{y})");
        }
        // Border and clear background exactly 0.
        for x in 0..m.width {
            assert_eq!(at(x, 0), 0.0);
            assert_eq!(at(x, m.height - 1), 0.0);
        }
        for y in 0..m.height {
            assert_eq!(at(0, y), 0.0);
            assert_eq!(at(m.width - 1, y), 0.0);
        }
        assert_eq!(at(30, 60), 0.0);
        assert_eq!(at(130, 60), 0.0);
        assert_eq!(at(80, 10), 0.0);
        // Body spans x 58..102: bbox close to the drawn bottle (x 58..102, y 18..104).
        let b = m.bbox(0.01).unwrap();
        assert!(b.x.abs_diff(57) <= 2 && b.y.abs_diff(17) <= 2, "{b:?}");
        assert!(b.w.abs_diff(46) <= 3 && b.h.abs_diff(88) <= 3, "{b:?}");
        // Soft edge exists but is narrow.
        let soft = m.alpha.iter().filter(|&&a| a > 0.0 && a < 1.0).count();
        assert!(soft > 0 && soft < 600, "{soft}");
    }

    #[test]
    fn busy_photo_refused() {
        let img = decode(include_bytes!("../../tests/fixtures/busy.jpg"));
        let e = product_mask(&img, &MaskOptions::default()).unwrap_err();
        let MaskError::BusyBackground { spread } = e else { panic!("{e:?}") };
        assert!(spread > 0.10);
        assert!(e.to_string().contains("PNG cut-out with transparency"));
    }

    #[test]
    fn empty_and_full_frame() {
        // Uniform grey photo: nothing differs from the background.
        let e = product_mask(&solid(40, 30, |_, _| [230, 230, 230]), &MaskOptions::default()).unwrap_err();
        assert_eq!(e, MaskError::Empty);
        assert!(e.to_string().starts_with("No product found: the mask is empty"));
        // Fully transparent cut-out.
        let mut img = solid(16, 16, |_, _| [0, 0, 0]);
        img.has_alpha = true;
        img.rgba.pixels_mut().for_each(|p| p.0[3] = 0);
        assert_eq!(product_mask(&img, &MaskOptions::default()).unwrap_err(), MaskError::Transparent);
        // A cut-out with only faint specks: nothing that counts as product.
        img.rgba.get_pixel_mut(3, 3).0[3] = 1;
        assert_eq!(product_mask(&img, &MaskOptions::default()).unwrap_err(), MaskError::Empty);
        // Cut-out opaque everywhere except one pixel: the product fills the frame.
        let mut img = solid(16, 16, |_, _| [10, 20, 30]);
        img.has_alpha = true;
        img.rgba.get_pixel_mut(0, 0).0[3] = 0;
        let e = product_mask(&img, &MaskOptions::default()).unwrap_err();
        assert_eq!(e, MaskError::FullFrame);
        assert!(e.to_string().contains("no background to replace"));
    }

    #[test]
    fn synthetic_square_exact_mask_with_hole_filled_and_speck_removed() {
        // 60×60 white, dark 20×20 square at 20..40 with a white 4×4 "hole" inside,
        // and a 1-px dark speck far away.
        let img = solid(60, 60, |x, y| {
            let in_sq = (20..40).contains(&x) && (20..40).contains(&y);
            let in_hole = (28..32).contains(&x) && (28..32).contains(&y);
            if (in_sq && !in_hole) || (x, y) == (5, 50) { [20, 30, 40] } else { [250, 250, 250] }
        });
        let m = product_mask(&img, &MaskOptions::default()).unwrap();
        let at = |x: u32, y: u32| m.alpha[(y * 60 + x) as usize];
        assert_eq!(at(5, 50), 0.0, "speck removed");
        assert_eq!(at(29, 29), 1.0, "hole filled");
        for y in 21..39 {
            for x in 21..39 {
                assert_eq!(at(x, y), 1.0);
            }
        }
        // A hard-edged square reads as hard: its edge pixels are the product's colour, the next
        // ones the backdrop's.
        assert_eq!((at(20, 30), at(19, 30)), (1.0, 0.0));
        assert_eq!(m.bbox(0.01), Some(Rect { x: 20, y: 20, w: 20, h: 20 }));
        // Where the product is too close to the backdrop to read coverage from colour, the soft
        // edge is geometric: edge pixels 5/6, first outside pixels 1/6, then 0.
        let pale = solid(60, 60, |x, y| {
            if (20..40).contains(&x) && (20..40).contains(&y) { [228, 228, 228] } else { [250, 250, 250] }
        });
        let m = product_mask(&pale, &MaskOptions::default()).unwrap();
        let at = |x: u32, y: u32| m.alpha[(y * 60 + x) as usize];
        assert!((at(20, 30) - (0.5 + 0.5 / 1.5)).abs() < 1e-6);
        assert!((at(19, 30) - (0.5 - 0.5 / 1.5)).abs() < 1e-6);
        assert_eq!(at(18, 30), 0.0);
        assert_eq!(m.bbox(0.01), Some(Rect { x: 19, y: 19, w: 22, h: 22 }));
        assert_eq!(m.bbox(0.5), Some(Rect { x: 20, y: 20, w: 20, h: 20 }));
        // Hard mask when feather is 0.
        let hard = product_mask(&img, &MaskOptions { feather_px: 0.0, ..Default::default() }).unwrap();
        assert!(hard.alpha.iter().all(|&a| a == 0.0 || a == 1.0));
        assert!((hard.area_fraction() - 400.0 / 3600.0).abs() < 1e-6);
    }

    #[test]
    fn one_pixel_images_are_labelled() {
        assert_eq!(components(&[true], 1, 1, true, false), (vec![0], vec![1]));
        assert_eq!(components(&[true], 1, 1, false, true), (vec![u32::MAX], vec![]));
        assert_eq!(components(&[true, true], 2, 1, true, false), (vec![0, 0], vec![2]));
        assert_eq!(components(&[true, false], 1, 2, false, false), (vec![u32::MAX, 0], vec![1]));
    }

    #[test]
    fn preview_is_grey_white() {
        let m = ProductMask { width: 3, height: 1, alpha: vec![0.0, 0.5, 1.0], source: MaskSource::Alpha };
        let p = m.to_preview_rgba();
        assert_eq!(p.get_pixel(0, 0).0, [40, 40, 40, 255]);
        assert_eq!(p.get_pixel(2, 0).0, [255, 255, 255, 255]);
        assert_eq!(p.get_pixel(1, 0).0[3], 255);
        assert_eq!(m.bbox(0.9), Some(Rect { x: 2, y: 0, w: 1, h: 1 }));
        assert_eq!(m.bbox(1.0), None);
    }
}
