//! Our own GPU kernels, plugged into burn as a backend extension.
//!
//! Each kernel is a CubeCL `#[cube]` function (compiled to WGSL for the browser and for
//! native wgpu alike), launched on burn's `CubeBackend`; `#[backend_extension(Cube, Fusion)]`
//! generates the routing from burn's runtime-dispatched `Tensor<D>` and a lazy `Fusion`
//! operation, so a kernel sits in burn's fused graph like any built-in op. The layers in
//! [`crate::nn`] call the functions below, which hand the input back (`Err`) on a device
//! without our kernels (the `flex` CPU device): the layer then runs its tensor-op version, which is also
//! each kernel's reference in the tests. `shaders/README.md` lists the kernels.

pub mod conv2d;
pub mod group_norm;

use burn::backend::wgpu::CubeBackend;
use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::{DType, Shape, Tensor};

/// The operations we write kernels for, beside burn's own.
#[backend_extension(Cube, Fusion)]
pub trait Kernels: Backend {
    /// GroupNorm over `[batch, channels, h, w]` with per-channel scale and shift, then SiLU
    /// when `silu`.
    #[fusion(dtype = x, shape = x)]
    fn group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f32,
        silu: bool,
    ) -> FloatTensor<Self>;

    /// 2-D convolution (no groups, no dilation) as an implicit GEMM; `padding` is
    /// `[top, bottom, left, right]`, `bias` read only when `has_bias`.
    #[fusion(dtype = x, shape = conv2d_shape(x, weight, stride, padding))]
    fn conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        padding: [usize; 4],
        has_bias: bool,
    ) -> FloatTensor<Self>;
}

fn conv2d_shape(x: &Shape, weight: &Shape, stride: &usize, padding: &[usize; 4]) -> Shape {
    conv2d::output_shape(x, weight, *stride, *padding)
}

impl Kernels for CubeBackend {
    fn group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f32,
        silu: bool,
    ) -> FloatTensor<Self> {
        group_norm::launch(x, gamma, beta, groups, eps, silu)
    }

    fn conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        padding: [usize; 4],
        has_bias: bool,
    ) -> FloatTensor<Self> {
        conv2d::launch(x, weight, bias, stride, padding, has_bias)
    }
}

/// A convolution as an implicit GEMM, or `x` back where our kernel does not run. `padding`
/// is `[top, bottom, left, right]`; the caller has checked one group and no dilation.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: [usize; 4],
) -> Result<Tensor<4>, Tensor<4>> {
    if !runs_ours(&x) || weight.dtype() != DType::F32 {
        return Err(x);
    }
    let has_bias = bias.is_some();
    let bias = bias.cloned().unwrap_or_else(|| weight.clone().reshape([-1]));
    let out = <Dispatch as Kernels>::conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        stride,
        padding,
        has_bias,
    );
    Ok(Tensor::from_dispatch(out))
}

/// Whether `x` lives where our kernels run: a CubeCL (wgpu/WebGPU) device, in f32.
fn runs_ours(x: &Tensor<4>) -> bool {
    enabled() && x.dtype() == DType::F32 && matches!(x.device().as_dispatch(), burn::backend::DispatchDevice::Cube(_))
}

/// Which of our kernels run, from `ADCANVAS_KERNELS` natively: `stock` none (stock burn on the
/// same build, for benchmarks and bisection); unset, those measured faster than stock; `all`
/// also those written and checked but not yet measured faster anywhere (the implicit-GEMM
/// convolution). The browser runs the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelUse {
    Stock,
    Proven,
    All,
}

pub fn kernel_use() -> KernelUse {
    #[cfg(not(target_arch = "wasm32"))]
    {
        static USE: std::sync::OnceLock<KernelUse> = std::sync::OnceLock::new();
        *USE.get_or_init(|| match std::env::var("ADCANVAS_KERNELS").as_deref() {
            Ok("stock") => KernelUse::Stock,
            Ok("all") => KernelUse::All,
            _ => KernelUse::Proven,
        })
    }
    #[cfg(target_arch = "wasm32")]
    {
        KernelUse::Proven
    }
}

fn enabled() -> bool {
    kernel_use() != KernelUse::Stock
}

/// Whether the layers run [`conv2d`]: only under `ADCANVAS_KERNELS=all` until it is measured
/// faster than burn's convolution (on lavapipe it is 0.55–1.15×; BENCHMARKS.md).
pub fn layers_use_conv2d() -> bool {
    kernel_use() == KernelUse::All
}

/// GroupNorm (+ SiLU) in one launch, or `x` back where our kernel does not run.
pub fn group_norm(
    x: Tensor<4>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor<4>, Tensor<4>> {
    if !runs_ours(&x) {
        return Err(x);
    }
    let out = <Dispatch as Kernels>::group_norm(
        x.into_dispatch(),
        gamma.clone().into_dispatch(),
        beta.clone().into_dispatch(),
        groups,
        eps as f32,
        silu,
    );
    Ok(Tensor::from_dispatch(out))
}
