//! GroupNorm, optionally followed by SiLU, in one GPU launch.
//!
//! burn's tensor ops spend about ten launches on one diffusers GroupNorm (two-stage mean,
//! centring, two-stage variance, scale, shift, and SiLU after it), each a round trip of the
//! whole activation through GPU memory. Here one cube (workgroup) owns one (batch, group):
//! its units sum the group in strided partials, reduce them in shared memory, do the same
//! for the squared deviations, then write `silu?((x - mean) / sqrt(var + eps) * γ + β)`.
//!
//! Accuracy: each unit adds at most `len / units` values before the tree reduction, the same
//! two-stage shape as the tensor-op version (`nn::GroupNorm::forward`), so a million-value
//! VAE group does not drift; the variance is taken about the mean (two passes), never as
//! E[x²] − E[x]².

use burn::backend::wgpu::CubeTensor;
use burn::tensor::DType;
use burn_cubecl::ops::numeric::empty_device_dtype;
use cubecl::prelude::*;

/// Units per cube: a power of two (the tree reduction halves it) within every WebGPU
/// adapter's guaranteed 256 invocations per workgroup.
pub const UNITS: usize = 256;

/// Units per cube on SwiftShader, which runs a cube's units as coroutines on a CPU core and
/// pays for each at every barrier: a 64² ad's 636 GroupNorms took 2.53 s with 256 units and
/// 0.74 s with 64 (the whole warm ad 6.05 → 5.28 s; on lavapipe 64 units were slower, 0.23
/// against 0.18 s; BENCHMARKS.md, 2026-12-07 22:00).
pub const UNITS_SWIFTSHADER: usize = 64;

/// Sums every unit's `value` across the cube: a tree over shared memory, `units` a power of two.
#[cube]
fn cube_sum(partial: &mut Shared<[f32]>, value: f32, unit: u32) -> f32 {
    partial[unit as usize] = value;
    sync_cube();
    // From the cube's runtime size (== `units`): a mutable seeded by a comptime value fails
    // cubecl 0.11's IR verification.
    let mut active = CUBE_DIM / 2;
    while active > 0 {
        if unit < active {
            partial[unit as usize] += partial[(unit + active) as usize];
        }
        sync_cube();
        active /= 2;
    }
    let total = partial[0];
    // Every unit has read the total before `partial` is written again.
    sync_cube();
    total
}

#[cube(launch)]
fn group_norm_kernel(
    input: &Tensor<f32>,
    gamma: &Tensor<f32>,
    beta: &Tensor<f32>,
    output: &mut Tensor<f32>,
    group_len: u32,
    spatial: u32,
    channels_per_group: u32,
    groups: u32,
    eps: f32,
    #[comptime] units: usize,
    #[comptime] silu: bool,
) {
    let group = CUBE_POS as u32;
    let start = group * group_len;
    let unit = UNIT_POS;
    let step = CUBE_DIM;
    let count = f32::cast_from(group_len);
    let mut partial = Shared::<[f32]>::new_slice(units);

    // Pass 1: the mean.
    let mut sum = f32::new(0.0);
    let mut i = unit;
    while i < group_len {
        sum += input[(start + i) as usize];
        i += step;
    }
    let mean = cube_sum(&mut partial, sum, unit) / count;

    // Pass 2: the variance about that mean.
    let mut squares = f32::new(0.0);
    let mut j = unit;
    while j < group_len {
        let d = input[(start + j) as usize] - mean;
        squares += d * d;
        j += step;
    }
    let inv_std = 1.0f32 / f32::sqrt(cube_sum(&mut partial, squares, unit) / count + eps);

    // Pass 3: normalise, scale and shift per channel, and SiLU.
    let first_channel = (group % groups) * channels_per_group;
    let mut k = unit;
    while k < group_len {
        let channel = (first_channel + k / spatial) as usize;
        let y = (input[(start + k) as usize] - mean) * inv_std * gamma[channel] + beta[channel];
        if silu {
            output[(start + k) as usize] = y / (1.0f32 + f32::exp(-y));
        } else {
            output[(start + k) as usize] = y;
        }
        k += step;
    }
}

/// `x` `[batch, channels, h, w]` f32, `gamma`/`beta` `[channels]`; the caller has checked
/// that `groups` divides `channels`. Non-contiguous inputs are made contiguous first.
pub fn launch(x: CubeTensor, gamma: CubeTensor, beta: CubeTensor, groups: usize, eps: f32, silu: bool) -> CubeTensor {
    let x = burn_cubecl::kernel::into_contiguous(x);
    let gamma = burn_cubecl::kernel::into_contiguous(gamma);
    let beta = burn_cubecl::kernel::into_contiguous(beta);
    let shape = x.meta.shape().clone();
    let [batch, channels, h, w] = [shape[0], shape[1], shape[2], shape[3]];
    let output = empty_device_dtype(x.client.clone(), x.device.clone(), shape, DType::F32);
    let channels_per_group = channels / groups;
    let group_len = channels_per_group * h * w;
    let units = if super::adapter_is_swiftshader() { UNITS_SWIFTSHADER } else { UNITS };
    group_norm_kernel::launch(
        &output.client.clone(),
        CubeCount::Static((batch * groups) as u32, 1, 1),
        CubeDim::new_1d(units as u32),
        x.into_tensor_arg(),
        gamma.into_tensor_arg(),
        beta.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        group_len as u32,
        (h * w) as u32,
        channels_per_group as u32,
        groups as u32,
        eps,
        units,
        silu,
    );
    output
}
