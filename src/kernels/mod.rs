//! Our own GPU kernels, plugged into burn as a backend extension.
//!
//! Each kernel is a CubeCL `#[cube]` function (compiled to WGSL for the browser and for
//! native wgpu alike), launched on burn's `CubeBackend`; `#[backend_extension(Cube, Fusion)]`
//! generates the routing from burn's runtime-dispatched `Tensor<D>` and a lazy `Fusion`
//! operation, so a kernel sits in burn's fused graph like any built-in op. The layers in
//! [`crate::nn`] call the functions below, which hand the input back (`Err`) on a device
//! without our kernels (the `flex` CPU device): the layer then runs its tensor-op version, which is also
//! each kernel's reference in the tests. `shaders/README.md` lists the kernels.

pub mod group_norm;

use burn::backend::wgpu::CubeBackend;
use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::{DType, Tensor};

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
}

/// Whether `x` lives where our kernels run: a CubeCL (wgpu/WebGPU) device, in f32.
fn runs_ours(x: &Tensor<4>) -> bool {
    enabled() && x.dtype() == DType::F32 && matches!(x.device().as_dispatch(), burn::backend::DispatchDevice::Cube(_))
}

/// `ADCANVAS_KERNELS=stock` turns our kernels off (natively), so a benchmark or a bisection
/// can run stock burn on the same build.
fn enabled() -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| std::env::var("ADCANVAS_KERNELS").map_or(true, |v| v != "stock"))
    }
    #[cfg(target_arch = "wasm32")]
    {
        true
    }
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
