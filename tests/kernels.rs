//! Our own kernels against the plain-tensor versions they replace, on a real wgpu adapter
//! (Mesa lavapipe in CI, scripts/setup.sh) and on the CPU, odd shapes included: against the
//! layer's tensor ops on the same device (`nn::kernel_check`, which the browser test runs in
//! Chromium too) and, for the GPU, on the CPU.

use adcanvas::gpu::DeviceChoice;
use adcanvas::gpu::select::{GpuOptions, open};
use adcanvas::nn::kernel_check::{self, GROUP_NORM_CASES, diff, group_norm_layer, input};
use adcanvas::nn::silu;
use burn::tensor::{Device, Tensor, TensorData};

fn gpu() -> Device {
    let opened = open(DeviceChoice::Gpu, &GpuOptions::default())
        .unwrap_or_else(|e| panic!("these tests need a wgpu adapter (lavapipe: scripts/setup.sh): {e}"));
    opened.device
}

fn values(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| diff(*x, *y)).fold(0.0, f32::max)
}

#[test]
fn fused_group_norm_matches_the_tensor_ops_on_the_same_gpu() {
    let checked = pollster::block_on(kernel_check::group_norm(&gpu())).unwrap();
    assert_eq!(checked.len(), 2 * GROUP_NORM_CASES.len());
    for c in &checked {
        // Else the comparison would be the tensor ops against themselves.
        assert!(c.ran_ours, "{}: our kernel did not run on the GPU device", c.case);
        assert!(c.agrees(), "{c:?}");
    }
}

#[test]
fn layer_norm_on_the_group_norm_kernel_matches_the_tensor_ops() {
    let checked = pollster::block_on(kernel_check::layer_norm(&gpu())).unwrap();
    for c in &checked {
        assert!(c.ran_ours && c.agrees(), "{c:?}");
    }
}

#[test]
fn implicit_gemm_conv2d_matches_burns_conv2d() {
    let checked = pollster::block_on(kernel_check::conv2d(&gpu())).unwrap();
    for c in &checked {
        assert!(c.ran_ours && c.agrees(), "{c:?}");
    }
}

#[test]
fn implicit_gemm_conv2d_reading_packed_q8_and_q4_matches_the_expanded_weight() {
    let checked = pollster::block_on(kernel_check::quantized_conv2d(&gpu())).unwrap();
    assert_eq!(checked.len(), kernel_check::QUANTIZED_CONV2D_CASES.len());
    for c in &checked {
        assert!(c.ran_ours && c.agrees(), "{c:?}");
    }
}

#[test]
fn quantized_linear_reading_packed_q8_and_q4_matches_the_expanded_weight() {
    let checked = pollster::block_on(kernel_check::quantized_linear(&gpu())).unwrap();
    assert_eq!(checked.len(), kernel_check::QUANTIZED_LINEAR_CASES.len());
    for c in &checked {
        assert!(c.ran_ours && c.agrees(), "{c:?}");
    }
}

/// The CPU's kernels (src/kernels/cpu.rs: convolution, GroupNorm, the quantised layers expanded,
/// attention on unsplit heads, GEGLU) against burn's tensor ops on the same CPU device, every case.
#[test]
fn cpu_kernels_match_the_tensor_ops() {
    let checked = pollster::block_on(kernel_check::all(&Device::flex())).unwrap();
    let cases = 2 * GROUP_NORM_CASES.len()
        + kernel_check::LAYER_NORM_CASES.len()
        + kernel_check::CONV2D_CASES.len()
        + kernel_check::QUANTIZED_CONV2D_CASES.len()
        + kernel_check::QUANTIZED_LINEAR_CASES.len()
        + kernel_check::ATTENTION_CASES.len()
        + kernel_check::GEGLU_CASES.len();
    assert_eq!(checked.len(), cases);
    for c in &checked {
        assert!(c.ran_ours, "{}: our kernel did not run on the CPU device", c.case);
        assert!(c.agrees(), "{c:?}");
    }
}

/// The CPU's GroupNorm of a constant group is its shift too.
#[test]
fn cpu_group_norm_of_a_constant_group_is_its_shift() {
    let cpu = Device::flex();
    let norm = group_norm_layer(2, 4, 1e-5, &cpu);
    let x = Tensor::<4>::from_data(TensorData::new(vec![3.0f32; 4 * 5 * 3], [1, 4, 5, 3]), &cpu);
    let ours = values(norm.forward(x.clone()));
    let ops = values(norm.forward_ops(x));
    assert!(ours.iter().all(|v| v.is_finite()), "NaN or inf from a constant group");
    assert!(max_abs_diff(&ours, &ops) < 1e-6);
}

#[test]
fn fused_group_norm_on_the_gpu_matches_the_tensor_ops_on_the_cpu() {
    let (gpu, cpu) = (gpu(), Device::flex());
    for (shape, groups, eps) in GROUP_NORM_CASES {
        let fused = values(group_norm_layer(groups, shape[1], eps, &gpu).forward_silu(input(shape, &gpu)));
        let reference = values(silu(group_norm_layer(groups, shape[1], eps, &cpu).forward_ops(input(shape, &cpu))));
        let largest = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = max_abs_diff(&fused, &reference);
        assert!(
            d < 2e-5 * largest.max(1.0),
            "{shape:?}/{groups}: GPU kernel vs CPU ops differ by {d} (largest {largest})"
        );
    }
}

/// A constant group has zero variance: the output is the shift (β), not NaN.
#[test]
fn fused_group_norm_of_a_constant_group_is_its_shift() {
    let gpu = gpu();
    let norm = group_norm_layer(2, 4, 1e-5, &gpu);
    let x = Tensor::<4>::from_data(TensorData::new(vec![3.0f32; 4 * 5 * 3], [1, 4, 5, 3]), &gpu);
    let fused = values(norm.forward(x.clone()));
    let ops = values(norm.forward_ops(x));
    assert!(fused.iter().all(|v| v.is_finite()), "NaN or inf from a constant group");
    assert!(max_abs_diff(&fused, &ops) < 1e-6);
}
