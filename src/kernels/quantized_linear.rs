//! A linear layer whose weights stay block-quantised (q8, q4): the kernel reads the packed
//! words and their block scales and expands them in registers, so no f32 copy of the weight is
//! ever written (the stock path expands the whole weight to f32 with one kernel, then
//! multiplies with another).
//!
//! The layout is the pack's, as burn holds it ([`crate::pack::weights`]): the weight
//! `[d_out, d_in]` row-major and flat, its values packed into u32 words lowest bits first (four
//! two's-complement bytes for q8, eight two's-complement nibbles for q4), one f32 scale per 32
//! consecutive values. The GEMM is tiled like [`super::conv2d`]: one cube computes a
//! 64-row × 64-output tile with 64 units, each an 8 × 8 block in registers; per step along K
//! (16 at a time) it stages a 16 × 64 slice of `x` and a 16 × 64 slice of the expanded weight
//! in shared memory (8 KiB, within every WebGPU adapter's 16 KiB).

use burn::backend::wgpu::CubeTensor;
use burn::tensor::quantization::{QuantScheme, QuantValue};
use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_dtype;
use cubecl::prelude::*;

use super::tile::multiply_tiles;

/// Rows of `x` per cube.
const TILE_M: usize = 64;
/// Outputs per cube.
const TILE_N: usize = 64;
/// K staged per step; `d_in` must be a multiple of it.
pub const TILE_K: usize = 16;
/// Units per cube: 8 × 8, each an 8 × 8 block of the tile.
const UNITS: u32 = 64;

#[cube(launch)]
fn quantized_linear_kernel(
    x: &Tensor<f32>,
    values: &Tensor<u32>,
    scales: &Tensor<f32>,
    bias: &Tensor<f32>,
    output: &mut Tensor<f32>,
    m_total: u32,
    k_total: u32,
    n_total: u32,
    #[comptime] bits: u32,
    #[comptime] has_bias: bool,
) {
    let m0 = CUBE_POS_X * 64;
    let n0 = CUBE_POS_Y * 64;
    let unit = UNIT_POS;
    // tx picks outputs (fastest across units, so writes are contiguous), ty rows.
    let tx = unit % 8;
    let ty = unit / 8;

    let mut a_tile = Shared::<[f32]>::new_slice(TILE_K * TILE_M);
    let mut b_tile = Shared::<[f32]>::new_slice(TILE_K * TILE_N);
    let mut acc = Array::<f32>::new(64usize);
    #[unroll]
    for i in 0..64usize {
        acc[i] = f32::new(0.0);
    }

    let per_word = comptime!(32 / bits);
    // Words holding one row's 16-value slice; the tile's 64 rows need 64 × that many.
    let words_per_row = comptime!(16 / (32 / bits));
    let words_per_unit = comptime!(16 / (32 / bits));

    for k0 in range_stepped(0u32, k_total, 16u32) {
        // Stage x: element e is (mm = e / 16, kk = e % 16), K contiguous in memory.
        #[unroll]
        for r in 0..16u32 {
            let e = unit + r * UNITS;
            let mm = e / 16;
            let kk = e % 16;
            let m = m0 + mm;
            let mut value = f32::new(0.0);
            if m < m_total {
                value = x[(m * k_total + k0 + kk) as usize];
            }
            a_tile[(kk * 64 + mm) as usize] = value;
        }
        // Stage the weight, one packed word at a time, expanded with its block's scale.
        #[unroll]
        for r in 0..words_per_unit {
            let w = unit + r * UNITS;
            let nn = w / words_per_row;
            let kk0 = (w % words_per_row) * per_word;
            let row = n0 + nn;
            let mut word = 0u32;
            let mut scale = f32::new(0.0);
            if row < n_total {
                // `d_in` is a multiple of 16, so a word never straddles two rows and the
                // values of one word share one 32-value block.
                let flat = row * k_total + k0 + kk0;
                word = values[(flat / per_word) as usize];
                scale = scales[(flat / 32) as usize];
            }
            #[unroll]
            for j in 0..per_word {
                b_tile[((kk0 + j) * 64 + nn) as usize] = field_value(word, j, bits) * scale;
            }
        }
        sync_cube();

        multiply_tiles(&a_tile, &b_tile, &mut acc, ty, tx);
        sync_cube();
    }

    #[unroll]
    for i in 0..8u32 {
        let m = m0 + ty + 8 * i;
        if m < m_total {
            #[unroll]
            for j in 0..8u32 {
                let n = n0 + tx + 8 * j;
                if n < n_total {
                    let mut y = acc[(i * 8 + j) as usize];
                    if has_bias {
                        y += bias[n as usize];
                    }
                    output[(m * n_total + n) as usize] = y;
                }
            }
        }
    }
}

/// Field `j` of a packed word (lowest bits first), read as a two's-complement integer of
/// `bits` bits: the quantised value before its block's scale.
#[cube]
pub fn field_value(word: u32, j: u32, #[comptime] bits: u32) -> f32 {
    let mask = comptime!((1u32 << bits) - 1);
    let sign = comptime!(1u32 << (bits - 1));
    let wrap = comptime!(1i32 << bits);
    let field = (word >> (j * bits)) & mask;
    let mut q = i32::cast_from(field);
    if field >= sign {
        q -= wrap;
    }
    f32::cast_from(q)
}

/// Element `flat` of a block-quantised tensor (values packed `32 / bits` to a word, one
/// scale per 32 values), expanded: for kernels that read single elements at any offset.
#[cube]
pub fn element(values: &Tensor<u32>, scales: &Tensor<f32>, flat: u32, #[comptime] bits: u32) -> f32 {
    let per_word = comptime!(32 / bits);
    let word = values[(flat / per_word) as usize];
    field_value(word, flat % per_word, bits) * scales[(flat / 32) as usize]
}

/// The bits per value of a weight this kernel reads: burn's `Q8S`/`Q4S` in blocks of 32,
/// packed in u32 words along the flat tensor; `None` for any other layout.
pub fn readable_bits(scheme: &QuantScheme) -> Option<u32> {
    use burn::tensor::quantization::{BlockSize, QuantStore, ScaleDtype};
    let blocks = scheme.block_scale()?;
    let one_level = scheme.num_levels() == 1;
    let f32_blocks_of_32 = blocks.size == BlockSize::new([32]) && blocks.dtype == ScaleDtype::F32;
    let packed = matches!(scheme.store, QuantStore::PackedU32(0));
    let bits = match scheme.value {
        QuantValue::Q8S => 8,
        QuantValue::Q4S => 4,
        _ => return None,
    };
    (one_level && f32_blocks_of_32 && packed).then_some(bits)
}

/// `[rows, d_in]` times the quantised weight `[d_out, d_in]` (flat) transposed, plus `bias`
/// `[d_out]` when `has_bias`: `[rows, d_out]`. The caller has checked [`readable_bits`] and
/// that `d_in` is a multiple of [`TILE_K`].
pub fn launch(x: CubeTensor, weight: CubeTensor, bias: CubeTensor, d_out: usize, has_bias: bool) -> CubeTensor {
    let DType::QFloat(scheme) = weight.dtype else { panic!("quantized_linear: the weight is not quantised") };
    let bits = readable_bits(&scheme).expect("quantized_linear: a layout the kernel reads");
    let x = burn_cubecl::kernel::into_contiguous(x);
    let bias = burn_cubecl::kernel::into_contiguous(bias);
    let (values, scales) = weight.quantized_handles().expect("a quantised tensor has values and scales");
    let xs = x.meta.shape().clone();
    let (rows, d_in) = (xs[0], xs[1]);
    assert!(d_in.is_multiple_of(TILE_K), "quantized_linear: d_in {d_in} is not a multiple of {TILE_K}");
    let output = empty_device_dtype(x.client.clone(), x.device.clone(), output_shape(&xs, d_out), DType::F32);
    quantized_linear_kernel::launch(
        &output.client.clone(),
        CubeCount::Static(rows.div_ceil(TILE_M) as u32, d_out.div_ceil(TILE_N) as u32, 1),
        CubeDim::new_1d(UNITS),
        x.into_tensor_arg(),
        values.into_tensor_arg(),
        scales.into_tensor_arg(),
        bias.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        rows as u32,
        d_in as u32,
        d_out as u32,
        bits,
        has_bias,
    );
    output
}

/// `[rows, d_in]` → `[rows, d_out]`.
pub fn output_shape(x: &Shape, d_out: usize) -> Shape {
    Shape::new([x[0], d_out])
}
