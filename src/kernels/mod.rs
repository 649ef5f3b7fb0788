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
pub mod quantized_linear;
pub mod tile;

use burn::backend::wgpu::CubeBackend;
use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor, tensor::QuantizedTensor};
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

    /// [`Kernels::conv2d`] with a block-quantised weight (flat, as the pack stores it) of
    /// shape `weight_shape`, expanded in the kernel.
    #[fusion(dtype = x, shape = quantized_conv2d_shape(x, weight_shape, stride, padding))]
    fn quantized_conv2d(
        x: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        weight_shape: [usize; 4],
        bias: FloatTensor<Self>,
        stride: usize,
        padding: [usize; 4],
        has_bias: bool,
    ) -> FloatTensor<Self>;

    /// `x` `[rows, d_in]` times a block-quantised weight `[d_out, d_in]` (flat, as the pack
    /// stores it) transposed, plus `bias` when `has_bias`; the weight is expanded in the kernel.
    #[fusion(dtype = x, shape = quantized_linear::output_shape(x, *d_out))]
    fn quantized_linear(
        x: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        bias: FloatTensor<Self>,
        d_out: usize,
        has_bias: bool,
    ) -> FloatTensor<Self>;
}

fn conv2d_shape(x: &Shape, weight: &Shape, stride: &usize, padding: &[usize; 4]) -> Shape {
    conv2d::output_shape(x, weight, *stride, *padding)
}

fn quantized_conv2d_shape(x: &Shape, weight: &[usize; 4], stride: &usize, padding: &[usize; 4]) -> Shape {
    conv2d::output_shape(x, &Shape::new(*weight), *stride, *padding)
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

    fn quantized_conv2d(
        x: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        weight_shape: [usize; 4],
        bias: FloatTensor<Self>,
        stride: usize,
        padding: [usize; 4],
        has_bias: bool,
    ) -> FloatTensor<Self> {
        conv2d::launch_quantized(x, weight, weight_shape, bias, stride, padding, has_bias)
    }

    fn quantized_linear(
        x: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        bias: FloatTensor<Self>,
        d_out: usize,
        has_bias: bool,
    ) -> FloatTensor<Self> {
        quantized_linear::launch(x, weight, bias, d_out, has_bias)
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

/// [`conv2d`] with a block-quantised weight (flat blocks of a `weight_shape` weight,
/// [`crate::pack::weights::Param::Quantized`]) read packed in the kernel; `x` back where our
/// kernel does not run or cannot read the layout.
pub fn quantized_conv2d(
    x: Tensor<4>,
    weight: &Tensor<1>,
    weight_shape: [usize; 4],
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: [usize; 4],
) -> Result<Tensor<4>, Tensor<4>> {
    if !runs_ours(&x) || !readable(weight) || weight.dims()[0] != weight_shape.iter().product::<usize>() {
        return Err(x);
    }
    let has_bias = bias.is_some();
    // Never read when `has_bias` is false: the input itself binds there, with no allocation.
    let bias = bias.cloned().unwrap_or_else(|| x.clone().reshape([-1]));
    let out = <Dispatch as Kernels>::quantized_conv2d(
        x.into_dispatch(),
        weight.clone().into_dispatch(),
        weight_shape,
        bias.into_dispatch(),
        stride,
        padding,
        has_bias,
    );
    Ok(Tensor::from_dispatch(out))
}

/// Whether our kernels read this quantised weight's layout where it lies.
fn readable(weight: &Tensor<1>) -> bool {
    match weight.dtype() {
        DType::QFloat(scheme) => quantized_linear::readable_bits(&scheme).is_some(),
        _ => false,
    }
}

/// `x` `[..., d_in]` times the block-quantised `weight` (flat blocks of a `[d_out, d_in]`
/// weight, [`crate::pack::weights::Param::Quantized`]) transposed, plus `bias`: the weight read
/// packed in the kernel. `x` back where our kernel does not run or cannot read the layout.
pub fn quantized_linear<const D: usize>(
    x: Tensor<D>,
    weight: &Tensor<1>,
    d_out: usize,
    bias: Option<&Tensor<1>>,
) -> Result<Tensor<D>, Tensor<D>> {
    let d_in = x.dims()[D - 1];
    if !runs_ours(&x)
        || !readable(weight)
        || !d_in.is_multiple_of(quantized_linear::TILE_K)
        || weight.dims()[0] != d_out * d_in
    {
        return Err(x);
    }
    let mut out_dims = x.dims();
    out_dims[D - 1] = d_out;
    let rows = x.shape().num_elements() / d_in;
    let has_bias = bias.is_some();
    // Never read when `has_bias` is false: the input itself binds there, with no allocation.
    let bias = bias.cloned().unwrap_or_else(|| x.clone().reshape([-1]));
    let out = <Dispatch as Kernels>::quantized_linear(
        x.reshape([rows, d_in]).into_dispatch(),
        weight.clone().into_dispatch(),
        bias.into_dispatch(),
        d_out,
        has_bias,
    );
    Ok(Tensor::<2>::from_dispatch(out).reshape(out_dims))
}

/// Whether `x` lives where our kernels run: a CubeCL (wgpu/WebGPU) device, in f32.
fn runs_ours<const D: usize>(x: &Tensor<D>) -> bool {
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
/// faster than burn's convolution (on lavapipe it is 0.6–1.0×; BENCHMARKS.md).
pub fn layers_use_conv2d() -> bool {
    kernel_use() == KernelUse::All
}

/// Whether the layers run [`quantized_conv2d`] for their quantised weights: with
/// [`layers_use_conv2d`], whose kernel it is.
pub fn layers_use_quantized_conv2d() -> bool {
    layers_use_conv2d()
}

/// Whether the layers run [`quantized_linear`] for their quantised weights: only under
/// `ADCANVAS_KERNELS=all` until it is measured faster than expanding the weight and burn's
/// matmul.
pub fn layers_use_quantized_linear() -> bool {
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
