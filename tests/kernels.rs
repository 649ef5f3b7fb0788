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

/// The 64-unit cubes SwiftShader gets (`group_norm::UNITS_SWIFTSHADER`), here on lavapipe: the
/// adapter flag only changes the cube size, so the results must agree the same way. (Another
/// test running meanwhile may take 64-unit cubes too; its answers do not change.)
#[test]
fn fused_group_norm_with_swiftshaders_cube_size_matches_the_tensor_ops() {
    let gpu = gpu();
    adcanvas::kernels::set_adapter_is_swiftshader(true);
    let checked = pollster::block_on(kernel_check::group_norm(&gpu));
    adcanvas::kernels::set_adapter_is_swiftshader(false);
    for c in &checked.unwrap() {
        assert!(c.ran_ours && c.agrees(), "{c:?}");
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

#[test]
fn gemm_routine_matches_burns_matmul_on_views_and_odd_shapes() {
    let checked = pollster::block_on(kernel_check::matmul(&gpu())).unwrap();
    assert_eq!(checked.len(), kernel_check::MATMUL_CASES.len() + 2);
    for c in &checked {
        assert!(c.ran_ours && c.agrees(), "{c:?}");
    }
}

/// Attention in one launch (src/kernels/attention.rs) against Q Kᵀ, softmax and P V on split heads:
/// the default model's self- and cross-attention, SD's 40-wide heads, one query, key counts that
/// are not a multiple of the key block, a value width unlike the key's, a 64-wide head; every
/// other case with a MEPA region mask and weight applied in the kernel.
#[test]
fn flash_attention_matches_the_explicit_product_on_odd_shapes() {
    let checked = pollster::block_on(kernel_check::attention(&gpu())).unwrap();
    assert_eq!(checked.len(), kernel_check::ATTENTION_CASES.len());
    for c in &checked {
        assert!(c.ran_ours && c.agrees(), "{c:?}");
    }
}

/// A head wider than the kernel takes (SD's VAE: one head of 512) is declined, and the layer runs
/// its tensor ops.
#[test]
fn flash_attention_declines_heads_wider_than_it_holds() {
    let gpu = gpu();
    let t = |n: usize| Tensor::<3>::zeros([1, n, 512], &gpu);
    assert!(adcanvas::kernels::attention(t(4), &t(4), &t(4), 1, None, 1.0).is_err());
    assert!(adcanvas::kernels::attention(t(4), &t(4), &t(4), 2, None, 1.0).is_ok());
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

/// The extension's GPU side of the ops the layers call ours on the CPU only (linear on strided
/// tokens, GEGLU) is burn's own ops, and attention on unsplit heads our kernel: the same results
/// as the layer's tensor ops, so a caller that routes them to the GPU gets the same numbers.
#[test]
fn gpu_side_of_the_cpu_only_ops_matches_the_tensor_ops() {
    use adcanvas::kernels::Kernels;
    use adcanvas::nn::attention::explicit_attention;
    use burn::backend::Dispatch;
    let gpu = gpu();
    let wave = |shape: [usize; 3], phase: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37 + phase).sin()).collect();
        Tensor::<3>::from_data(TensorData::new(v, shape), &gpu)
    };
    let close = |ours: Tensor<3>, ops: Tensor<3>, what: &str| {
        let (ours, ops) = (ours.into_data().try_to_vec::<f32>().unwrap(), ops.into_data().try_to_vec::<f32>().unwrap());
        let d = max_abs_diff(&ours, &ops);
        assert!(d < 1e-5, "{what}: {d}");
    };

    // linear: tokens as the transformer makes them (a transposed view), weight [d_out, d_in].
    let x = wave([2, 24, 5], 0.0).swap_dims(1, 2);
    let (weight, bias) = (wave([1, 7, 24], 1.0).reshape([7, 24]), wave([1, 1, 7], 2.0).reshape([7]));
    let ours = Tensor::<3>::from_dispatch(<Dispatch as Kernels>::linear(
        x.clone().into_dispatch(),
        weight.clone().into_dispatch(),
        bias.clone().into_dispatch(),
        true,
    ));
    close(ours, x.matmul(weight.transpose().unsqueeze()) + bias.unsqueeze(), "linear");

    // GEGLU.
    let x = wave([2, 3, 10], 0.5);
    let ours = Tensor::<3>::from_dispatch(<Dispatch as Kernels>::geglu(x.clone().into_dispatch()));
    close(ours, x.clone().narrow(2, 0, 5) * adcanvas::nn::gelu(x.narrow(2, 5, 5)), "geglu");

    // SiLU.
    let x = wave([2, 3, 10], 3.0).mul_scalar(6.0);
    let ours = Tensor::<3>::from_dispatch(<Dispatch as Kernels>::silu(x.clone().into_dispatch()));
    close(ours, adcanvas::nn::silu_ops(x), "silu");

    // Attention: 2 heads of 4 over 6 keys.
    let (q, k, v) = (wave([1, 5, 8], 0.1), wave([1, 6, 8], 0.2), wave([1, 6, 8], 0.3));
    let ours = Tensor::<3>::from_dispatch(<Dispatch as Kernels>::attention(
        q.clone().into_dispatch(),
        k.clone().into_dispatch(),
        v.clone().into_dispatch(),
        v.clone().into_dispatch(),
        2,
        false,
        1.0,
    ));
    let split = |t: Tensor<3>| {
        let [b, n, _] = t.dims();
        t.reshape([b, n, 2, 4]).swap_dims(1, 2)
    };
    let ops = explicit_attention(split(q), split(k), split(v)).swap_dims(1, 2).reshape([1, 5, 8]);
    close(ours, ops, "attention");
}

/// The CPU's SiLU (ours, with its own `exp`) is burn's, on a strided view too.
#[test]
fn cpu_silu_matches_the_tensor_ops() {
    let cpu = Device::flex();
    let v: Vec<f32> = (0..2 * 3 * 40 * 50).map(|i| ((i as f32) * 0.37).sin() * 12.0).collect();
    let x = Tensor::<4>::from_data(TensorData::new(v, [2, 3, 40, 50]), &cpu).swap_dims(2, 3);
    let (ours, ops) = (values(adcanvas::nn::silu(x.clone())), values(adcanvas::nn::silu_ops(x)));
    assert!(max_abs_diff(&ours, &ops) < 2e-6, "{}", max_abs_diff(&ours, &ops));
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
