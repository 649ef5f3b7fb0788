//! Our kernels against the tensor ops of the layers that call them, on whatever device is
//! given: the browser's WebGPU and its wasm CPU path (the wasm export `check_kernels`, run by the
//! browser test), native wgpu and the native CPU (tests/kernels.rs). Inputs are fixed formulas, not a random generator, so
//! every platform checks the same numbers.

use burn::tensor::{Device, Tensor, TensorData};

use super::attention::explicit_attention;
use super::{Conv2d, GroupNorm, LayerNorm, Linear, silu_ops};
use crate::kernels;
use crate::pack::weights::{QuantizedWeight, Weight, float_param};
use burn::tensor::ops::ConvOptions;

/// `[b, c, h, w]`, groups, eps: the diffusers shapes (32 groups, eps 1e-5 / 1e-6), a group
/// shorter than a cube's 256 units, groups that are not a multiple of them, one group per
/// sample, and an input whose mean is far from zero.
pub const GROUP_NORM_CASES: [([usize; 4], usize, f64); 6] = [
    ([2, 64, 8, 8], 32, 1e-5),
    ([1, 4, 1, 1], 2, 1e-6),
    ([2, 12, 7, 5], 3, 1e-5),
    ([1, 96, 33, 17], 32, 1e-6),
    ([3, 8, 16, 16], 1, 1e-5),
    ([1, 6, 45, 29], 2, 1e-5),
];

/// `[batch, tokens, dim]`, eps: a transformer block's LayerNorms (SD 1.5's 320-wide tokens, the
/// default model's 32) and a row shorter than a cube.
pub const LAYER_NORM_CASES: [([usize; 3], f64); 4] =
    [([2, 64, 320], 1e-5), ([2, 1024, 32], 1e-5), ([1, 5, 3], 1e-5), ([3, 7, 300], 1e-6)];

/// `[n, c_in, h, w]`, c_out, kernel, stride, padding `[top, bottom, left, right]`, bias: the
/// UNet's 3×3 convs, its stride-2 downsampler, a 1×1 projection, the VAE downsampler's
/// one-sided padding, channel counts and sizes that are not multiples of the 64 × 64 tile.
pub const CONV2D_CASES: [([usize; 4], usize, usize, usize, [usize; 4], bool); 6] = [
    ([2, 32, 16, 16], 32, 3, 1, [1, 1, 1, 1], true),
    ([2, 64, 9, 7], 64, 3, 2, [1, 1, 1, 1], true),
    ([1, 17, 13, 11], 70, 1, 1, [0, 0, 0, 0], true),
    ([1, 8, 10, 10], 8, 3, 2, [0, 1, 0, 1], true),
    ([3, 5, 6, 33], 3, 3, 1, [1, 1, 1, 1], false),
    ([1, 130, 5, 5], 129, 3, 1, [1, 1, 1, 1], true),
];

/// [`CONV2D_CASES`]' fields and q4 (else q8): a UNet conv, a 1×1 projection and a 3×3 conv
/// whose rows (17 and 45 values) straddle the 32-value blocks and the packed words, the VAE
/// downsampler's padding, a stride-2 conv without bias.
pub const QUANTIZED_CONV2D_CASES: [([usize; 4], usize, usize, usize, [usize; 4], bool, bool); 5] = [
    ([2, 32, 16, 16], 32, 3, 1, [1, 1, 1, 1], true, false),
    ([1, 17, 13, 11], 64, 1, 1, [0, 0, 0, 0], true, true),
    ([1, 8, 10, 10], 8, 3, 2, [0, 1, 0, 1], true, false),
    ([2, 64, 9, 7], 64, 3, 2, [1, 1, 1, 1], false, true),
    ([1, 5, 6, 33], 96, 3, 1, [1, 1, 1, 1], true, false),
];

/// `[batch, tokens, d_in]`, d_out, q4 (else q8), bias: a default-model attention projection
/// (32 wide), MEPA's k/v projections of 384-wide text tokens, SD 1.5's 320 → 1280
/// feed-forward, outputs and rows that are not multiples of the 64 × 64 tile, one row.
pub const QUANTIZED_LINEAR_CASES: [([usize; 3], usize, bool, bool); 6] = [
    ([2, 1024, 32], 32, false, true),
    ([2, 77, 384], 64, false, false),
    ([2, 77, 384], 64, true, false),
    ([1, 64, 320], 1280, true, true),
    ([3, 7, 48], 70, false, true),
    ([1, 1, 96], 33, true, true),
];

/// `[batch, queries, keys]`, heads, query/key width of a head, value width of a head: the
/// default model's self-attention at 32² (8 heads of 8), its cross-attention to 128 text
/// tokens, SD 1.5's 8 heads of 40 over 77 tokens, one query, key counts that are not multiples
/// of the 16 lanes, a value width unlike the key's, one head.
pub const ATTENTION_CASES: [([usize; 3], usize, usize, usize); 7] = [
    ([2, 1024, 1024], 8, 8, 8),
    ([2, 1024, 128], 8, 8, 8),
    ([2, 64, 77], 8, 40, 40),
    ([1, 1, 5], 2, 4, 4),
    ([3, 33, 17], 3, 16, 16),
    ([1, 20, 31], 2, 8, 12),
    ([1, 50, 50], 1, 64, 64),
];

/// `[batch, m, k]`, n, rhs batch (1: broadcast, as a weight), rhs transposed (a view, as a
/// weight `[n, k]` is read): a default-model projection over 32² tokens, SD 1.5's 320 → 1280
/// feed-forward, the attention products on split heads (below), sizes that are not multiples
/// of any tile, one row, one column.
pub const MATMUL_CASES: [([usize; 3], usize, usize, bool); 6] = [
    ([2, 1024, 32], 32, 1, true),
    ([1, 64, 320], 1280, 1, true),
    ([3, 7, 48], 70, 1, true),
    ([2, 33, 17], 29, 2, false),
    ([1, 1, 96], 33, 1, true),
    ([4, 50, 9], 1, 4, false),
];

/// `[batch, rows, 2f]` for GEGLU: the default model's feed-forward (2 × 256 wide at 32²), SD
/// 1.5's (2 × 1280), an odd width and one row.
pub const GEGLU_CASES: [[usize; 3]; 4] = [[2, 1024, 512], [1, 64, 2560], [3, 7, 34], [1, 1, 2]];

/// One kernel run against its tensor-op version.
#[derive(Debug, Clone)]
pub struct Checked {
    /// e.g. "group_norm_silu [2, 12, 7, 5]/3".
    pub case: String,
    /// Whether our kernel ran (false: this device runs the tensor ops for both).
    pub ran_ours: bool,
    pub max_abs_diff: f32,
    /// The largest |value| of the tensor-op result, to read the difference against.
    pub largest: f32,
}

impl Checked {
    /// `ours` against `reference`, element by element (a length mismatch never agrees).
    pub fn compare(case: String, ran_ours: bool, ours: &[f32], reference: &[f32]) -> Self {
        let largest = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let max_abs_diff = match ours.len() == reference.len() {
            true => ours.iter().zip(reference).map(|(a, b)| diff(*a, *b)).fold(0.0f32, f32::max),
            false => f32::INFINITY,
        };
        Self { case, ran_ours, max_abs_diff, largest }
    }

    /// Within f32 rounding of the reference: 2e-5 of its largest value (or of 1).
    pub fn agrees(&self) -> bool {
        self.max_abs_diff.is_finite() && self.max_abs_diff < 2e-5 * self.largest.max(1.0)
    }
}

/// The input of case `i`: an offset, scaled wave, different in every element.
pub fn input(shape: [usize; 4], device: &Device) -> Tensor<4> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> =
        (0..n).map(|i| 0.5 + 2.0 * ((i as f32) * 0.731).sin() + 0.3 * ((i as f32) * 0.019).cos()).collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A GroupNorm over `channels` with a non-trivial scale and shift.
pub fn group_norm_layer(groups: usize, channels: usize, eps: f64, device: &Device) -> GroupNorm {
    let scale: Vec<f32> = (0..channels).map(|c| 0.5 + ((c as f32) * 0.71).sin()).collect();
    let shift: Vec<f32> = (0..channels).map(|c| ((c as f32) * 1.3).cos()).collect();
    GroupNorm {
        groups,
        eps,
        weight: float_param(Tensor::from_data(TensorData::new(scale, [channels]), device)),
        bias: float_param(Tensor::from_data(TensorData::new(shift, [channels]), device)),
    }
}

/// |a − b|, with a NaN on either side counted as infinitely far (`f32::max` would drop it).
pub fn diff(a: f32, b: f32) -> f32 {
    let d = (a - b).abs();
    if d.is_nan() { f32::INFINITY } else { d }
}

/// A LayerNorm over `dim` with a non-trivial scale and shift.
pub fn layer_norm_layer(dim: usize, eps: f64, device: &Device) -> LayerNorm {
    let g = group_norm_layer(1, dim, eps, device);
    LayerNorm { eps, weight: g.weight, bias: g.bias }
}

async fn host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, String> {
    let data = t.into_data_async().await.map_err(|e| format!("{e:?}"))?;
    data.try_to_vec::<f32>().map_err(|e| format!("{e:?}"))
}

/// Every GroupNorm case, with and without the SiLU after it.
pub async fn group_norm(device: &Device) -> Result<Vec<Checked>, String> {
    let mut out = Vec::new();
    for (shape, groups, eps) in GROUP_NORM_CASES {
        let norm = group_norm_layer(groups, shape[1], eps, device);
        let x = input(shape, device);
        for then_silu in [false, true] {
            let one = Tensor::<1>::ones([shape[1]], device);
            let ran_ours = kernels::group_norm(x.clone(), &one, &one, groups, eps, false).is_ok();
            let ours = host(if then_silu { norm.forward_silu(x.clone()) } else { norm.forward(x.clone()) }).await?;
            let ops = norm.forward_ops(x.clone());
            let ops = host(if then_silu { silu_ops(ops) } else { ops }).await?;
            let kernel = if then_silu { "group_norm_silu" } else { "group_norm" };
            out.push(Checked::compare(format!("{kernel} {shape:?}/{groups}"), ran_ours, &ours, &ops));
        }
    }
    Ok(out)
}

/// Every LayerNorm case (our GroupNorm kernel with one group per row).
pub async fn layer_norm(device: &Device) -> Result<Vec<Checked>, String> {
    let mut out = Vec::new();
    for (shape, eps) in LAYER_NORM_CASES {
        let norm = layer_norm_layer(shape[2], eps, device);
        let n: usize = shape.iter().product();
        let x = input([1, 1, 1, n], device).reshape(shape);
        let one = Tensor::<1>::ones([1], device);
        let ran_ours = kernels::group_norm(Tensor::<4>::ones([1, 1, 1, 1], device), &one, &one, 1, eps, false).is_ok();
        let ours = host(norm.forward(x.clone())).await?;
        let ops = host(norm.forward_ops(x)).await?;
        out.push(Checked::compare(format!("layer_norm {shape:?}"), ran_ours, &ours, &ops));
    }
    Ok(out)
}

/// A conv whose weights and bias are fixed waves.
pub fn conv2d_layer(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: [usize; 4],
    bias: bool,
    device: &Device,
) -> Conv2d {
    let n = c_out * c_in * kernel * kernel;
    let scale = 1.0 / ((c_in * kernel * kernel) as f32).sqrt();
    let weight: Vec<f32> = (0..n).map(|i| scale * ((i as f32) * 0.377).sin()).collect();
    let [top, bottom, left, right] = padding;
    let mut options = ConvOptions::new([stride, stride], [0, 0], [1, 1], 1);
    options.padding = [(top, bottom), (left, right)];
    let shift: Vec<f32> = (0..c_out).map(|c| (c as f32 * 0.9).cos()).collect();
    Conv2d {
        weight: Weight::Float(float_param(Tensor::from_data(
            TensorData::new(weight, [c_out, c_in, kernel, kernel]),
            device,
        ))),
        bias: bias.then(|| float_param(Tensor::from_data(TensorData::new(shift, [c_out]), device))),
        options,
    }
}

/// Every convolution case.
pub async fn conv2d(device: &Device) -> Result<Vec<Checked>, String> {
    let mut out = Vec::new();
    for (shape, c_out, kernel, stride, padding, bias) in CONV2D_CASES {
        let conv = conv2d_layer(shape[1], c_out, kernel, stride, padding, bias, device);
        let x = input(shape, device);
        // The kernel itself, not `Conv2d::forward`: the layers use it only on request.
        let (ran_ours, ours) =
            match kernels::conv2d(x.clone(), conv.weight.value(), conv.bias.as_deref(), stride, padding) {
                Ok(y) => (true, host(y).await?),
                Err(x) => (false, host(conv.forward_ops(x)).await?),
            };
        let ops = host(conv.forward_ops(x)).await?;
        let case = format!("conv2d {shape:?} -> {c_out}, {kernel}x{kernel}/{stride}, pad {padding:?}, bias {bias}");
        out.push(Checked::compare(case, ran_ours, &ours, &ops));
    }
    Ok(out)
}

/// Every quantised-convolution case: the kernel reading the packed weight against burn's
/// convolution of the same weight expanded.
pub async fn quantized_conv2d(device: &Device) -> Result<Vec<Checked>, String> {
    let mut out = Vec::new();
    for (shape, c_out, kernel, stride, padding, bias, q4) in QUANTIZED_CONV2D_CASES {
        let mut conv = conv2d_layer(shape[1], c_out, kernel, stride, padding, bias, device);
        let weight = host(conv.weight.value()).await?;
        conv.weight = Weight::quantize(&weight, [c_out, shape[1], kernel, kernel], q4, device);
        let Weight::Quantized(QuantizedWeight { blocks, shape: weight_shape }) = &conv.weight else {
            unreachable!("built quantised")
        };
        let x = input(shape, device);
        let (ran_ours, ours) =
            match kernels::quantized_conv2d(x.clone(), blocks, *weight_shape, conv.bias.as_deref(), stride, padding) {
                Ok(y) => (true, host(y).await?),
                Err(x) => (false, host(conv.forward_ops(x)).await?),
            };
        let ops = host(conv.forward_ops(x)).await?;
        let bits = if q4 { "q4" } else { "q8" };
        let case =
            format!("conv2d {bits} {shape:?} -> {c_out}, {kernel}x{kernel}/{stride}, pad {padding:?}, bias {bias}");
        out.push(Checked::compare(case, ran_ours, &ours, &ops));
    }
    Ok(out)
}

/// A linear layer whose weight (a fixed wave) is quantised as a pack stores it, and its bias.
pub fn quantized_linear_layer(d_in: usize, d_out: usize, q4: bool, bias: bool, device: &Device) -> Linear {
    let scale = 1.0 / (d_in as f32).sqrt();
    let weight: Vec<f32> = (0..d_out * d_in).map(|i| scale * ((i as f32) * 0.377).sin()).collect();
    let shift: Vec<f32> = (0..d_out).map(|c| (c as f32 * 0.9).cos()).collect();
    Linear {
        weight: Weight::quantize(&weight, [d_out, d_in], q4, device),
        bias: bias.then(|| float_param(Tensor::from_data(TensorData::new(shift, [d_out]), device))),
    }
}

/// Every quantised-linear case: the kernel reading the packed weight against burn's matmul
/// on the same weight expanded (the same quantised values, so only f32 rounding differs).
pub async fn quantized_linear(device: &Device) -> Result<Vec<Checked>, String> {
    let mut out = Vec::new();
    for (shape, d_out, q4, bias) in QUANTIZED_LINEAR_CASES {
        let layer = quantized_linear_layer(shape[2], d_out, q4, bias, device);
        let n: usize = shape.iter().product();
        let x = input([1, 1, 1, n], device).reshape(shape);
        let Weight::Quantized(QuantizedWeight { blocks, .. }) = &layer.weight else { unreachable!("built quantised") };
        let (ran_ours, ours) = match kernels::quantized_linear(x.clone(), blocks, d_out, layer.bias.as_deref()) {
            Ok(y) => (true, host(y).await?),
            Err(x) => (false, host(layer.forward_ops(x)).await?),
        };
        let ops = host(layer.forward_ops(x)).await?;
        let bits = if q4 { "q4" } else { "q8" };
        out.push(Checked::compare(
            format!("quantized_linear {bits} {shape:?} -> {d_out}, bias {bias}"),
            ran_ours,
            &ours,
            &ops,
        ));
    }
    Ok(out)
}

/// Every attention case: [`kernels::attention`] on `[batch, tokens, heads × width]` against
/// [`explicit_attention`] on the heads split and merged by tensor ops, on the CPU and the GPU.
pub async fn attention(device: &Device) -> Result<Vec<Checked>, String> {
    let mut out = Vec::new();
    for (i, ([b, nq, nk], heads, d, d_v)) in ATTENTION_CASES.into_iter().enumerate() {
        let wave = |n: usize, shape: [usize; 3], phase: f32| {
            let values: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.173 + phase).sin() * 1.5).collect();
            Tensor::<3>::from_data(TensorData::new(values, shape), device)
        };
        let q = wave(b * nq * heads * d, [b, nq, heads * d], 0.0);
        let k = wave(b * nk * heads * d, [b, nk, heads * d], 1.0);
        let v = wave(b * nk * heads * d_v, [b, nk, heads * d_v], 2.0);
        let split = |t: Tensor<3>, width: usize| {
            let [b, n, _] = t.dims();
            t.reshape([b, n, heads, width]).swap_dims(1, 2)
        };
        let merged = |t: Tensor<4>| t.swap_dims(1, 2).reshape([b, nq, heads * d_v]);
        // Every other case as MEPA's image prompt: a region mask (alternately per batch and
        // shared by the batch) and a weight λ.
        let mask = (i % 2 == 1).then(|| {
            let mb = if i % 4 == 1 { b } else { 1 };
            let values: Vec<f32> = (0..mb * nq).map(|j| ((j as f32) * 0.61).sin().abs()).collect();
            Tensor::<3>::from_data(TensorData::new(values, [mb, nq, 1]), device)
        });
        let weight = if mask.is_some() { 0.7 } else { 1.0 };
        let mut ops = merged(explicit_attention(split(q.clone(), d), split(k.clone(), d), split(v.clone(), d_v)));
        if let Some(mask) = &mask {
            ops = (ops * mask.clone()).mul_scalar(weight);
        }
        let ops = host(ops).await?;
        let (ran_ours, ours) = match kernels::attention(q, &k, &v, heads, mask.as_ref(), weight) {
            Ok(y) => (true, host(y).await?),
            Err(_) => (false, ops.clone()),
        };
        let masked = match &mask {
            Some(m) => format!(", mask of batch {}, λ {weight}", m.dims()[0]),
            None => String::new(),
        };
        let case = format!("attention [{b}, {nq}, {nk}], {heads} heads of {d}/{d_v}{masked}");
        out.push(Checked::compare(case, ran_ours, &ours, &ops));
    }
    Ok(out)
}

/// Every matmul case: [`kernels::gemm`] (cubek's routine chosen by our rule) against burn's
/// matmul, and the attention products on heads split by views (`[b, heads, tokens, width]`,
/// keys transposed). Ours runs on the GPU only (the CPU runs burn-flex's GEMM).
pub async fn matmul(device: &Device) -> Result<Vec<Checked>, String> {
    let mut out = Vec::new();
    let mut check = async |case: String, lhs: Tensor<4>, rhs: Tensor<4>| -> Result<(), String> {
        let ops = host(lhs.clone().matmul(rhs.clone())).await?;
        let (ran_ours, ours) = match kernels::gemm(lhs, &rhs) {
            Ok(y) => (true, host(y).await?),
            Err(_) => (false, ops.clone()),
        };
        out.push(Checked::compare(case, ran_ours, &ours, &ops));
        Ok(())
    };
    for ([b, m, k], n, rhs_batch, transposed) in MATMUL_CASES {
        let lhs = input([1, b, m, k], device).mul_scalar(0.3);
        let rhs = match transposed {
            true => input([1, rhs_batch, n, k], device).swap_dims(2, 3),
            false => input([1, rhs_batch, k, n], device),
        }
        .mul_scalar(-0.2);
        let what = if transposed { "transposed" } else { "plain" };
        check(format!("matmul [{b}, {m}, {k}] x [{rhs_batch}, {k}, {n}] {what}"), lhs, rhs).await?;
    }
    // Q Kᵀ and P V as attention makes them: 8 heads of 8 split from [2, 64, 64] by views.
    let split = |t: Tensor<4>| t.reshape([2, 64, 8, 8]).swap_dims(1, 2);
    let (q, k) = (split(input([1, 2, 64, 64], device)), split(input([1, 2, 64, 64], device).mul_scalar(-0.7)));
    check("matmul attention scores Q Kᵀ, 8 heads of 8".into(), q.clone(), k.swap_dims(2, 3)).await?;
    let p = input([2, 8, 64, 64], device).mul_scalar(0.1);
    check("matmul attention output P V, 8 heads of 8".into(), p, q).await?;
    Ok(out)
}

/// Every GEGLU case: [`kernels::geglu`] against `hidden · gelu(gate)` in tensor ops (erf GELU).
/// Ours runs on the CPU only.
pub async fn geglu(device: &Device) -> Result<Vec<Checked>, String> {
    let mut out = Vec::new();
    for shape in GEGLU_CASES {
        let n: usize = shape.iter().product();
        let x = input([1, 1, 1, n], device).reshape(shape).mul_scalar(1.7);
        let f = shape[2] / 2;
        let ops = host(x.clone().narrow(2, 0, f) * super::gelu(x.clone().narrow(2, f, f))).await?;
        let (ran_ours, ours) = match kernels::geglu(x) {
            Ok(y) => (true, host(y).await?),
            Err(_) => (false, ops.clone()),
        };
        out.push(Checked::compare(format!("geglu {shape:?}"), ran_ours, &ours, &ops));
    }
    Ok(out)
}

/// Every kernel's cases that run ours on `device` (GEGLU only on the CPU, the matmul routine
/// only on the GPU).
pub async fn all(device: &Device) -> Result<Vec<Checked>, String> {
    let mut out = group_norm(device).await?;
    out.extend(layer_norm(device).await?);
    out.extend(conv2d(device).await?);
    out.extend(quantized_conv2d(device).await?);
    out.extend(quantized_linear(device).await?);
    out.extend(attention(device).await?);
    match kernels::runs_on(&Tensor::<1>::zeros([1], device)) {
        Some(kernels::Place::Cpu) => out.extend(geglu(device).await?),
        _ => out.extend(matmul(device).await?),
    }
    Ok(out)
}
