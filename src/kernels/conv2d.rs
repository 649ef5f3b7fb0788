//! 2-D convolution as an implicit GEMM: the output is a matrix of pixels × output channels,
//! the product of the input's im2col view (never written out) and the weights.
//!
//! One cube computes a 64-pixel × 64-channel tile of the output with 64 units, each unit an
//! 8 × 8 block held in registers. Per step along K (input channel × kernel tap, 16 at a
//! time) the cube stages a 16 × 64 slice of the im2col view, gathered from the input with
//! zero padding, and a 16 × 64 slice of the weights in shared memory; each value staged is
//! then used 64 times from shared memory, where burn's direct convolution reads every input
//! value once per output channel from global memory. The bias is added as the tile is
//! written. The weights are f32, or block-quantised (q8, q4) and expanded as they are staged
//! ([`super::quantized_linear::element`]). Groups and dilation are not handled here (the
//! layers that call this have none).
//! 8 KiB of shared memory and 64 units per cube: within the limits every WebGPU adapter
//! guarantees (16 KiB, 256 invocations), so no adapter refuses the launch. (An 8 × 8 block a
//! unit, not 4 × 4 with 256 units: 1.4–3× faster on lavapipe, and the usual shape on GPUs;
//! a 32-deep K step was no faster.)

use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_dtype;
use cubecl::prelude::*;

use super::quantized_linear::element;
use super::tile::multiply_tiles;

/// Output pixels per cube (rows of the GEMM tile).
const TILE_M: usize = 64;
/// Output channels per cube (columns of the tile).
const TILE_N: usize = 64;
/// K (input channel × tap) staged per step.
const TILE_K: usize = 16;
/// Units per cube: 8 × 8, each an 8 × 8 block of the tile.
const UNITS: u32 = 64;

#[cube(launch)]
fn conv2d_kernel(
    input: &Tensor<f32>,
    weight: &Tensor<f32>,
    values: &Tensor<u32>,
    scales: &Tensor<f32>,
    bias: &Tensor<f32>,
    output: &mut Tensor<f32>,
    c_in: u32,
    h: u32,
    w: u32,
    c_out: u32,
    out_h: u32,
    out_w: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    #[comptime] k_h: u32,
    #[comptime] k_w: u32,
    #[comptime] has_bias: bool,
    #[comptime] weight_bits: u32,
) {
    let quantized = comptime!(weight_bits > 0);
    let out_hw = out_h * out_w;
    let taps = comptime!(k_h * k_w);
    let k_total = c_in * taps;
    let m_total = (output.len() as u32) / c_out;
    let m0 = CUBE_POS_X * 64;
    let n0 = CUBE_POS_Y * 64;
    let unit = UNIT_POS;
    // ty picks pixels (fastest across units, so writes are contiguous), tx channels.
    let ty = unit % 8;
    let tx = unit / 8;

    let mut a_tile = Shared::<[f32]>::new_slice(TILE_K * TILE_M);
    let mut b_tile = Shared::<[f32]>::new_slice(TILE_K * TILE_N);
    let mut acc = Array::<f32>::new(64usize);
    #[unroll]
    for i in 0..64usize {
        acc[i] = f32::new(0.0);
    }

    // The im2col element a unit stages is (kk = unit / 64 + r, mm = unit % 64) with one unit
    // per pixel of the tile: its pixel is the same at every step, so it is decoded once
    // (integer division is slow on CPUs).
    let m_own = m0 + unit;
    let n_own = m_own / out_hw;
    let pixel_own = m_own % out_hw;
    let iy0 = (pixel_own / out_w) * stride;
    let ix0 = (pixel_own % out_w) * stride;
    let in_image = m_own < m_total;
    let plane = h * w;
    let image_base = n_own * c_in * plane;

    for k0 in range_stepped(0u32, k_total, 16u32) {
        #[unroll]
        for kk in 0..16u32 {
            let k = k0 + kk;
            let mut value = f32::new(0.0);
            if in_image && k < k_total {
                // `taps` and `k_w` are comptime: these divisions compile to multiplies.
                let ci = k / taps;
                let tap = k % taps;
                let iy = iy0 + tap / k_w;
                let ix = ix0 + tap % k_w;
                if iy >= pad_top && iy < h + pad_top && ix >= pad_left && ix < w + pad_left {
                    value = input[(image_base + ci * plane + (iy - pad_top) * w + (ix - pad_left)) as usize];
                }
            }
            a_tile[(kk * 64 + unit) as usize] = value;
        }
        // Stage the weight slice: element e is (nn = e / 16, kk = e % 16), K contiguous in memory.
        #[unroll]
        for r in 0..16u32 {
            let e = unit + r * UNITS;
            let nn = e / 16;
            let kk = e % 16;
            let co = n0 + nn;
            let k = k0 + kk;
            let mut value = f32::new(0.0);
            if co < c_out && k < k_total {
                if quantized {
                    value = element(values, scales, co * k_total + k, weight_bits);
                } else {
                    value = weight[(co * k_total + k) as usize];
                }
            }
            b_tile[(kk * 64 + nn) as usize] = value;
        }
        sync_cube();

        multiply_tiles(&a_tile, &b_tile, &mut acc, ty, tx);
        sync_cube();
    }

    #[unroll]
    for i in 0..8u32 {
        let m = m0 + ty + 8 * i;
        if m < m_total {
            let n = m / out_hw;
            let pixel = m % out_hw;
            #[unroll]
            for j in 0..8u32 {
                let co = n0 + tx + 8 * j;
                if co < c_out {
                    let mut y = acc[(i * 8 + j) as usize];
                    if has_bias {
                        y += bias[co as usize];
                    }
                    output[((n * c_out + co) * out_hw + pixel) as usize] = y;
                }
            }
        }
    }
}

/// The output shape of a convolution of `x` `[n, c_in, h, w]` by `weight` `[c_out, c_in, kh, kw]`.
pub fn output_shape(x: &Shape, weight: &Shape, stride: usize, padding: [usize; 4]) -> Shape {
    let [top, bottom, left, right] = padding;
    let out_h = (x[2] + top + bottom - weight[2]) / stride + 1;
    let out_w = (x[3] + left + right - weight[3]) / stride + 1;
    Shape::new([x[0], weight[0], out_h, out_w])
}

/// `x` `[n, c_in, h, w]`, `weight` `[c_out, c_in, kh, kw]`, `bias` `[c_out]` (read only when
/// `has_bias`), padding `[top, bottom, left, right]`; all f32.
pub fn launch(
    x: CubeTensor,
    weight: CubeTensor,
    bias: CubeTensor,
    stride: usize,
    padding: [usize; 4],
    has_bias: bool,
) -> CubeTensor {
    let weight = burn_cubecl::kernel::into_contiguous(weight);
    let weight_shape = weight.meta.shape().clone();
    let unused = || empty_device_dtype(x.client.clone(), x.device.clone(), Shape::new([1]), DType::U32);
    let (values, scales) = (unused(), bias.clone());
    run(x, Weight { weight, values, scales, shape: weight_shape, bits: 0 }, bias, stride, padding, has_bias)
}

/// Like [`launch`] with a block-quantised weight (flat, [`super::quantized_linear::readable_bits`]
/// checked by the caller) of shape `weight_shape`, read packed in the kernel.
pub fn launch_quantized(
    x: CubeTensor,
    weight: CubeTensor,
    weight_shape: [usize; 4],
    bias: CubeTensor,
    stride: usize,
    padding: [usize; 4],
    has_bias: bool,
) -> CubeTensor {
    let DType::QFloat(scheme) = weight.dtype else { panic!("conv2d: the weight is not quantised") };
    let bits = super::quantized_linear::readable_bits(&scheme).expect("conv2d: a layout the kernel reads");
    let (values, scales) = weight.quantized_handles().expect("a quantised tensor has values and scales");
    let shape = Shape::new(weight_shape);
    run(x, Weight { weight: bias.clone(), values, scales, shape, bits }, bias, stride, padding, has_bias)
}

/// The weight as the kernel binds it: f32 (`bits` 0) or packed values and scales; the other
/// bindings hold a placeholder the kernel never reads.
struct Weight {
    weight: CubeTensor,
    values: CubeTensor,
    scales: CubeTensor,
    shape: Shape,
    bits: u32,
}

fn run(x: CubeTensor, w: Weight, bias: CubeTensor, stride: usize, padding: [usize; 4], has_bias: bool) -> CubeTensor {
    let x = burn_cubecl::kernel::into_contiguous(x);
    let bias = burn_cubecl::kernel::into_contiguous(bias);
    let xs = x.meta.shape().clone();
    let ws = w.shape;
    let shape = output_shape(&xs, &ws, stride, padding);
    let (m_total, c_out) = (shape[0] * shape[2] * shape[3], shape[1]);
    let output = empty_device_dtype(x.client.clone(), x.device.clone(), shape.clone(), DType::F32);
    conv2d_kernel::launch(
        &output.client.clone(),
        CubeCount::Static(m_total.div_ceil(TILE_M) as u32, c_out.div_ceil(TILE_N) as u32, 1),
        CubeDim::new_1d(UNITS),
        x.into_tensor_arg(),
        w.weight.into_tensor_arg(),
        w.values.into_tensor_arg(),
        w.scales.into_tensor_arg(),
        bias.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        xs[1] as u32,
        xs[2] as u32,
        xs[3] as u32,
        c_out as u32,
        shape[2] as u32,
        shape[3] as u32,
        stride as u32,
        padding[0] as u32,
        padding[2] as u32,
        ws[2] as u32,
        ws[3] as u32,
        has_bias,
        w.bits,
    );
    output
}
