//! Patch Flexible Visibility (PFV, arXiv 2405.19085).
//!
//! A reference image shown to the diffusion model must not leak the product's
//! pixels into the background it paints. PFV cuts the decision mask into square
//! patches (default 16×16), counts the "zero" (foreground) pixels in each, and hides
//! the whole patch when their fraction passes a threshold; the resulting patch grid
//! then masks the reference image or the encoder's tokens.
//!
//! Convention: decision-mask value 1 = keep/visible (background the reference may
//! show), 0 = hide (foreground). A pixel counts as a zero when its value < 0.5.
//! Given a product mask (1 = product) the decision mask is `1 − product`.

use std::fmt;

use image::RgbaImage;

/// Neutral fill for hidden patches: mid-grey (128,128,128,255), the colour that
/// carries the least information and sits at the centre of normalised pixel space.
pub const DEFAULT_FILL: [u8; 4] = [128, 128, 128, 255];

/// PFV parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct PfvConfig {
    /// Patch side in pixels (default 16, a typical ViT/latent patch footprint).
    pub patch: u32,
    /// A patch is hidden when its fraction of zero pixels is strictly greater than
    /// this (0..=1). Default 0.0: any foreground pixel hides the patch, the strictest
    /// guard against product pixels (including soft edges) leaking through the
    /// reference; larger values trade leakage for more visible context. At 1.0
    /// nothing is ever hidden.
    pub threshold: f32,
}

impl Default for PfvConfig {
    fn default() -> Self {
        Self { patch: 16, threshold: 0.0 }
    }
}

/// Invalid PFV input (a caller bug, reported instead of panicking).
#[derive(Clone, Debug, PartialEq)]
pub enum PfvError {
    /// Width or height is zero.
    ZeroSize,
    /// Mask length is not width × height.
    LengthMismatch {
        /// Expected length (width × height).
        expected: usize,
        /// Actual mask length.
        actual: usize,
    },
    /// Patch size is zero.
    ZeroPatch,
    /// Threshold not within 0..=1 (or NaN).
    Threshold(f32),
}

impl fmt::Display for PfvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PfvError::ZeroSize => write!(f, "PFV: the mask has zero width or height."),
            PfvError::LengthMismatch { expected, actual } => {
                write!(f, "PFV: the mask has {actual} values but width × height is {expected}.")
            }
            PfvError::ZeroPatch => write!(f, "PFV: the patch size must be at least 1 pixel."),
            PfvError::Threshold(t) => write!(f, "PFV: the threshold {t} must be between 0 and 1."),
        }
    }
}

impl std::error::Error for PfvError {}

/// Per-patch visibility over a `width × height` mask; row-major `visible[row * cols + col]`.
/// Edge patches may be partial (when the size is not a multiple of `patch`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchGrid {
    /// Patch columns, ceil(width / patch).
    pub cols: u32,
    /// Patch rows, ceil(height / patch).
    pub rows: u32,
    /// Patch side in pixels.
    pub patch: u32,
    /// Mask width in pixels (needed to map partial edge patches and token grids exactly).
    pub width: u32,
    /// Mask height in pixels.
    pub height: u32,
    /// true = patch visible (kept), false = hidden.
    pub visible: Vec<bool>,
}

/// Compute which patches of a decision mask stay visible.
///
/// Each patch's zero fraction is zeros / covered pixels, so partial edge patches
/// are judged on the pixels they actually contain.
pub fn patch_visibility(mask: &[f32], width: u32, height: u32, cfg: &PfvConfig) -> Result<PatchGrid, PfvError> {
    if width == 0 || height == 0 {
        return Err(PfvError::ZeroSize);
    }
    let expected = width as usize * height as usize;
    if mask.len() != expected {
        return Err(PfvError::LengthMismatch { expected, actual: mask.len() });
    }
    if cfg.patch == 0 {
        return Err(PfvError::ZeroPatch);
    }
    if !(0.0..=1.0).contains(&cfg.threshold) {
        return Err(PfvError::Threshold(cfg.threshold));
    }
    let p = cfg.patch;
    let cols = width.div_ceil(p);
    let rows = height.div_ceil(p);
    let mut zeros = vec![0u32; (cols * rows) as usize];
    let w = width as usize;
    for y in 0..height {
        let row = (y / p) * cols;
        for x in 0..width {
            let v = mask[y as usize * w + x as usize];
            // NaN also counts as a zero: unknown pixels are hidden.
            if v < 0.5 || v.is_nan() {
                zeros[(row + x / p) as usize] += 1;
            }
        }
    }
    let visible = (0..rows)
        .flat_map(|r| (0..cols).map(move |c| (r, c)))
        .map(|(r, c)| {
            let pw = (width - c * p).min(p);
            let ph = (height - r * p).min(p);
            let frac = f64::from(zeros[(r * cols + c) as usize]) / f64::from(pw * ph);
            frac <= f64::from(cfg.threshold)
        })
        .collect();
    Ok(PatchGrid { cols, rows, patch: p, width, height, visible })
}

impl PatchGrid {
    /// Whether the patch at (`col`, `row`) is visible; out-of-range counts as hidden.
    pub fn is_visible(&self, col: u32, row: u32) -> bool {
        col < self.cols && row < self.rows && self.visible[(row * self.cols + col) as usize]
    }

    /// Expand to a per-pixel decision mask (1 visible, 0 hidden) of `width × height`,
    /// e.g. to mask a reference in pixel space. Pixels beyond the grid are hidden.
    pub fn pixel_mask(&self, width: u32, height: u32) -> Vec<f32> {
        let mut out = Vec::with_capacity(width as usize * height as usize);
        for y in 0..height {
            for x in 0..width {
                out.push(if self.is_visible(x / self.patch, y / self.patch) { 1.0 } else { 0.0 });
            }
        }
        out
    }

    /// Fill hidden patches of `img` with `fill` (use [`DEFAULT_FILL`], mid-grey, for
    /// a neutral reference). The image is addressed in the grid's pixel coordinates
    /// (it should be the mask's size); pixels outside the grid are left unchanged.
    pub fn apply_to_image(&self, img: &mut RgbaImage, fill: [u8; 4]) {
        let (w, h) = (img.width().min(self.width), img.height().min(self.height));
        for y in 0..h {
            for x in 0..w {
                if !self.is_visible(x / self.patch, y / self.patch) {
                    img.put_pixel(x, y, image::Rgba(fill));
                }
            }
        }
    }

    /// Map an encoder's `token_cols × token_rows` grid (covering the same image
    /// extent as the mask) onto the patch grid. A token is kept only if every PFV
    /// patch its footprint overlaps (with positive area) is visible, so a kept token
    /// never sees a hidden pixel whatever the two grids' sizes. Row-major output.
    /// A zero-sized token grid yields an empty vector.
    pub fn token_keep(&self, token_cols: u32, token_rows: u32) -> Vec<bool> {
        let span = |t: u32, n: u32, extent: u32, max_idx: u32| -> (u32, u32) {
            // Token t covers [t·extent/n, (t+1)·extent/n) in pixels; in patch units
            // divide by `patch`. Exact integer arithmetic avoids float edge cases.
            let den = u64::from(n) * u64::from(self.patch);
            let first = (u64::from(t) * u64::from(extent) / den) as u32;
            let end = (u64::from(t + 1) * u64::from(extent)).div_ceil(den) as u32;
            (first.min(max_idx), end.saturating_sub(1).clamp(first.min(max_idx), max_idx))
        };
        let mut keep = Vec::with_capacity(token_cols as usize * token_rows as usize);
        if token_cols == 0 || token_rows == 0 {
            return keep;
        }
        for tr in 0..token_rows {
            let (r0, r1) = span(tr, token_rows, self.height, self.rows - 1);
            for tc in 0..token_cols {
                let (c0, c1) = span(tc, token_cols, self.width, self.cols - 1);
                keep.push((r0..=r1).all(|r| (c0..=c1).all(|c| self.is_visible(c, r))));
            }
        }
        keep
    }
}

/// What to do with hidden tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenMode {
    /// Remove hidden rows (shorter sequence; attention never sees them).
    Drop,
    /// Keep the sequence length and zero hidden rows (for fixed-shape kernels).
    Zero,
}

/// Apply a token keep-mask to a row-major `[n, dim]` token buffer.
///
/// Returns the new buffer and its number of rows (n_kept for `Drop`, n for `Zero`),
/// so the caller can reshape it without recomputing.
///
/// # Panics
/// If `dim == 0` or `tokens.len() != keep.len() * dim` (a programming error).
pub fn apply_to_tokens(tokens: &[f32], dim: usize, keep: &[bool], mode: TokenMode) -> (Vec<f32>, usize) {
    assert!(dim > 0, "apply_to_tokens: dim must be > 0");
    assert_eq!(tokens.len(), keep.len() * dim, "apply_to_tokens: tokens.len() must equal keep.len() * dim");
    match mode {
        TokenMode::Drop => {
            let mut out = Vec::with_capacity(tokens.len());
            for (row, &k) in tokens.chunks_exact(dim).zip(keep) {
                if k {
                    out.extend_from_slice(row);
                }
            }
            let n = out.len() / dim;
            (out, n)
        }
        TokenMode::Zero => {
            let mut out = tokens.to_vec();
            for (row, &k) in out.chunks_exact_mut(dim).zip(keep) {
                if !k {
                    row.fill(0.0);
                }
            }
            (out, keep.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(patch: u32, threshold: f32) -> PfvConfig {
        PfvConfig { patch, threshold }
    }

    fn hidden(g: &PatchGrid) -> Vec<(u32, u32)> {
        (0..g.rows).flat_map(|r| (0..g.cols).map(move |c| (c, r))).filter(|&(c, r)| !g.is_visible(c, r)).collect()
    }

    fn one_zero(w: u32, h: u32, x: u32, y: u32) -> Vec<f32> {
        let mut m = vec![1.0; (w * h) as usize];
        m[(y * w + x) as usize] = 0.0;
        m
    }

    #[test]
    fn single_zero_pixel() {
        let m = one_zero(32, 32, 20, 3);
        let g = patch_visibility(&m, 32, 32, &PfvConfig::default()).unwrap();
        assert_eq!((g.cols, g.rows, g.patch), (2, 2, 16));
        assert_eq!(hidden(&g), vec![(1, 0)]);
        assert_eq!(g.visible, vec![true, false, true, true]);
        // 1/256 ≈ 0.0039 < 0.01 → visible.
        let g = patch_visibility(&m, 32, 32, &cfg(16, 0.01)).unwrap();
        assert!(g.visible.iter().all(|&v| v));
        // Exactly at the fraction is not "passing" it.
        let g = patch_visibility(&m, 32, 32, &cfg(16, 1.0 / 256.0)).unwrap();
        assert!(g.visible.iter().all(|&v| v));
        // 0.49 counts as a zero (< 0.5); 0.5 does not.
        let mut m2 = vec![1.0; 1024];
        m2[0] = 0.5;
        assert!(patch_visibility(&m2, 32, 32, &PfvConfig::default()).unwrap().visible.iter().all(|&v| v));
        m2[0] = 0.49;
        assert_eq!(hidden(&patch_visibility(&m2, 32, 32, &PfvConfig::default()).unwrap()), vec![(0, 0)]);
    }

    #[test]
    fn non_divisible_edge_patches() {
        // 40×24 → cols 3 (16,16,8), rows 2 (16,8). Edge patch (2,1) covers 8×8 = 64 px.
        let mut m = vec![1.0; 40 * 24];
        // 3 zeros in the corner patch (2,1): fraction 3/64 = 0.046875.
        for (x, y) in [(32, 16), (39, 23), (35, 20)] {
            m[y * 40 + x] = 0.0;
        }
        // 3 zeros in the full patch (0,0): 3/256 = 0.0117.
        for (x, y) in [(0, 0), (1, 1), (15, 15)] {
            m[y * 40 + x] = 0.0;
        }
        // 3 zeros in partial patch (2,0) (8×16 = 128 px): 3/128 = 0.0234.
        for (x, y) in [(32, 0), (33, 1), (39, 15)] {
            m[y * 40 + x] = 0.0;
        }
        let g = patch_visibility(&m, 40, 24, &cfg(16, 0.0)).unwrap();
        assert_eq!((g.cols, g.rows), (3, 2));
        assert_eq!(hidden(&g), vec![(0, 0), (2, 0), (2, 1)]);
        let g = patch_visibility(&m, 40, 24, &cfg(16, 0.02)).unwrap();
        assert_eq!(hidden(&g), vec![(2, 0), (2, 1)]);
        let g = patch_visibility(&m, 40, 24, &cfg(16, 0.03)).unwrap();
        assert_eq!(hidden(&g), vec![(2, 1)]);
        let g = patch_visibility(&m, 40, 24, &cfg(16, 0.05)).unwrap();
        assert!(hidden(&g).is_empty());
        // pixel_mask covers partial patches exactly.
        let pm = patch_visibility(&m, 40, 24, &cfg(16, 0.03)).unwrap().pixel_mask(40, 24);
        assert_eq!(pm.iter().filter(|&&v| v == 0.0).count(), 64);
        assert_eq!(pm[16 * 40 + 32], 0.0);
        assert_eq!(pm[15 * 40 + 39], 1.0);
    }

    #[test]
    fn empty_and_full_masks() {
        let g = patch_visibility(&vec![0.0; 40 * 24], 40, 24, &cfg(16, 0.5)).unwrap();
        assert!(g.visible.iter().all(|&v| !v));
        let g = patch_visibility(&vec![1.0; 40 * 24], 40, 24, &PfvConfig::default()).unwrap();
        assert!(g.visible.iter().all(|&v| v));
        // Threshold 1.0 never hides, even an all-zero mask.
        let g = patch_visibility(&vec![0.0; 64], 8, 8, &cfg(4, 1.0)).unwrap();
        assert!(g.visible.iter().all(|&v| v));
    }

    #[test]
    fn one_pixel_line() {
        // Vertical line of zeros at x = 17 in a 48×32 mask: column 1 of patches hidden.
        let mut m = vec![1.0; 48 * 32];
        for y in 0..32 {
            m[y * 48 + 17] = 0.0;
        }
        let g = patch_visibility(&m, 48, 32, &PfvConfig::default()).unwrap();
        assert_eq!(hidden(&g), vec![(1, 0), (1, 1)]);
        // Line fraction per patch = 16/256 = 1/16.
        let g = patch_visibility(&m, 48, 32, &cfg(16, 0.0625)).unwrap();
        assert!(hidden(&g).is_empty());
        let g = patch_visibility(&m, 48, 32, &cfg(16, 0.06)).unwrap();
        assert_eq!(hidden(&g).len(), 2);
        // Horizontal line along the last row of a 40×24 mask: partial bottom patches (8 rows).
        let mut m = vec![1.0; 40 * 24];
        for x in 0..40 {
            m[23 * 40 + x] = 0.0;
        }
        // 16/128 = 0.125 for (0,1),(1,1); 8/64 = 0.125 for (2,1).
        let g = patch_visibility(&m, 40, 24, &cfg(16, 0.12)).unwrap();
        assert_eq!(hidden(&g), vec![(0, 1), (1, 1), (2, 1)]);
        let g = patch_visibility(&m, 40, 24, &cfg(16, 0.125)).unwrap();
        assert!(hidden(&g).is_empty());
    }

    fn pseudo_mask(w: u32, h: u32, seed: u32) -> Vec<f32> {
        (0..w * h)
            .map(|i| {
                let v = i.wrapping_mul(2_654_435_761).wrapping_add(seed.wrapping_mul(97)) >> 24;
                if v < 40 { 0.0 } else { 1.0 }
            })
            .collect()
    }

    #[test]
    fn monotone_in_threshold() {
        let m = pseudo_mask(50, 37, 3);
        let mut prev: Option<PatchGrid> = None;
        for t in [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0] {
            let g = patch_visibility(&m, 50, 37, &cfg(8, t)).unwrap();
            if let Some(p) = &prev {
                // Raising the threshold can only make more patches visible.
                for (a, b) in p.visible.iter().zip(&g.visible) {
                    assert!(!a || *b);
                }
            }
            prev = Some(g);
        }
        assert!(prev.unwrap().visible.iter().all(|&v| v));
    }

    #[test]
    fn idempotent() {
        for (w, h, p, t) in [(50, 37, 8, 0.0), (50, 37, 8, 0.15), (32, 32, 16, 0.1), (40, 24, 16, 0.0)] {
            let m = pseudo_mask(w, h, w + h);
            let g = patch_visibility(&m, w, h, &cfg(p, t)).unwrap();
            let g2 = patch_visibility(&g.pixel_mask(w, h), w, h, &cfg(p, t)).unwrap();
            assert_eq!(g, g2);
        }
    }

    #[test]
    fn errors() {
        let d = PfvConfig::default();
        assert_eq!(patch_visibility(&[], 0, 4, &d), Err(PfvError::ZeroSize));
        assert_eq!(patch_visibility(&[1.0; 3], 2, 2, &d), Err(PfvError::LengthMismatch { expected: 4, actual: 3 }));
        assert_eq!(patch_visibility(&[1.0; 4], 2, 2, &cfg(0, 0.0)), Err(PfvError::ZeroPatch));
        assert!(matches!(patch_visibility(&[1.0; 4], 2, 2, &cfg(2, 1.5)), Err(PfvError::Threshold(_))));
        assert!(matches!(patch_visibility(&[1.0; 4], 2, 2, &cfg(2, -0.1)), Err(PfvError::Threshold(_))));
        assert!(matches!(patch_visibility(&[1.0; 4], 2, 2, &cfg(2, f32::NAN)), Err(PfvError::Threshold(_))));
    }

    #[test]
    fn apply_to_image_fills_hidden_patches() {
        let m = one_zero(40, 24, 35, 20); // hides the 8×8 corner patch (2,1)
        let g = patch_visibility(&m, 40, 24, &PfvConfig::default()).unwrap();
        let mut img = RgbaImage::from_pixel(40, 24, image::Rgba([1, 2, 3, 4]));
        g.apply_to_image(&mut img, DEFAULT_FILL);
        for (x, y, p) in img.enumerate_pixels() {
            let want = if x >= 32 && y >= 16 { DEFAULT_FILL } else { [1, 2, 3, 4] };
            assert_eq!(p.0, want, "({x},{y})");
        }
    }

    #[test]
    fn token_keep_maps_grids() {
        // 32×32, patch 16, patch (1,0) hidden.
        let g = patch_visibility(&one_zero(32, 32, 20, 3), 32, 32, &PfvConfig::default()).unwrap();
        // Same grid: identity.
        assert_eq!(g.token_keep(2, 2), g.visible);
        // Finer 4×4 token grid (8 px tokens): the 2×2 tokens in the top-right are dropped.
        let k = g.token_keep(4, 4);
        let want: Vec<bool> = (0..16).map(|i| !((i % 4) >= 2 && (i / 4) < 2)).collect();
        assert_eq!(k, want);
        // Coarser 1×1 grid: the single token overlaps the hidden patch.
        assert_eq!(g.token_keep(1, 1), vec![false]);
        // 3×3 tokens (10.67 px): token (1,0) spans x 10.67..21.33 → overlaps patch col 1.
        let k = g.token_keep(3, 3);
        assert_eq!(k, vec![true, false, false, true, false, false, true, true, true]);
        assert!(g.token_keep(0, 3).is_empty());
        // Non-divisible image: 40×24 with hidden corner patch (2,1) (pixels x≥32, y≥16).
        let g = patch_visibility(&one_zero(40, 24, 35, 20), 40, 24, &PfvConfig::default()).unwrap();
        // 5×3 tokens of 8×8 px: only token (4,2) lies in the hidden patch.
        let k = g.token_keep(5, 3);
        assert_eq!(k.iter().filter(|&&v| !v).count(), 1);
        assert!(!k[2 * 5 + 4]);
    }

    #[test]
    fn tokens_drop_and_zero() {
        let tokens: Vec<f32> = (0..8).map(|v| v as f32 + 1.0).collect(); // 4 tokens × dim 2
        let keep = [true, false, true, false];
        assert_eq!(apply_to_tokens(&tokens, 2, &keep, TokenMode::Drop), (vec![1.0, 2.0, 5.0, 6.0], 2));
        assert_eq!(
            apply_to_tokens(&tokens, 2, &keep, TokenMode::Zero),
            (vec![1.0, 2.0, 0.0, 0.0, 5.0, 6.0, 0.0, 0.0], 4)
        );
        assert_eq!(apply_to_tokens(&tokens, 2, &[false; 4], TokenMode::Drop), (vec![], 0));
    }
}
