//! Tiled VAE passes, as diffusers' `AutoencoderKL.enable_tiling()` runs them
//! (`_tiled_encode`, `tiled_decode`, `blend_v`, `blend_h`).
//!
//! Why: Stable Diffusion's KL decoder makes a 256 MiB activation at 512² (256 channels at full
//! size), more than a WebGPU adapter may bind in one buffer (128 MiB unless it offers more).
//! Cut into tiles, each pass's activations shrink with the tile's area. Each tile is encoded
//! or decoded on its own, so its GroupNorm statistics are its own: the result differs a little
//! from an untiled pass, exactly as diffusers' does. Overlapping tiles are blended linearly
//! across a quarter of a tile to hide the seams.
//!
//! For an input tile side `T_in`, output tile side `T_out` (`T_in × 8` for a decode,
//! `T_in / 8` for an encode) and overlap `o = 1/4`: tiles start every `⌊T_in (1 − o)⌋` input
//! pixels; each output tile's first `e = ⌊T_out o⌋` rows (and columns) become
//! `a·(1 − y/e) + b·(y/e)` of the tile above (left) `a` and itself `b`; then each tile keeps
//! its first `T_out − e` rows and columns.

use burn::tensor::{Tensor, TensorData};

/// diffusers' `tile_overlap_factor`.
pub const OVERLAP: f64 = 0.25;

/// Tile sides for one tiled pass, in input and output pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiles {
    /// `tile_latent_min_size` for a decode, `tile_sample_min_size` for an encode.
    pub input: usize,
    /// The other one: what a tile of `input` pixels becomes.
    pub output: usize,
}

impl Tiles {
    /// Whether an input of `h × w` is cut into tiles (diffusers tiles only when a side
    /// exceeds one tile).
    pub fn needed_for(&self, h: usize, w: usize) -> bool {
        h > self.input || w > self.input
    }
}

/// The latent tile side for an `h × w`-latent pass when the whole one does not `fit` (a test of
/// a tile's `th × tw` latents against a GPU's buffer limit): the largest multiple of 4 whose tiles
/// fit, so the fewest tiles. `None` when the whole pass fits, or when not even an 8-latent tile does.
pub fn tile_side_within(h: usize, w: usize, fits: impl Fn(usize, usize) -> bool) -> Option<usize> {
    if fits(h, w) {
        return None;
    }
    (8..h.max(w)).rev().filter(|t| t % 4 == 0).find(|&t| fits(t.min(h), t.min(w)))
}

/// Runs `pass` on overlapping tiles of `x` and blends the outputs into one tensor.
/// `pass` gets each tile and its `[top, left]` corner in `x` (to cut matching tiles of any
/// side input), and must map an `h × w` tile to `h·s × w·s` with `s = tiles.output / tiles.input`,
/// and the tile sides must keep the kept parts adding up to the whole
/// (`⌊T_in·3/4⌋·s = T_out − ⌊T_out/4⌋`, true when `T_in` and `T_out` are multiples of 4).
///
/// # Shapes
/// - x: `[batch, channels, h, w]` → `[batch, out_channels, h·s, w·s]`
pub fn tiled(x: Tensor<4>, tiles: Tiles, pass: impl Fn(Tensor<4>, [usize; 2]) -> Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let stride = (tiles.input as f64 * (1.0 - OVERLAP)) as usize;
    let blend = (tiles.output as f64 * OVERLAP) as usize;
    let keep = tiles.output - blend;
    assert!(stride > 0 && keep > 0, "tiles of {tiles:?} are too small to overlap");
    // Each tile is blended with its neighbours above and to the left once they are blended
    // themselves (diffusers blends in place, in this order), and cropped only at the end.
    let mut rows: Vec<Vec<Tensor<4>>> = Vec::new();
    for top in (0..h).step_by(stride) {
        let mut row: Vec<Tensor<4>> = Vec::new();
        for left in (0..w).step_by(stride) {
            let tile = x.clone().narrow(2, top, tiles.input.min(h - top)).narrow(3, left, tiles.input.min(w - left));
            let mut out = pass(tile, [top, left]);
            if let Some(above) = rows.last() {
                out = blend_edge(&above[row.len()], out, blend, 2);
            }
            if let Some(before) = row.last() {
                out = blend_edge(before, out, blend, 3);
            }
            row.push(out);
        }
        rows.push(row);
    }
    let rows = rows.into_iter().map(|row| Tensor::cat(row.into_iter().map(|t| crop(t, keep)).collect(), 3)).collect();
    Tensor::cat(rows, 2)
}

/// The first `keep` rows and columns of `t` (fewer where it has fewer).
fn crop(t: Tensor<4>, keep: usize) -> Tensor<4> {
    let [_, _, h, w] = t.dims();
    t.narrow(2, 0, keep.min(h)).narrow(3, 0, keep.min(w))
}

/// diffusers' `blend_v` (`dim` 2) and `blend_h` (`dim` 3): `b`'s first `e` lines along `dim`
/// fade from `a`'s last `e` lines into its own, `e = min(extent, a's and b's sizes)`.
fn blend_edge(a: &Tensor<4>, b: Tensor<4>, extent: usize, dim: usize) -> Tensor<4> {
    let e = extent.min(a.dims()[dim]).min(b.dims()[dim]);
    if e == 0 {
        return b;
    }
    let mut shape = [1, 1, 1, 1];
    shape[dim] = e;
    // y / e in f64, rounded once to f32, as PyTorch multiplies an f32 tensor by a Python float.
    let ramp = |f: fn(f64) -> f64| {
        let values: Vec<f32> = (0..e).map(|y| f(y as f64 / e as f64) as f32).collect();
        Tensor::<4>::from_data(TensorData::new(values, shape), &b.device())
    };
    let fade_in = ramp(|r| r);
    let fade_out = ramp(|r| 1.0 - r);
    let a_end = a.clone().narrow(dim, a.dims()[dim] - e, e);
    let n = b.dims()[dim];
    let b_start = b.clone().narrow(dim, 0, e);
    let blended = a_end * fade_out + b_start * fade_in;
    if n == e { blended } else { Tensor::cat(vec![blended, b.narrow(dim, e, n - e)], dim) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn ramp_image(h: usize, w: usize) -> Tensor<4> {
        let values: Vec<f32> = (0..h * w).map(|i| i as f32).collect();
        Tensor::from_data(TensorData::new(values, [1, 1, h, w]), &Device::flex())
    }

    /// With an identity-like pass (each tile upsampled ×2 by repetition, which tiling cannot
    /// tell from an untiled pass), blending equal overlaps gives back the untiled result.
    #[test]
    fn a_pass_that_ignores_tile_borders_is_reassembled_exactly() {
        let x = ramp_image(14, 10);
        let up = |t: Tensor<4>| crate::nn::upsample_nearest_2x(t);
        let whole: Vec<f32> = up(x.clone()).into_data().try_to_vec::<f32>().unwrap();
        let tiles = Tiles { input: 8, output: 16 };
        let got: Vec<f32> = tiled(x, tiles, |t, _| up(t)).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(got.len(), whole.len());
        let worst = got.iter().zip(&whole).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-4, "max diff {worst}");
    }

    /// Each tile's output is the tile's own mean, so the blend is visible: rows near a seam
    /// mix the two tiles' values linearly, as diffusers' `blend_v` does.
    #[test]
    fn seams_fade_linearly_between_tiles() {
        let x = ramp_image(12, 4);
        let mean_pass = |t: Tensor<4>| {
            let [b, c, h, w] = t.dims();
            t.mean().reshape([1, 1, 1, 1]).expand([b, c, h, w])
        };
        let tiles = Tiles { input: 8, output: 8 };
        let got: Vec<f32> = tiled(x, tiles, |t, _| mean_pass(t)).into_data().try_to_vec::<f32>().unwrap();
        // Tiles start at rows 0 and 6 (stride 6): means of rows 0..8 and 6..12.
        let first = (0..32).sum::<usize>() as f32 / 32.0;
        let second = (24..48).sum::<usize>() as f32 / 24.0;
        // Kept: rows 0..6 of the first tile, then rows 0..6 of the second, whose first two
        // rows are blended: a·(1 − y/2) + b·(y/2).
        let row = |r: usize| got[r * 4];
        for r in 0..6 {
            assert_eq!(row(r), first);
        }
        assert_eq!(row(6), first);
        assert!((row(7) - (first * 0.5 + second * 0.5)).abs() < 1e-5);
        for r in 8..12 {
            assert_eq!(row(r), second);
        }
        assert!(Tiles { input: 8, output: 8 }.needed_for(12, 4));
        assert!(!Tiles { input: 8, output: 8 }.needed_for(8, 8));
    }
}
