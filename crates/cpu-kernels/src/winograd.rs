//! 3×3 convolutions (stride 1, padding 1) by Winograd's minimal filtering F(2×2, 3×3) (Lavin &
//! Gray, "Fast Algorithms for Convolutional Neural Networks", 2015): each 2×2 block of output
//! pixels comes from a 4×4 block of input as `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, so the products
//! become 16 GEMMs `M_ξ = U_ξ · V_ξ` (`U_ξ` `[c_out, c_in]`, `V_ξ` `[c_in, blocks]`) with 2.25×
//! fewer multiplications than the direct convolution's single GEMM, and no im2col copy (each
//! input value is read into 4 blocks instead of 9 columns). The transforms have only ±1 and ½
//! coefficients, so the results stay within a few ulp of the direct ones. Every 3×3 convolution
//! of the UNet, ControlNet and VAE is of this kind.

use crate::{SharedOut, for_each_job, gemm_rows, jobs_wanted, with_scratch};

/// Output blocks' values per band (the band's transformed input and products), ~1 MB: within a
/// core's L2 on the machines we measure.
const BAND_VALUES: usize = 256 * 1024;

/// Whether [`conv3x3`] serves this convolution: 3×3, stride 1, padding 1, enough channels that
/// the GEMMs dominate the transforms, and enough pixels that its GEMMs are wide.
pub(crate) fn applies(
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    kernel: [usize; 2],
    stride: usize,
    padding: [usize; 4],
) -> bool {
    // Below 64² (the UNet's levels at 256²) the band GEMMs are too narrow, and from 16 input
    // channels (the ControlNet's 256² control embedding) the transforms outweigh them: both
    // measured slower.
    kernel == [3, 3] && stride == 1 && padding == [1; 4] && c_in >= 32 && c_out >= 16 && h * w >= 64 * 64
}

/// `U_ξ = G g Gᵀ` for every output and input channel, as 16 matrices `[c_out, c_in]`.
fn transform_weight(weight: &[f32], c_out: usize, c_in: usize) -> Vec<f32> {
    let mut u = vec![0.0f32; 16 * c_out * c_in];
    for (pair, g) in weight.chunks_exact(9).enumerate() {
        // G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]; rows of G g first (4 × 3).
        let mut gg = [[0.0f32; 3]; 4];
        for j in 0..3 {
            let (a, b, c) = (g[j], g[3 + j], g[6 + j]);
            gg[0][j] = a;
            gg[1][j] = 0.5 * (a + b + c);
            gg[2][j] = 0.5 * (a - b + c);
            gg[3][j] = c;
        }
        for (i, row) in gg.iter().enumerate() {
            let [a, b, c] = *row;
            let t = [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
            for (j, v) in t.into_iter().enumerate() {
                u[(i * 4 + j) * c_out * c_in + pair] = v; // pair = oc · c_in + ci
            }
        }
    }
    u
}

/// The convolution of `image` `[c_in, h, w]` into `out` (`[c_out, h, w]` at `dst`, already
/// holding the bias when `accumulate`), for every image of the batch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv3x3(
    x: &[f32],
    batch: usize,
    c_in: usize,
    h: usize,
    w: usize,
    weight: &[f32],
    c_out: usize,
    out: &mut [f32],
    accumulate: bool,
) {
    let u = transform_weight(weight, c_out, c_in);
    let (bh, bw) = (h.div_ceil(2), w.div_ceil(2)); // 2×2 output blocks down and across
    // Block rows per band: the band's V and M within BAND_VALUES, and enough bands for the cores.
    let per_row = 16 * (c_in + c_out) * bw;
    let rows = (BAND_VALUES / per_row).clamp(1, bh).min(bh.div_ceil(jobs_wanted(batch).div_ceil(batch)).max(1));
    let bands = bh.div_ceil(rows);
    let dst = SharedOut(out.as_mut_ptr());
    for_each_job(batch * bands, |job| {
        let (b, band) = (job / bands, job % bands);
        let r0 = band * rows;
        let nr = rows.min(bh - r0);
        let n = nr * bw; // blocks in this band
        let image = &x[b * c_in * h * w..(b + 1) * c_in * h * w];
        with_scratch(16 * (c_in + c_out) * n + 4 * (2 * bw + 2), |scratch| {
            let (v, rest) = scratch.split_at_mut(16 * c_in * n);
            let (m, rows4) = rest.split_at_mut(16 * c_out * n);
            // rows4: the input's four column-transformed rows, later the output's two rows.
            input_transform(image, c_in, h, w, r0, nr, bw, v, rows4);
            for xi in 0..16 {
                let (ux, vx) = (&u[xi * c_out * c_in..][..c_out * c_in], &v[xi * c_in * n..][..c_in * n]);
                // SAFETY: m's ξ-th [c_out, n] matrix is this job's scratch.
                unsafe {
                    gemm_rows(c_out, n, c_in, m[xi * c_out * n..].as_mut_ptr(), n, false, ux, 1, c_in, vx, 1, n, 1.0)
                };
            }
            // SAFETY: output rows 2·r0 .. 2·(r0 + nr) of image b are this job's alone.
            unsafe { output_transform(m, c_out, h, w, r0, nr, bw, dst, b * c_out * h * w, accumulate, rows4) };
        });
    });
}

/// `V_ξ[ci, block] = (Bᵀ d B)_ξ` for the band's blocks, `d` the 4×4 input (zero outside the
/// image) at rows `2·row − 1 ..` and columns `2·col − 1 ..` of each block.
#[allow(clippy::too_many_arguments)]
fn input_transform(
    image: &[f32],
    c_in: usize,
    h: usize,
    w: usize,
    r0: usize,
    nr: usize,
    bw: usize,
    v: &mut [f32],
    rows4: &mut [f32],
) {
    let n = nr * bw;
    let padded = 2 * bw + 2; // columns −1 ..= 2·bw, zero outside the image
    for ci in 0..c_in {
        let plane = &image[ci * h * w..(ci + 1) * h * w];
        for r in 0..nr {
            // Bᵀ d down the columns: t0 = d0 − d2, t1 = d1 + d2, t2 = d2 − d1, t3 = d1 − d3.
            let y = 2 * (r0 + r) as isize - 1;
            let (t, _) = rows4.split_at_mut(4 * padded);
            let (t0, t) = t.split_at_mut(padded);
            let (t1, t) = t.split_at_mut(padded);
            let (t2, t3) = t.split_at_mut(padded);
            let row = |k: isize| -> Option<&[f32]> {
                let iy = y + k;
                (0..h as isize).contains(&iy).then(|| &plane[iy as usize * w..][..w])
            };
            let d = [row(0), row(1), row(2), row(3)];
            column_transform(t0, t1, t2, t3, d, w);
            // d B across: v0 = t[c−1] − t[c+1], v1 = t[c] + t[c+1], v2 = t[c+1] − t[c], v3 = t[c] − t[c+2].
            for (i, t) in [&*t0, &*t1, &*t2, &*t3].into_iter().enumerate() {
                let at = |j: usize| (i * 4 + j) * c_in * n + ci * n + r * bw;
                let [o0, o1, o2, o3] = [at(0), at(1), at(2), at(3)];
                for c in 0..bw {
                    let (a, b, cc, d) = (t[2 * c], t[2 * c + 1], t[2 * c + 2], t[2 * c + 3]);
                    v[o0 + c] = a - cc;
                    v[o1 + c] = b + cc;
                    v[o2 + c] = cc - b;
                    v[o3 + c] = b - d;
                }
            }
        }
    }
}

/// Down the four input rows `d` (None: outside the image) into `t0..t3`, each `2·bw + 2` wide
/// with column −1 at index 0 and zeros outside the image's `w` columns.
fn column_transform(t0: &mut [f32], t1: &mut [f32], t2: &mut [f32], t3: &mut [f32], d: [Option<&[f32]>; 4], w: usize) {
    for t in [&mut *t0, &mut *t1, &mut *t2, &mut *t3] {
        t.fill(0.0);
    }
    let zero = [0.0f32; 0];
    let get = |k: usize| d[k].unwrap_or(&zero);
    let (d0, d1, d2, d3) = (get(0), get(1), get(2), get(3));
    let value = |row: &[f32], x: usize| row.get(x).copied().unwrap_or(0.0);
    if d0.len() == w && d1.len() == w && d2.len() == w && d3.len() == w {
        // Every row inside the image (all but the edges): straight loops the compiler vectorises.
        for x in 0..w {
            t0[x + 1] = d0[x] - d2[x];
            t1[x + 1] = d1[x] + d2[x];
            t2[x + 1] = d2[x] - d1[x];
            t3[x + 1] = d1[x] - d3[x];
        }
        return;
    }
    for x in 0..w {
        let (a, b, c, e) = (value(d0, x), value(d1, x), value(d2, x), value(d3, x));
        t0[x + 1] = a - c;
        t1[x + 1] = b + c;
        t2[x + 1] = c - b;
        t3[x + 1] = b - e;
    }
}

/// `Y = Aᵀ M A` per block, added to (or written over) the output rows of the band.
///
/// # Safety
/// `dst` at `base` must hold this image's `[c_out, h, w]` output, whose rows of this band no one
/// else writes meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn output_transform(
    m: &[f32],
    c_out: usize,
    h: usize,
    w: usize,
    r0: usize,
    nr: usize,
    bw: usize,
    dst: SharedOut,
    base: usize,
    accumulate: bool,
    y: &mut [f32],
) {
    let n = nr * bw;
    let (y0, rest) = y.split_at_mut(2 * bw); // the block rows' top output row, interleaved
    let y1 = &mut rest[..2 * bw]; // and their bottom one
    for oc in 0..c_out {
        for r in 0..nr {
            let g: [&[f32]; 16] = std::array::from_fn(|xi| &m[xi * c_out * n + oc * n + r * bw..][..bw]);
            // Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]] down (s), then across.
            for c in 0..bw {
                let s0: [f32; 4] = std::array::from_fn(|j| g[j][c] + g[4 + j][c] + g[8 + j][c]);
                let s1: [f32; 4] = std::array::from_fn(|j| g[4 + j][c] - g[8 + j][c] - g[12 + j][c]);
                y0[2 * c] = s0[0] + s0[1] + s0[2];
                y0[2 * c + 1] = s0[1] - s0[2] - s0[3];
                y1[2 * c] = s1[0] + s1[1] + s1[2];
                y1[2 * c + 1] = s1[1] - s1[2] - s1[3];
            }
            for (dy, values) in [&*y0, &*y1].into_iter().enumerate() {
                let row = 2 * (r0 + r) + dy;
                if row >= h {
                    continue;
                }
                // SAFETY: row `row` of channel oc lies in this band's rows of the output.
                let out = unsafe { std::slice::from_raw_parts_mut(dst.at(base + (oc * h + row) * w), w) };
                if accumulate {
                    out.iter_mut().zip(values).for_each(|(o, v)| *o += v);
                } else {
                    out.copy_from_slice(&values[..w]);
                }
            }
        }
    }
}
