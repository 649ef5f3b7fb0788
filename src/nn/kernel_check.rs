//! Our GPU kernels against the tensor ops of the layers that call them, on whatever device
//! is given: the browser's WebGPU (the wasm export `check_kernels`, run by the browser test)
//! and native wgpu (tests/kernels.rs). Inputs are fixed formulas, not a random generator, so
//! every platform checks the same numbers.

use burn::tensor::{Device, Tensor, TensorData};

use super::{GroupNorm, LayerNorm, silu};
use crate::kernels;

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
        weight: Tensor::from_data(TensorData::new(scale, [channels]), device),
        bias: Tensor::from_data(TensorData::new(shift, [channels]), device),
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
            let ops = host(if then_silu { silu(ops) } else { ops }).await?;
            let largest = ops.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let max_abs_diff = ours.iter().zip(&ops).map(|(a, b)| diff(*a, *b)).fold(0.0f32, f32::max);
            let kernel = if then_silu { "group_norm_silu" } else { "group_norm" };
            out.push(Checked { case: format!("{kernel} {shape:?}/{groups}"), ran_ours, max_abs_diff, largest });
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
        let largest = ops.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let max_abs_diff = ours.iter().zip(&ops).map(|(a, b)| diff(*a, *b)).fold(0.0f32, f32::max);
        out.push(Checked { case: format!("layer_norm {shape:?}"), ran_ours, max_abs_diff, largest });
    }
    Ok(out)
}

/// Every kernel's cases.
pub async fn all(device: &Device) -> Result<Vec<Checked>, String> {
    let mut out = group_norm(device).await?;
    out.extend(layer_norm(device).await?);
    Ok(out)
}
