//! The GPU matrix products of the layers (linear, attention) with the routine chosen by a table
//! of measured adapters where no autotuner times the candidates: the browser build (burn's
//! `autotune` feature is native-only, `Cargo.toml`).
//!
//! Without an autotuner burn runs every matmul with cubek's `Auto` strategy: cooperative-matrix
//! (cmma) tiles where the adapter has them, else `SimpleUnit` (each unit one tile of the
//! output); WebGPU exposes no cooperative matrices, so in the page every matmul took
//! `SimpleUnit` (burn's fused matmul first tries cmma, fails, and runs the same). The table
//! (BENCHMARKS.md, 2026-12-07, the same build without an autotuner, whole ads):
//!
//! | adapter | `Gemm` (plane-level, no shared-memory stage) against `SimpleUnit` | chosen |
//! |---|---|---|
//! | SwiftShader (Chromium's, natively and in the page) | denoising 5× faster at 64², 1.9× at 256² natively; ads 1.5–2.4× faster in the page | `Gemm` |
//! | lavapipe | 1.75× faster matmuls at 64², denoising 1.65× slower at 256² | `SimpleUnit` |
//! | hardware GPUs | not measured (none was lent) | `SimpleUnit` (burn's own choice) |
//!
//! [`crate::gpu`] records whether the opened adapter is SwiftShader
//! ([`super::adapter_is_swiftshader`]; the page runs there only when asked, `?device=gpu`, and
//! in the browser tests). Natively the autotuner chooses, and `ADCANVAS_MATMUL=gemm` forces this
//! path to set it beside the autotuner's choice on one build.

use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_dtype;
use cubecl::ir::{ElemType, FloatKind};
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems, MatmulSetupError};
use cubek::matmul::launch::launch_ref;
use cubek::matmul::multi_level;
use cubek::matmul::multi_level::routines::gemm::GemmStrategy;
use cubek::matmul::routine::BlueprintStrategy;
use cubek::matmul::strategy::Strategy;
use cubek::std::InputBinding;

/// Whether the layers launch [`matmul`] themselves on the GPU: the table's answer for the
/// browser's adapter; natively `ADCANVAS_MATMUL=gemm` (the autotuner chooses otherwise).
pub fn layers_take_gemm() -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    {
        static GEMM: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *GEMM.get_or_init(|| std::env::var("ADCANVAS_MATMUL").as_deref() == Ok("gemm"))
    }
    #[cfg(target_arch = "wasm32")]
    {
        super::adapter_is_swiftshader()
    }
}

/// `lhs` `[batch, m, k]` times `rhs` `[batch or 1, k, n]`, both f32 and either may be a strided
/// view (a transposed weight, split heads): `[batch, m, n]`, contiguous.
pub fn matmul(lhs: CubeTensor, rhs: CubeTensor) -> CubeTensor {
    let (ls, rs) = (lhs.meta.shape().clone(), rhs.meta.shape().clone());
    let rank = ls.num_dims();
    assert_eq!(rank, rs.num_dims(), "matmul: operands of different rank");
    assert_eq!(ls[rank - 1], rs[rank - 2], "matmul: inner dimensions differ");
    assert!(lhs.dtype == DType::F32 && rhs.dtype == DType::F32, "matmul: f32 operands only");
    let out = empty_device_dtype(lhs.client.clone(), lhs.device.clone(), output_shape(&ls, &rs), DType::F32);
    let gemm = Strategy::MultiLevel(multi_level::Strategy::Gemm(BlueprintStrategy::Inferred(GemmStrategy {
        target_num_planes: None,
    })));
    if let Err(err) = launch(&gemm, &lhs, &rhs, &out) {
        match err {
            // A routine that cannot take the problem or the adapter declines before launching.
            MatmulSetupError::Unavailable(_) | MatmulSetupError::InvalidConfig(_) => {
                launch(&Strategy::Auto, &lhs, &rhs, &out).unwrap_or_else(|e| panic!("matmul: {e:?}"))
            }
            other => panic!("matmul: {other:?}"),
        }
    }
    out
}

/// `[.., m, k]` times `[.., k, n]` → `[.., m, n]`, leading dimensions broadcast.
pub fn output_shape(lhs: &Shape, rhs: &Shape) -> Shape {
    let rank = lhs.num_dims();
    let mut dims: Vec<usize> = (0..rank - 2).map(|i| lhs[i].max(rhs[i])).collect();
    dims.extend([lhs[rank - 2], rhs[rank - 1]]);
    Shape::from(dims)
}

fn launch(strategy: &Strategy, lhs: &CubeTensor, rhs: &CubeTensor, out: &CubeTensor) -> Result<(), MatmulSetupError> {
    let f32 = ElemType::Float(FloatKind::F32);
    let mut dtypes =
        MatmulElems::from_globals(&MatmulGlobalElems { lhs: f32.into(), rhs: f32.into(), out: f32.into() });
    launch_ref(
        strategy,
        &out.client,
        InputBinding::new(lhs.clone().binding(), f32),
        InputBinding::new(rhs.clone().binding(), f32),
        out.clone().binding(),
        &mut dtypes,
    )
}
