//! Our kernels on the CPU: burn's `Flex` backend, natively (rayon over the cores) and in the
//! browser's wasm (one thread, SIMD128).
//!
//! burn-flex's convolution converts the input to NHWC, re-lays the weight out and copies each
//! 512-pixel tile's result back on every call (BENCHMARKS.md, issue 30's profile). Ours keeps
//! PyTorch's NCHW throughout: the weight `[c_out, c_in·kh·kw]` is already the GEMM's left
//! matrix, each tile of whole output rows is unfolded (im2col, row copies with zero edges) into
//! a `[c_in·kh·kw, pixels]` block, and the GEMM (the `gemm` crate, burn-flex's own) writes
//! straight into the output, on top of the bias it was filled with.

use burn::backend::Flex;
use burn::backend::ops::QTensorOps;
use burn::backend::tensor::{FloatTensor, QuantizedTensor};
use burn::tensor::FloatDType;
use burn::tensor::TensorData;
use burn_flex::FlexTensor;

use super::Kernels;
use super::conv2d::output_shape;

/// Output pixels per im2col tile: the unfolded block (`c_in·kh·kw` values a pixel) stays
/// within ~256 KB, well inside one core's L2.
const TILE_VALUES: usize = 64 * 1024;

impl Kernels for Flex {
    fn group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f32,
        silu: bool,
    ) -> FloatTensor<Self> {
        let dims = dims::<4>(&x);
        let out = group_norm(values(&x), dims, values(&gamma), values(&beta), groups, eps, silu);
        tensor(out, dims)
    }

    fn conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        padding: [usize; 4],
        has_bias: bool,
    ) -> FloatTensor<Self> {
        let (x_dims, w_dims) = (dims::<4>(&x), dims::<4>(&weight));
        let bias = has_bias.then(|| values(&bias));
        let (out, dims) = conv2d(values(&x), x_dims, values(&weight), w_dims, bias, stride, padding);
        tensor(out, dims)
    }

    fn quantized_conv2d(
        x: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        weight_shape: [usize; 4],
        bias: FloatTensor<Self>,
        stride: usize,
        padding: [usize; 4],
        has_bias: bool,
    ) -> FloatTensor<Self> {
        let weight = Flex::dequantize(weight, FloatDType::F32);
        let x_dims = dims::<4>(&x);
        let bias = has_bias.then(|| values(&bias));
        let (out, dims) = conv2d(values(&x), x_dims, values(&weight), weight_shape, bias, stride, padding);
        tensor(out, dims)
    }

    fn quantized_linear(
        x: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        bias: FloatTensor<Self>,
        d_out: usize,
        has_bias: bool,
    ) -> FloatTensor<Self> {
        let weight = Flex::dequantize(weight, FloatDType::F32);
        let [rows, d_in] = dims::<2>(&x);
        let bias = has_bias.then(|| values(&bias));
        let out = linear(values(&x), rows, d_in, values(&weight), d_out, bias);
        tensor(out, [rows, d_out])
    }

    fn attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        let ([b, nq, c], [_, nk, _], [_, _, c_v]) = (dims::<3>(&q), dims::<3>(&k), dims::<3>(&v));
        let out = attention(values(&q), values(&k), values(&v), [b, nq, nk], c / heads, c_v / heads, heads);
        tensor(out, [b, nq, c_v])
    }
}

/// The shape of a Flex tensor as `D` sizes.
fn dims<const D: usize>(t: &FlexTensor) -> [usize; D] {
    let shape = t.layout().shape();
    std::array::from_fn(|i| shape[i])
}

/// A Flex tensor's f32 values in row-major order, without a copy when it is contiguous.
fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    let n = t.layout().num_elements();
    if t.layout().is_contiguous() {
        let start = t.layout().start_offset();
        std::borrow::Cow::Borrowed(&t.storage::<f32>()[start..start + n])
    } else {
        let t = t.to_contiguous();
        let start = t.layout().start_offset();
        std::borrow::Cow::Owned(t.storage::<f32>()[start..start + n].to_vec())
    }
}

fn tensor<const D: usize>(values: Vec<f32>, dims: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, dims))
}

/// A raw pointer that tiles writing disjoint parts of one output may share across threads.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

impl SharedOut {
    /// The element at `offset` (a method, so closures capture the whole `Sync` wrapper).
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers stay within the buffer.
        unsafe { self.0.add(offset) }
    }
}
// SAFETY: every user writes only its own tile's elements (disjoint ranges), and the buffer
// outlives the parallel loop.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// Runs `job(i)` for `i in 0..count`, on every core natively and in turn in wasm.
fn for_each_job(count: usize, job: impl Fn(usize) + Send + Sync) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        (0..count).into_par_iter().for_each(job);
    }
    #[cfg(target_arch = "wasm32")]
    (0..count).for_each(job);
}

/// `dst = lhs · rhs (+ dst when accumulate)`, row-major operands given by their row strides, on
/// this thread.
///
/// # Safety
/// `dst` must hold `m` rows of `n` at stride `dst_rs`, and be written by no one else meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_rows(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: &[f32],
    lhs_cs: usize,
    lhs_rs: usize,
    rhs: &[f32],
    rhs_cs: usize,
    rhs_rs: usize,
) {
    // SAFETY: the caller vouches for `dst`; `lhs`/`rhs` are slices the strides stay within.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `torch.nn.functional.conv2d` (one group, no dilation) of `x` `[batch, c_in, h, w]` with
/// `weight` `[c_out, c_in, kh, kw]`; `padding` is `[top, bottom, left, right]`. Returns the
/// output and its dims.
pub fn conv2d(
    x: impl AsRef<[f32]>,
    x_dims: [usize; 4],
    weight: impl AsRef<[f32]>,
    w_dims: [usize; 4],
    bias: Option<impl AsRef<[f32]>>,
    stride: usize,
    padding: [usize; 4],
) -> (Vec<f32>, [usize; 4]) {
    let (x, weight) = (x.as_ref(), weight.as_ref());
    let [batch, c_in, h, w] = x_dims;
    let [c_out, w_c_in, kh, kw] = w_dims;
    assert_eq!(c_in, w_c_in, "conv2d: the input has {c_in} channels, the weight {w_c_in}");
    let out_dims = output_shape(&burn::tensor::Shape::new(x_dims), &burn::tensor::Shape::new(w_dims), stride, padding);
    let [_, _, oh, ow] = std::array::from_fn(|i| out_dims[i]);
    let (pixels, k) = (oh * ow, c_in * kh * kw);
    let mut out = vec![0.0f32; batch * c_out * pixels];
    if let Some(bias) = &bias {
        for (plane, &b) in out.chunks_exact_mut(pixels).zip(bias.as_ref().iter().cycle()) {
            plane.fill(b);
        }
    }
    let accumulate = bias.is_some();
    if pixels == 0 || c_out == 0 {
        return (out, [batch, c_out, oh, ow]);
    }

    // A pointwise convolution is a GEMM on the input as it lies.
    if kh == 1 && kw == 1 && stride == 1 && padding == [0; 4] {
        let dst = SharedOut(out.as_mut_ptr());
        // Column tiles so both cores work even at batch 1.
        let cols = pixels.div_ceil(jobs_wanted(batch)).max(64).min(pixels);
        let tiles = pixels.div_ceil(cols);
        for_each_job(batch * tiles, |job| {
            let (b, t) = (job / tiles, job % tiles);
            let (p0, n) = (t * cols, cols.min(pixels - t * cols));
            let rhs = &x[b * c_in * pixels + p0..];
            // SAFETY: columns p0..p0+n of image b's c_out rows are this job's alone.
            unsafe {
                let dst = dst.at(b * c_out * pixels + p0);
                gemm_rows(c_out, n, c_in, dst, pixels, accumulate, weight, 1, c_in, rhs, 1, pixels);
            }
        });
        return (out, [batch, c_out, oh, ow]);
    }

    // Whole output rows per tile, as many as fit TILE_VALUES, fewer when that leaves a core idle.
    let rows_per_tile =
        (TILE_VALUES / (k * ow).max(1)).clamp(1, oh).min(oh.div_ceil(jobs_wanted(batch).div_ceil(batch)).max(1));
    let tiles = oh.div_ceil(rows_per_tile);
    let dst = SharedOut(out.as_mut_ptr());
    let [top, _, left, _] = padding;
    for_each_job(batch * tiles, |job| {
        let (b, t) = (job / tiles, job % tiles);
        let y0 = t * rows_per_tile;
        let rows = rows_per_tile.min(oh - y0);
        let n = rows * ow;
        let mut col = vec![0.0f32; k * n];
        let image = &x[b * c_in * h * w..(b + 1) * c_in * h * w];
        for (row, block) in col.chunks_exact_mut(n).enumerate() {
            let (ci, ky, kx) = (row / (kh * kw), row / kw % kh, row % kw);
            let plane = &image[ci * h * w..(ci + 1) * h * w];
            for (r, dst) in block.chunks_exact_mut(ow).enumerate() {
                let iy = ((y0 + r) * stride + ky) as isize - top as isize;
                if iy < 0 || iy >= h as isize {
                    continue; // stays zero: padding
                }
                let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                unfold_row(dst, src, stride, kx as isize - left as isize);
            }
        }
        // SAFETY: rows y0..y0+rows of image b's c_out planes are this job's alone.
        unsafe {
            let dst = dst.at(b * c_out * pixels + y0 * ow);
            gemm_rows(c_out, n, k, dst, pixels, accumulate, weight, 1, k, &col, 1, n);
        }
    });
    (out, [batch, c_out, oh, ow])
}

/// How many jobs keep every core busy (one per image is enough when there are as many images).
fn jobs_wanted(batch: usize) -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    let threads = rayon::current_num_threads();
    #[cfg(target_arch = "wasm32")]
    let threads = 1;
    (2 * threads).max(batch)
}

/// `dst[x] = src[x·stride + offset]`, zero where that falls outside `src` (the padding).
fn unfold_row(dst: &mut [f32], src: &[f32], stride: usize, offset: isize) {
    let w = src.len() as isize;
    if stride == 1 {
        // The valid run [lo, hi) of dst, copied in one go.
        let lo = (-offset).clamp(0, dst.len() as isize) as usize;
        let hi = (w - offset).clamp(lo as isize, dst.len() as isize) as usize;
        dst[lo..hi].copy_from_slice(&src[(lo as isize + offset) as usize..(hi as isize + offset) as usize]);
        return;
    }
    for (x, d) in dst.iter_mut().enumerate() {
        let ix = (x * stride) as isize + offset;
        if (0..w).contains(&ix) {
            *d = src[ix as usize];
        }
    }
}

/// `x` `[rows, d_in]` times `weight` `[d_out, d_in]` transposed, plus `bias`.
pub fn linear(
    x: impl AsRef<[f32]>,
    rows: usize,
    d_in: usize,
    weight: impl AsRef<[f32]>,
    d_out: usize,
    bias: Option<impl AsRef<[f32]>>,
) -> Vec<f32> {
    let (x, weight) = (x.as_ref(), weight.as_ref());
    let mut out = vec![0.0f32; rows * d_out];
    if let Some(bias) = &bias {
        for row in out.chunks_exact_mut(d_out) {
            row.copy_from_slice(bias.as_ref());
        }
    }
    if rows == 0 || d_out == 0 {
        return out;
    }
    let per_job = rows.div_ceil(jobs_wanted(1)).max(16);
    let jobs = rows.div_ceil(per_job);
    let dst = SharedOut(out.as_mut_ptr());
    let accumulate = bias.is_some();
    for_each_job(jobs, |job| {
        let r0 = job * per_job;
        let m = per_job.min(rows - r0);
        // SAFETY: rows r0..r0+m of the output are this job's alone.
        unsafe {
            let dst = dst.at(r0 * d_out);
            gemm_rows(m, d_out, d_in, dst, d_out, accumulate, &x[r0 * d_in..], 1, d_in, weight, d_in, 1);
        }
    });
    out
}

/// GroupNorm over `[batch, channels, h, w]` with per-channel `gamma`/`beta`, then SiLU when
/// `silu`: two passes for the statistics and one that writes the output.
pub fn group_norm(
    x: impl AsRef<[f32]>,
    dims: [usize; 4],
    gamma: impl AsRef<[f32]>,
    beta: impl AsRef<[f32]>,
    groups: usize,
    eps: f32,
    silu: bool,
) -> Vec<f32> {
    let (x, gamma, beta) = (x.as_ref(), gamma.as_ref(), beta.as_ref());
    let [batch, channels, h, w] = dims;
    let plane = h * w;
    let per_group = channels / groups * plane;
    let mut out = vec![0.0f32; x.len()];
    if out.is_empty() {
        return out;
    }
    let dst = SharedOut(out.as_mut_ptr());
    for_each_job(batch * groups, |job| {
        let src = &x[job * per_group..(job + 1) * per_group];
        // Two passes (the mean, then the spread about it).
        let mean = sum_lanes(src, |v| v) / per_group as f64;
        let m = mean as f32;
        let var = sum_lanes(src, |v| (v - m) * (v - m)) / per_group as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        let first_channel = job % groups * (channels / groups);
        // SAFETY: this group's elements are this job's alone.
        let out = unsafe { std::slice::from_raw_parts_mut(dst.at(job * per_group), per_group) };
        for (c, (o, s)) in out.chunks_exact_mut(plane).zip(src.chunks_exact(plane)).enumerate() {
            let (scale, shift) = (gamma[first_channel + c] * inv as f32, beta[first_channel + c]);
            // (v − mean)·scale + β, not v·scale + (β − mean·scale): a constant group gives β exactly.
            if silu {
                for (o, &v) in o.iter_mut().zip(s) {
                    let y = (v - m) * scale + shift;
                    *o = y / (1.0 + (-y).exp());
                }
            } else {
                for (o, &v) in o.iter_mut().zip(s) {
                    *o = (v - m) * scale + shift;
                }
            }
        }
    });
    out
}

/// `Σ f(v)` over `values`: 16 f32 lanes (vectorised) over blocks of 1024, the blocks in f64.
fn sum_lanes(values: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    values
        .chunks(1024)
        .map(|block| {
            let mut lanes = [0.0f32; 16];
            let mut chunks = block.chunks_exact(16);
            for chunk in &mut chunks {
                for (lane, &v) in lanes.iter_mut().zip(chunk) {
                    *lane += f(v);
                }
            }
            let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
            lanes.iter().sum::<f32>() as f64 + tail as f64
        })
        .sum()
}

/// Query rows a job takes at once: its `rows × keys` scores stay within ~256 KB.
const SCORE_VALUES: usize = 64 * 1024;

/// softmax(Q Kᵀ/√d) V for each head, on `[batch, tokens, heads × d]` row-major tensors
/// (`dims` = `[batch, queries, keys]`, `d` the query/key width of a head, `d_v` the value
/// width), into `[batch, queries, heads × d_v]`. A job takes one head and a block of query
/// rows: one GEMM for the block's scores, the softmax in place, one GEMM into the output's
/// columns for that head, then the rows divided by their sums. No head is split or merged by a
/// copy: the GEMMs read each head's columns through their strides.
pub fn attention(
    q: impl AsRef<[f32]>,
    k: impl AsRef<[f32]>,
    v: impl AsRef<[f32]>,
    dims: [usize; 3],
    d: usize,
    d_v: usize,
    heads: usize,
) -> Vec<f32> {
    let (q, k, v) = (q.as_ref(), k.as_ref(), v.as_ref());
    let [batch, nq, nk] = dims;
    let (c, c_v) = (heads * d, heads * d_v);
    let mut out = vec![0.0f32; batch * nq * c_v];
    if out.is_empty() {
        return out;
    }
    let scale = 1.0 / (d as f32).sqrt();
    let per_image = (batch * heads).max(1);
    let rows =
        (SCORE_VALUES / nk.max(1)).clamp(1, nq).min(nq.div_ceil(jobs_wanted(per_image).div_ceil(per_image)).max(1));
    let blocks = nq.div_ceil(rows);
    let dst = SharedOut(out.as_mut_ptr());
    for_each_job(batch * heads * blocks, |job| {
        let (b, h, block) = (job / (heads * blocks), job / blocks % heads, job % blocks);
        let r0 = block * rows;
        let m = rows.min(nq - r0);
        let mut scores = vec![0.0f32; m * nk];
        let q_block = &q[(b * nq + r0) * c + h * d..];
        let k_head = &k[b * nk * c + h * d..];
        let v_head = &v[b * nk * c_v + h * d_v..];
        // SAFETY: `scores` is this job's own m × nk buffer.
        unsafe { gemm_scaled(m, nk, d, scores.as_mut_ptr(), nk, q_block, 1, c, k_head, c, 1, scale) };
        let mut sums = Vec::with_capacity(m);
        for row in scores.chunks_exact_mut(nk) {
            sums.push(softmax_numerator(row));
        }
        // SAFETY: head h's columns of rows r0..r0+m are this job's alone.
        unsafe {
            let o = dst.at((b * nq + r0) * c_v + h * d_v);
            gemm_rows(m, d_v, nk, o, c_v, false, &scores, 1, nk, v_head, 1, c_v);
            for (i, sum) in sums.iter().enumerate() {
                let row = std::slice::from_raw_parts_mut(o.add(i * c_v), d_v);
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|x| *x *= inv);
            }
        }
    });
    out
}

/// `dst = scale · lhs · rhs` (see [`gemm_rows`]).
///
/// # Safety
/// As [`gemm_rows`].
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_scaled(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: &[f32],
    lhs_cs: usize,
    lhs_rs: usize,
    rhs: &[f32],
    rhs_cs: usize,
    rhs_rs: usize,
    scale: f32,
) {
    // SAFETY: as gemm_rows.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `row = exp(row − max(row))` in place; returns the row's sum (softmax's denominator).
/// Compiled for AVX-512 or AVX2 + FMA where the processor has them (natively the build
/// targets x86-64's SSE2 baseline), SIMD128 in the browser.
fn softmax_numerator(row: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor has AVX-512F.
            return unsafe { softmax_numerator_avx512(row) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the processor has AVX2 and FMA.
            return unsafe { softmax_numerator_avx2(row) };
        }
    }
    softmax_numerator_lanes(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn softmax_numerator_avx512(row: &mut [f32]) -> f32 {
    softmax_numerator_lanes(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_numerator_avx2(row: &mut [f32]) -> f32 {
    softmax_numerator_lanes(row)
}

/// [`softmax_numerator`] written in 16 independent lanes, so the compiler vectorises it for
/// whichever instruction set the caller was compiled for.
#[inline(always)]
fn softmax_numerator_lanes(row: &mut [f32]) -> f32 {
    const LANES: usize = 16;
    let mut maxes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &x) in maxes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = chunks.remainder().iter().chain(&maxes).fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    let mut sums = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (sum, x) in sums.iter_mut().zip(chunk) {
            *x = exp(*x - max);
            *sum += *x;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp(*x - max);
        sum += *x;
    }
    sum
}

/// `e^x` for `x ≤ 0` (softmax's shifted scores) to within 2 ulp, in arithmetic the compiler
/// vectorises (libm's `expf` is a call per value): `2^n · p(r)` with `x = n·ln 2 + r`,
/// `|r| ≤ ln 2 / 2` and `p` Cephes' degree-6 polynomial.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const ROUNDER: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let x = if x > -87.0 { x } else { -87.0 };
    let t = x * std::f32::consts::LOG2_E + ROUNDER;
    let n = t - ROUNDER;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let p = p * r * r + r + 1.0;
    // n sits in t's low mantissa bits: 2^n's exponent field without a float-to-int cast.
    let two_n = (t.to_bits().wrapping_sub(ROUNDER.to_bits()).wrapping_add(127)) << 23;
    f32::from_bits(two_n) * p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm_over_softmaxs_range() {
        let mut worst = 0.0f32;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let (ours, libm) = (exp(x), x.exp());
            worst = worst.max((ours - libm).abs() / libm);
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NEG_INFINITY) >= 0.0 && exp(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn softmax_numerator_sums_what_it_writes() {
        for n in [1, 15, 16, 17, 1024, 1031] {
            let mut row: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin() * 20.0).collect();
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let want: Vec<f32> = row.iter().map(|&x| (x - max).exp()).collect();
            let sum = softmax_numerator(&mut row);
            let diff = row.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(diff < 1e-6, "n = {n}: {diff}");
            assert!((sum - want.iter().sum::<f32>()).abs() < 1e-4 * sum, "n = {n}");
        }
    }
}
