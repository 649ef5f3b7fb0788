//! Our own kernels, plugged into burn as a backend extension.
//!
//! On the GPU each kernel is a CubeCL `#[cube]` function (compiled to WGSL for the browser and
//! for native wgpu alike), launched on burn's `CubeBackend`; on the CPU (burn's `Flex`) it is
//! Rust on the same slices burn-flex uses ([`cpu`]). `#[backend_extension(Cube, Flex, Fusion)]`
//! generates the routing from burn's runtime-dispatched `Tensor<D>` and a lazy `Fusion`
//! operation, so a GPU kernel sits in burn's fused graph like any built-in op. The layers in
//! [`crate::nn`] call the functions below, which hand the input back (`Err`) where ours do not
//! run: the layer then runs its tensor-op version, which is also each kernel's reference in the
//! tests. `shaders/README.md` lists the kernels.

pub mod attention;
pub mod conv2d;
pub mod cpu;
pub mod group_norm;
pub mod matmul;
pub mod quantized_linear;
pub mod tile;

use burn::backend::wgpu::CubeBackend;
use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor, tensor::QuantizedTensor};
use burn::tensor::{DType, Shape, Tensor};

/// The operations we write kernels for, beside burn's own.
#[backend_extension(Cube, Flex, Fusion)]
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

    /// `x` `[batch, rows, d_in]` times `weight` `[d_out, d_in]` (PyTorch's layout) transposed,
    /// plus `bias` when `has_bias`; `x` may be a strided view (the transformer's tokens are the
    /// feature map's channels swapped last).
    #[fusion(dtype = x, shape = linear_shape(x, weight))]
    fn linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        has_bias: bool,
    ) -> FloatTensor<Self>;

    /// `lhs` `[.., m, k]` times `rhs` `[.., k, n]` (either may be a strided view; `rhs`'s
    /// leading dimensions may be 1, broadcast): on the GPU with the routine [`matmul`] chooses.
    #[fusion(dtype = lhs, shape = matmul::output_shape(lhs, rhs))]
    fn matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self>;

    /// GEGLU's activation: `x` `[batch, rows, 2f]` → `x[.., :f] · gelu(x[.., f:])` (exact, erf
    /// GELU), the transformer feed-forward's middle, in one pass.
    #[fusion(dtype = x, shape = geglu_shape(x))]
    fn geglu(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// SiLU, `x·σ(x)`, of every value.
    #[fusion(dtype = x, shape = x)]
    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `weight · mask ⊙ softmax(Q Kᵀ/√d) V` for each of `heads` heads, on `[batch, tokens, heads ×
    /// dim]` tensors as the projections make them (heads neither split nor merged by a copy);
    /// `mask` `[batch or 1, queries, 1]` (a MEPA region prompt's) read only when `has_mask`.
    #[fusion(dtype = q, shape = attention_shape(q, v))]
    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        heads: usize,
        has_mask: bool,
        weight: f32,
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

fn geglu_shape(x: &Shape) -> Shape {
    Shape::new([x[0], x[1], x[2] / 2])
}

fn linear_shape(x: &Shape, weight: &Shape) -> Shape {
    Shape::new([x[0], x[1], weight[0]])
}

fn attention_shape(q: &Shape, v: &Shape) -> Shape {
    Shape::new([q[0], q[1], v[2]])
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

    fn matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        matmul::matmul(lhs, rhs)
    }

    /// burn's slice, GELU and multiply: the layers call [`geglu`] on the CPU only.
    fn geglu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        use burn::backend::TensorMetadata;
        use burn::backend::ops::{ActivationOps, FloatTensorOps};
        use burn::tensor::Slice;
        let [b, n, c2] = std::array::from_fn(|i| x.shape()[i]);
        let half = |from: usize| [Slice::from(0..b), Slice::from(0..n), Slice::from(from..from + c2 / 2)];
        let hidden = Self::float_slice(x.clone(), &half(0));
        let gate = Self::float_slice(x, &half(c2 / 2));
        Self::float_mul(hidden, <Self as ActivationOps<Self>>::gelu(gate))
    }

    /// burn's sigmoid and multiply: the layers call [`silu`] on the CPU only.
    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        use burn::backend::ops::{ActivationOps, FloatTensorOps};
        Self::float_mul(x.clone(), <Self as ActivationOps<Self>>::sigmoid(x))
    }

    /// burn's matmul and add: the layers call [`linear`] on the CPU only.
    fn linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        has_bias: bool,
    ) -> FloatTensor<Self> {
        use burn::backend::TensorMetadata;
        use burn::backend::ops::FloatTensorOps;
        let [d_out, d_in] = std::array::from_fn(|i| weight.shape()[i]);
        let weight = Self::float_reshape(Self::float_swap_dims(weight, 0, 1), Shape::new([1, d_in, d_out]));
        let out = Self::float_matmul(x, weight);
        match has_bias {
            true => Self::float_add(out, Self::float_reshape(bias, Shape::new([1, 1, d_out]))),
            false => out,
        }
    }

    /// Ours ([`attention::launch`]) for heads it takes; burn's own attention with the heads split
    /// and merged around it for wider ones, then the weight and mask.
    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        heads: usize,
        has_mask: bool,
        weight: f32,
    ) -> FloatTensor<Self> {
        use burn::backend::TensorMetadata;
        use burn::backend::ops::{FloatTensorOps, ModuleOps};
        if attention::takes(q.shape()[2] / heads, v.shape()[2] / heads) {
            return attention::launch(q, k, v, mask, heads, has_mask, weight);
        }
        let split = |t: FloatTensor<Self>| {
            let [b, n, c] = std::array::from_fn(|i| t.shape()[i]);
            Self::float_swap_dims(Self::float_reshape(t, Shape::new([b, n, heads, c / heads])), 1, 2)
        };
        let (b, n) = (q.shape()[0], q.shape()[1]);
        let c_v = v.shape()[2];
        let out = <Self as ModuleOps<Self>>::attention(split(q), split(k), split(v), None, None, Default::default());
        let out = Self::float_mul_scalar(
            Self::float_reshape(Self::float_swap_dims(out, 1, 2), Shape::new([b, n, c_v])),
            weight.into(),
        );
        match has_mask {
            true => Self::float_mul(out, mask),
            false => out,
        }
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
    if runs_on(&x).is_none() || weight.dtype() != DType::F32 {
        return Err(x);
    }
    let has_bias = bias.is_some();
    // Never read when `has_bias` is false: the (contiguous) weight binds there, with no copy,
    // where the input, a view on the CPU, might be copied to flatten it.
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
    let Some(place) = runs_on(&x) else { return Err(x) };
    if !readable(weight, place) || weight.dims()[0] != weight_shape.iter().product::<usize>() {
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

/// Whether our kernels read this quantised weight's layout where it lies: the GPU kernels read
/// burn's packed block layouts in place; the CPU expands any quantised layout first.
fn readable(weight: &Tensor<1>, place: Place) -> bool {
    match (weight.dtype(), place) {
        (DType::QFloat(scheme), Place::Gpu) => quantized_linear::readable_bits(&scheme).is_some(),
        (DType::QFloat(_), Place::Cpu) => true,
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
    let Some(place) = runs_on(&x) else { return Err(x) };
    if !readable(weight, place)
        || (place == Place::Gpu && !d_in.is_multiple_of(quantized_linear::TILE_K))
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

/// GEGLU's `x[.., :f] · gelu(x[.., f:])` of `x` `[batch, rows, 2f]` where our CPU kernel runs;
/// `x` back elsewhere.
pub fn geglu(x: Tensor<3>) -> Result<Tensor<3>, Tensor<3>> {
    if runs_on(&x) != Some(Place::Cpu) || !x.dims()[2].is_multiple_of(2) {
        return Err(x);
    }
    Ok(Tensor::from_dispatch(<Dispatch as Kernels>::geglu(x.into_dispatch())))
}

/// SiLU of `x` where our CPU kernel runs (burn's is a scalar `expf` per value there); `x` back
/// elsewhere (the GPU fuses burn's).
pub fn silu<const D: usize>(x: Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
    if runs_on(&x) != Some(Place::Cpu) {
        return Err(x);
    }
    Ok(Tensor::from_dispatch(<Dispatch as Kernels>::silu(x.into_dispatch())))
}

/// `x` `[..., d_in]` times `weight` `[d_out, d_in]` transposed, plus `bias`, where our CPU
/// kernel runs (reading a strided `x` in place); `x` back elsewhere.
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: &Tensor<2>,
    bias: Option<&Tensor<1>>,
) -> Result<Tensor<D>, Tensor<D>> {
    if D < 2 || D > 3 || runs_on(&x) != Some(Place::Cpu) || weight.dtype() != DType::F32 {
        return Err(x);
    }
    let dims = x.dims();
    let [d_out, _] = weight.dims();
    let x3: Tensor<3> = match D {
        2 => x.reshape([1, dims[0], dims[1]]),
        _ => x.reshape([dims[0], dims[1], dims[2]]),
    };
    let has_bias = bias.is_some();
    // Never read when `has_bias` is false: the weight itself binds there, with no allocation.
    let bias = bias.cloned().unwrap_or_else(|| weight.clone().reshape([-1]));
    let out = <Dispatch as Kernels>::linear(
        x3.into_dispatch(),
        weight.clone().into_dispatch(),
        bias.into_dispatch(),
        has_bias,
    );
    let mut out_dims = dims;
    out_dims[D - 1] = d_out;
    Ok(Tensor::<3>::from_dispatch(out).reshape(out_dims))
}

/// `lhs` `[.., m, k]` times `rhs` `[.., k, n]`: the GPU's routine chosen by [`matmul`]'s rule
/// where [`layers_use_gemm`] says so, burn's matmul (and its autotuner) elsewhere.
pub fn matmul<const D: usize>(lhs: Tensor<D>, rhs: Tensor<D>) -> Tensor<D> {
    if !layers_use_gemm(&lhs) {
        return lhs.matmul(rhs);
    }
    gemm(lhs, &rhs).unwrap_or_else(|lhs| lhs.matmul(rhs))
}

/// `lhs` times `rhs` with our routine choice ([`matmul`]) on a GPU device whatever the rule says
/// (for the checks), or `lhs` back elsewhere.
pub fn gemm<const D: usize>(lhs: Tensor<D>, rhs: &Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
    if D < 2 || runs_on(&lhs) != Some(Place::Gpu) || rhs.dtype() != DType::F32 {
        return Err(lhs);
    }
    Ok(Tensor::from_dispatch(<Dispatch as Kernels>::matmul(lhs.into_dispatch(), rhs.clone().into_dispatch())))
}

/// `weight · mask ⊙ softmax(Q Kᵀ/√d) V` per head on `[batch, tokens, heads × dim]` tensors,
/// merged heads out (`mask` `[batch or 1, queries, 1]`, a MEPA region prompt's), where our
/// kernels run (on the GPU for heads up to [`attention::MAX_HEAD_WIDTH`] wide); `q` back
/// elsewhere. The layers call it where [`layers_use_attention`] says.
pub fn attention(
    q: Tensor<3>,
    k: &Tensor<3>,
    v: &Tensor<3>,
    heads: usize,
    mask: Option<&Tensor<3>>,
    weight: f32,
) -> Result<Tensor<3>, Tensor<3>> {
    let Some(place) = runs_on(&q) else { return Err(q) };
    let takes = place == Place::Cpu || attention::takes(q.dims()[2] / heads, v.dims()[2] / heads);
    let mask_fits = mask.is_none_or(|m| {
        let [mb, mq, one] = m.dims();
        (mb == 1 || mb == q.dims()[0]) && mq == q.dims()[1] && one == 1 && m.dtype() == DType::F32
    });
    if !takes || !mask_fits || k.dtype() != DType::F32 || v.dtype() != DType::F32 {
        return Err(q);
    }
    let has_mask = mask.is_some();
    // Never read when `has_mask` is false: the values bind there, with no allocation.
    let mask = mask.cloned().unwrap_or_else(|| v.clone());
    let out = <Dispatch as Kernels>::attention(
        q.into_dispatch(),
        k.clone().into_dispatch(),
        v.clone().into_dispatch(),
        mask.into_dispatch(),
        heads,
        has_mask,
        weight,
    );
    Ok(Tensor::from_dispatch(out))
}

static SWIFTSHADER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Records whether the GPU just opened is SwiftShader (Chromium's software adapter, natively or
/// in the page): the one adapter whose launch choices were measured apart from burn's defaults
/// ([`matmul`]'s routine, [`group_norm`]'s units per cube). Set by [`crate::gpu`] on opening.
pub fn set_adapter_is_swiftshader(swiftshader: bool) {
    SWIFTSHADER.store(swiftshader, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the opened GPU is SwiftShader ([`set_adapter_is_swiftshader`]).
pub fn adapter_is_swiftshader() -> bool {
    SWIFTSHADER.load(std::sync::atomic::Ordering::Relaxed)
}

/// Where our kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A CubeCL device: wgpu natively, WebGPU in the browser.
    Gpu,
    /// burn's `Flex` CPU device, natively and in wasm.
    Cpu,
}

/// Where `x` lives if our kernels run there (they are on and it is f32), else `None`.
pub fn runs_on<const D: usize>(x: &Tensor<D>) -> Option<Place> {
    if !enabled() || x.dtype() != DType::F32 {
        return None;
    }
    match x.device().as_dispatch() {
        burn::backend::DispatchDevice::Cube(_) => Some(Place::Gpu),
        burn::backend::DispatchDevice::Flex(_) => Some(Place::Cpu),
        #[allow(unreachable_patterns)]
        _ => None,
    }
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

/// Whether the layers run [`conv2d`] on `x`: on the CPU by default (with it the default model's
/// VAE decode, almost all convolution, went from 2.03× PyTorch's time to 1.04×; BENCHMARKS.md,
/// 2026-12-07) and on SwiftShader (1.2–2.2× burn's convolution there, a warm 128² ad's decode
/// 8.1 → 5.6 s natively; BENCHMARKS.md, 2026-12-08); on other GPUs only under
/// `ADCANVAS_KERNELS=all` until it is measured faster than burn's convolution (on lavapipe it is
/// 0.8–1.0×).
pub fn layers_use_conv2d(x: &Tensor<4>) -> bool {
    match (kernel_use(), runs_on(x)) {
        (KernelUse::Stock, _) | (_, None) => false,
        (_, Some(Place::Cpu)) | (KernelUse::All, Some(Place::Gpu)) => true,
        (KernelUse::Proven, Some(Place::Gpu)) => adapter_is_swiftshader(),
    }
}

/// Whether the layers' GPU matrix products (linear layers, attention) launch cubek's `Gemm`
/// routine themselves ([`matmul`]): where [`matmul::layers_take_gemm`]'s table of measured
/// adapters says so in the browser, or natively under `ADCANVAS_MATMUL=gemm`.
pub fn layers_use_gemm<const D: usize>(x: &Tensor<D>) -> bool {
    kernel_use() != KernelUse::Stock && runs_on(x) == Some(Place::Gpu) && matmul::layers_take_gemm()
}

/// Whether the layers run [`attention`] on `q`: on the CPU, and on SwiftShader, where it was
/// measured 20–37× faster than the explicit product the layers ran there (BENCHMARKS.md
/// 2026-12-08); on other GPUs only under `ADCANVAS_KERNELS=all` (on lavapipe 0.3–0.85× burn's
/// fused attention; no hardware GPU has timed it).
pub fn layers_use_attention(q: &Tensor<3>) -> bool {
    match (kernel_use(), runs_on(q)) {
        (KernelUse::Stock, _) | (_, None) => false,
        (_, Some(Place::Cpu)) | (KernelUse::All, Some(Place::Gpu)) => true,
        (KernelUse::Proven, Some(Place::Gpu)) => adapter_is_swiftshader(),
    }
}

/// Whether the layers run [`quantized_conv2d`] for their quantised weights: with
/// [`layers_use_conv2d`], whose kernel it is.
pub fn layers_use_quantized_conv2d(x: &Tensor<4>) -> bool {
    layers_use_conv2d(x)
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
    if runs_on(&x).is_none() {
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
