//! adcanvas's CPU kernels on plain f32 slices (PyTorch's row-major layouts): the convolution,
//! linear, attention, GroupNorm and GEGLU that the crate's `kernels::cpu` plugs into burn's CPU
//! backend. A crate of their own so the browser build compiles them for speed (opt-level 3)
//! while the rest of the wasm stays size-optimised; natively they use every core (rayon) and
//! pick AVX-512 or AVX2 + FMA at run time.
//!
//! The GEMMs are the `gemm` crate's (burn-flex's own). The convolution keeps NCHW: each tile of
//! whole output rows is unfolded (im2col by row copies with zero edges) into a
//! `[c_in·kh·kw, pixels]` block and one GEMM per tile writes straight into the output, on top
//! of the bias it was filled with; the weight `[c_out, c_in·kh·kw]` is already its left matrix.
//! 3×3 convolutions with padding 1 on images of 64² or more take Winograd's F(2×2, 3×3)
//! instead ([`winograd`]): 2.25× fewer multiplications and no unfolded copy.

/// Defines `fn $name(args) -> ret` that runs `$body` (an `#[inline(always)]` function written
/// in independent lanes) compiled for AVX-512 or AVX2 + FMA where the processor has them (the
/// native build targets x86-64's SSE2 baseline), as it is elsewhere (SIMD128 in wasm).
macro_rules! multiversion {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $body:ident;) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the processor has AVX-512F.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the processor has AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

mod winograd;

/// Output pixels per im2col tile: the unfolded block (`c_in·kh·kw` values a pixel) stays
/// within ~256 KB, well inside one core's L2.
const TILE_VALUES: usize = 64 * 1024;

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

/// `dst = scale · lhs · rhs (+ dst when accumulate)`, each operand given by its column and row
/// strides (the destination's columns contiguous), on this thread.
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
    scale: f32,
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
            scale,
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
    conv2d_by(x.as_ref(), x_dims, weight.as_ref(), w_dims, bias.as_ref().map(|b| b.as_ref()), stride, padding, true)
}

/// [`conv2d`], with Winograd's algorithm where it applies only when `winograd` (the tests
/// compare the two).
#[allow(clippy::too_many_arguments)]
fn conv2d_by(
    x: &[f32],
    x_dims: [usize; 4],
    weight: &[f32],
    w_dims: [usize; 4],
    bias: Option<&[f32]>,
    stride: usize,
    padding: [usize; 4],
    winograd: bool,
) -> (Vec<f32>, [usize; 4]) {
    let [batch, c_in, h, w] = x_dims;
    let [c_out, w_c_in, kh, kw] = w_dims;
    assert_eq!(c_in, w_c_in, "conv2d: the input has {c_in} channels, the weight {w_c_in}");
    let [top, bottom, left, right] = padding;
    assert!(
        stride > 0 && h + top + bottom >= kh && w + left + right >= kw,
        "conv2d: a {kh}×{kw} kernel is larger than the padded {h}×{w} input"
    );
    let (oh, ow) = ((h + top + bottom - kh) / stride + 1, (w + left + right - kw) / stride + 1);
    let (pixels, k) = (oh * ow, c_in * kh * kw);
    let mut out = vec![0.0f32; batch * c_out * pixels];
    if let Some(bias) = &bias {
        for (plane, &b) in out.chunks_exact_mut(pixels).zip(bias.iter().cycle()) {
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
                gemm_rows(c_out, n, c_in, dst, pixels, accumulate, weight, 1, c_in, rhs, 1, pixels, 1.0);
            }
        });
        return (out, [batch, c_out, oh, ow]);
    }

    // 3×3, stride 1, padding 1: Winograd's F(2×2, 3×3), 2.25× fewer multiplications.
    if winograd && winograd::applies(c_in, c_out, h, w, [kh, kw], stride, padding) {
        winograd::conv3x3(x, batch, c_in, h, w, weight, c_out, &mut out, accumulate);
        return (out, [batch, c_out, oh, ow]);
    }

    // Whole output rows per tile, as many as fit TILE_VALUES, fewer when that leaves a core idle.
    let rows_per_tile =
        (TILE_VALUES / (k * ow).max(1)).clamp(1, oh).min(oh.div_ceil(jobs_wanted(batch).div_ceil(batch)).max(1));
    let tiles = oh.div_ceil(rows_per_tile);
    let dst = SharedOut(out.as_mut_ptr());
    for_each_job(batch * tiles, |job| {
        let (b, t) = (job / tiles, job % tiles);
        let y0 = t * rows_per_tile;
        let rows = rows_per_tile.min(oh - y0);
        let n = rows * ow;
        let image = &x[b * c_in * h * w..(b + 1) * c_in * h * w];
        with_scratch(k * n, |col| {
            for (row, block) in col.chunks_exact_mut(n).enumerate() {
                let (ci, ky, kx) = (row / (kh * kw), row / kw % kh, row % kw);
                let plane = &image[ci * h * w..(ci + 1) * h * w];
                for (r, dst) in block.chunks_exact_mut(ow).enumerate() {
                    let iy = ((y0 + r) * stride + ky) as isize - top as isize;
                    match (0..h as isize).contains(&iy) {
                        true => unfold_row(dst, &plane[iy as usize * w..][..w], stride, kx as isize - left as isize),
                        false => dst.fill(0.0), // a padding row
                    }
                }
            }
            // SAFETY: rows y0..y0+rows of image b's c_out planes are this job's alone.
            unsafe {
                let dst = dst.at(b * c_out * pixels + y0 * ow);
                gemm_rows(c_out, n, k, dst, pixels, accumulate, weight, 1, k, col, 1, n, 1.0);
            }
        });
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

/// `dst[x] = src[x·stride + offset]`, zero where that falls outside `src` (the padding); every
/// element of `dst` is written (the scratch it lies in is not cleared between uses).
fn unfold_row(dst: &mut [f32], src: &[f32], stride: usize, offset: isize) {
    let w = src.len() as isize;
    if stride == 1 {
        // The valid run [lo, hi) of dst, copied in one go; the edges outside it are padding.
        let lo = (-offset).clamp(0, dst.len() as isize) as usize;
        let hi = (w - offset).clamp(lo as isize, dst.len() as isize) as usize;
        dst[..lo].fill(0.0);
        dst[lo..hi].copy_from_slice(&src[(lo as isize + offset) as usize..(hi as isize + offset) as usize]);
        dst[hi..].fill(0.0);
        return;
    }
    for (x, d) in dst.iter_mut().enumerate() {
        let ix = (x * stride) as isize + offset;
        *d = if (0..w).contains(&ix) { src[ix as usize] } else { 0.0 };
    }
}

/// Runs `f` on a scratch buffer of `len` values kept per thread between calls, so the im2col
/// tiles of a whole model allocate (and fault in) their memory once. Its contents are stale:
/// `f` must write before it reads.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut buffer) => {
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
            f(&mut buffer[..len])
        }
        // Re-entered on this thread (a nested parallel job): a buffer of its own.
        Err(_) => f(&mut vec![0.0; len]),
    })
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
            gemm_rows(m, d_out, d_in, dst, d_out, accumulate, &x[r0 * d_in..], 1, d_in, weight, d_in, 1, 1.0);
        }
    });
    out
}

/// [`linear`] of a 3-D `x` `[batch, rows, d_in]` read through its element strides
/// `[batch, row, column]` from `data`'s start (a transposed view needs no copy first).
pub fn linear_strided(
    data: &[f32],
    [batch, rows, d_in]: [usize; 3],
    [sb, sr, sc]: [usize; 3],
    weight: impl AsRef<[f32]>,
    d_out: usize,
    bias: Option<impl AsRef<[f32]>>,
) -> Vec<f32> {
    let weight = weight.as_ref();
    let mut out = vec![0.0f32; batch * rows * d_out];
    if let Some(bias) = &bias {
        for row in out.chunks_exact_mut(d_out) {
            row.copy_from_slice(bias.as_ref());
        }
    }
    if out.is_empty() || d_in == 0 {
        return out;
    }
    let last = (batch - 1) * sb + (rows - 1) * sr + (d_in - 1) * sc;
    assert!(last < data.len(), "linear_strided: the strides reach past the data");
    let per_job = rows.div_ceil(jobs_wanted(batch).div_ceil(batch)).max(16).min(rows);
    let blocks = rows.div_ceil(per_job);
    let dst = SharedOut(out.as_mut_ptr());
    let accumulate = bias.is_some();
    for_each_job(batch * blocks, |job| {
        let (b, r0) = (job / blocks, job % blocks * per_job);
        let m = per_job.min(rows - r0);
        // SAFETY: rows r0..r0+m of image b's output are this job's alone; every element read
        // lies in `data` (checked above).
        unsafe {
            let dst = dst.at((b * rows + r0) * d_out);
            gemm_rows(m, d_out, d_in, dst, d_out, accumulate, &data[b * sb + r0 * sr..], sc, sr, weight, d_in, 1, 1.0);
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
            normalize_row(o, s, m, scale, shift, silu);
        }
    });
    out
}

multiversion! {
    /// `out = (x − mean)·scale + shift`, then SiLU when `silu` (written as (v − mean)·scale + β,
    /// not v·scale + (β − mean·scale), so a constant group gives β exactly).
    fn normalize_row(out: &mut [f32], x: &[f32], mean: f32, scale: f32, shift: f32, silu: bool) = normalize_row_lanes;
}

#[inline(always)]
fn normalize_row_lanes(out: &mut [f32], x: &[f32], mean: f32, scale: f32, shift: f32, silu: bool) {
    if silu {
        for (o, &v) in out.iter_mut().zip(x) {
            let y = (v - mean) * scale + shift;
            *o = y / (1.0 + exp(-y));
        }
    } else {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = (v - mean) * scale + shift;
        }
    }
}

/// SiLU, `x·σ(x)`, of every value: the ControlNet's control-image embedding runs it on
/// full-size feature maps, where burn's scalar `expf` per value was a third of the call.
pub fn silu(x: impl AsRef<[f32]>) -> Vec<f32> {
    let x = x.as_ref();
    let mut out = vec![0.0f32; x.len()];
    if out.is_empty() {
        return out;
    }
    // Chunks of at least 16 K values, so a small tensor is one job.
    let per_job = x.len().div_ceil(jobs_wanted(1)).max(1 << 14);
    let dst = SharedOut(out.as_mut_ptr());
    for_each_job(x.len().div_ceil(per_job), |job| {
        let start = job * per_job;
        let end = (start + per_job).min(x.len());
        // SAFETY: values start..end of the output are this job's alone.
        let out = unsafe { std::slice::from_raw_parts_mut(dst.at(start), end - start) };
        silu_row(out, &x[start..end]);
    });
    out
}

multiversion! {
    /// `out = x·σ(x)`.
    fn silu_row(out: &mut [f32], x: &[f32]) = silu_row_lanes;
}

#[inline(always)]
fn silu_row_lanes(out: &mut [f32], x: &[f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v / (1.0 + exp(-v));
    }
}

/// GEGLU's `hidden · gelu(gate)` over rows of `[hidden (f) | gate (f)]`.
pub fn geglu(x: impl AsRef<[f32]>, rows: usize, f: usize) -> Vec<f32> {
    let x = x.as_ref();
    let mut out = vec![0.0f32; rows * f];
    if out.is_empty() {
        return out;
    }
    let per_job = rows.div_ceil(jobs_wanted(1)).max(1);
    let dst = SharedOut(out.as_mut_ptr());
    for_each_job(rows.div_ceil(per_job), |job| {
        let r0 = job * per_job;
        let m = per_job.min(rows - r0);
        // SAFETY: rows r0..r0+m of the output are this job's alone.
        let out = unsafe { std::slice::from_raw_parts_mut(dst.at(r0 * f), m * f) };
        for (o, row) in out.chunks_exact_mut(f).zip(x[r0 * 2 * f..].chunks_exact(2 * f)) {
            let (hidden, gate) = row.split_at(f);
            geglu_row(o, hidden, gate);
        }
    });
    out
}

multiversion! {
    /// `out = hidden · gelu(gate)`, erf GELU.
    fn geglu_row(out: &mut [f32], hidden: &[f32], gate: &[f32]) = geglu_row_lanes;
}

#[inline(always)]
fn geglu_row_lanes(out: &mut [f32], hidden: &[f32], gate: &[f32]) {
    for ((o, &h), &g) in out.iter_mut().zip(hidden).zip(gate) {
        *o = h * 0.5 * g * (1.0 + erf(g * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// erf to within 4e-7, a few ulp (Eigen's rational approximation `x·P(x²)/Q(x²)` on [−4, 4], where
/// f32's erf reaches ±1), vectorisable like [`exp`] (libm's `erff` is a branchy call per value).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = if x > -4.0 { x } else { -4.0 };
    let x = if x < 4.0 { x } else { 4.0 };
    let x2 = x * x;
    let p = -2.726_142_3e-10;
    let p = p * x2 + 2.770_681_4e-8;
    let p = p * x2 - 2.101_024e-6;
    let p = p * x2 - 5.692_506_4e-5;
    let p = p * x2 - 7.349_906_3e-4;
    let p = p * x2 - 2.954_600_0e-3;
    let p = p * x2 - 1.609_603_3e-2;
    let q = -1.456_607_2e-5;
    let q = q * x2 - 2.133_740_6e-4;
    let q = q * x2 - 1.682_827e-3;
    let q = q * x2 - 7.373_329_2e-3;
    let q = q * x2 - 1.426_474e-2;
    x * p / q
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
    assert!(nk > 0, "attention: no keys to attend to (softmax over nothing)");
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
        unsafe { gemm_rows(m, nk, d, scores.as_mut_ptr(), nk, false, q_block, 1, c, k_head, c, 1, scale) };
        let mut sums = Vec::with_capacity(m);
        for row in scores.chunks_exact_mut(nk) {
            sums.push(softmax_numerator(row));
        }
        // SAFETY: head h's columns of rows r0..r0+m are this job's alone.
        unsafe {
            let o = dst.at((b * nq + r0) * c_v + h * d_v);
            gemm_rows(m, d_v, nk, o, c_v, false, &scores, 1, nk, v_head, 1, c_v, 1.0);
            for (i, sum) in sums.iter().enumerate() {
                let row = std::slice::from_raw_parts_mut(o.add(i * c_v), d_v);
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|x| *x *= inv);
            }
        }
    });
    out
}

multiversion! {
    /// `row = exp(row − max(row))` in place; returns the row's sum (softmax's denominator).
    pub fn softmax_numerator(row: &mut [f32]) -> f32 = softmax_numerator_lanes;
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

/// `e^x` to within 2 ulp over [−87, 88] (clamped outside: ~1e-38 below, ~1.6e38 above), in
/// arithmetic the compiler vectorises (libm's `expf` is a call per value): `2^n · p(r)` with
/// `x = n·ln 2 + r`, `|r| ≤ ln 2 / 2` and `p` Cephes' degree-6 polynomial.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const ROUNDER: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let x = if x > -87.0 { x } else { -87.0 };
    let x = if x < 88.0 { x } else { 88.0 };
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

    /// Winograd's F(2×2, 3×3) against the im2col GEMM on the same convolutions: odd sides (a
    /// last block half outside the image), two images, with and without bias, and a band split.
    #[test]
    fn winograd_convolution_matches_im2col() {
        for (batch, c_in, c_out, h, w, bias) in [
            (2, 32, 24, 67, 65, true),
            (1, 32, 16, 64, 64, false),
            (1, 32, 16, 129, 64, true),
            (2, 64, 64, 64, 70, true),
        ] {
            let values = |n: usize, seed: f32| {
                (0..n).map(|i| ((i as f32 * 0.7548 + seed).sin() * 43758.55).fract() - 0.5).collect::<Vec<f32>>()
            };
            let x = values(batch * c_in * h * w, 0.3);
            let weight = values(c_out * c_in * 9, 1.7);
            let b = values(c_out, 2.9);
            let bias = bias.then_some(b.as_slice());
            assert!(winograd::applies(c_in, c_out, h, w, [3, 3], 1, [1; 4]));
            let run =
                |winograd| conv2d_by(&x, [batch, c_in, h, w], &weight, [c_out, c_in, 3, 3], bias, 1, [1; 4], winograd);
            let ((ours, dims), (direct, direct_dims)) = (run(true), run(false));
            assert_eq!(dims, direct_dims);
            let worst = ours.iter().zip(&direct).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            let scale = direct.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(
                worst <= 2e-6 * scale.max(1.0),
                "{batch}×{c_in}→{c_out} at {h}×{w}: {worst} (values up to {scale})"
            );
        }
    }

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
    fn exp_holds_above_zero_too_and_clamps() {
        for i in 0..=100_000 {
            let x = 88.0 * i as f32 / 100_000.0;
            let rel = (exp(x) - x.exp()).abs() / x.exp();
            assert!(rel < 2.5e-7, "x = {x}: {rel}");
        }
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 1e38);
    }

    #[test]
    fn silu_matches_f64_over_every_job() {
        // 70 000 values: several jobs, and a last one shorter than the rest.
        let x: Vec<f32> = (0..70_000).map(|i| (i as f32 - 35_000.0) / 350.0).collect();
        let got = silu(&x);
        for (&v, &g) in x.iter().zip(&got) {
            let want = f64::from(v) / (1.0 + (-f64::from(v)).exp());
            assert!((f64::from(g) - want).abs() <= 1e-6 * want.abs().max(1.0), "silu({v}) = {g}, want {want}");
        }
        assert_eq!(silu([0.0f32]), vec![0.0]);
        assert!(silu([-1000.0f32])[0].abs() < 1e-30 && silu([1000.0f32])[0] == 1000.0);
        assert!(silu(Vec::<f32>::new()).is_empty());
    }

    #[test]
    fn erf_is_within_4e7_of_the_series() {
        // erf by its Taylor series in f64, exact enough for |x| ≤ 3; beyond, erf is 1 to f32.
        let reference = |x: f64| {
            let (mut term, mut sum) = (x, x);
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        };
        for i in -3000..=3000 {
            let x = i as f32 / 1000.0;
            let d = (erf(x) as f64 - reference(x as f64)).abs();
            assert!(d < 4e-7, "x = {x}: {d}");
        }
        assert!((erf(10.0) - 1.0).abs() < 2e-7 && (erf(-10.0) + 1.0).abs() < 2e-7);
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
