//! Our kernels on the CPU: burn's `Flex` backend, natively (rayon over the cores) and in the
//! browser's wasm (one thread, SIMD128). The arithmetic is `crates/cpu-kernels` (plain f32
//! slices, its own crate so the browser build compiles it for speed); this is the glue that
//! hands it a Flex tensor's storage, without a copy where the tensor is contiguous.
//!
//! Why ours: burn-flex's convolution converts the input to NHWC, re-lays the weight out and
//! copies each tile's result back on every call, its attention loops in scalar code with
//! libm's `expf`, and its linear copies a transposed input first (BENCHMARKS.md, issue 30).

use burn::backend::Flex;
use burn::backend::ops::QTensorOps;
use burn::backend::tensor::{FloatTensor, QuantizedTensor};
use burn::tensor::FloatDType;
use burn::tensor::TensorData;
use burn_flex::FlexTensor;

use adcanvas_cpu_kernels as kernels;

use super::Kernels;

impl Kernels for Flex {
    fn group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f32,
        silu: bool,
    ) -> FloatTensor<Self> {
        let dims = dims::<4>(&x);
        let out = kernels::group_norm(values(&x), dims, values(&gamma), values(&beta), groups, eps, silu);
        tensor(out, dims)
    }

    fn conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        padding: [usize; 4],
        has_bias: bool,
    ) -> FloatTensor<Self> {
        let (x_dims, w_dims) = (dims::<4>(&x), dims::<4>(&weight));
        let bias = has_bias.then(|| values(&bias));
        let (out, dims) = kernels::conv2d(values(&x), x_dims, values(&weight), w_dims, bias, stride, padding);
        tensor(out, dims)
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
        let weight = Flex::dequantize(weight, FloatDType::F32);
        let x_dims = dims::<4>(&x);
        let bias = has_bias.then(|| values(&bias));
        let (out, dims) = kernels::conv2d(values(&x), x_dims, values(&weight), weight_shape, bias, stride, padding);
        tensor(out, dims)
    }

    fn quantized_linear(
        x: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        bias: FloatTensor<Self>,
        d_out: usize,
        has_bias: bool,
    ) -> FloatTensor<Self> {
        let weight = Flex::dequantize(weight, FloatDType::F32);
        let [rows, d_in] = dims::<2>(&x);
        let bias = has_bias.then(|| values(&bias));
        let out = kernels::linear(values(&x), rows, d_in, values(&weight), d_out, bias);
        tensor(out, [rows, d_out])
    }

    fn linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        has_bias: bool,
    ) -> FloatTensor<Self> {
        let ([batch, rows, d_in], [d_out, _]) = (dims::<3>(&x), dims::<2>(&weight));
        let bias = has_bias.then(|| values(&bias));
        let out = strided_linear(&x, [batch, rows, d_in], values(&weight), d_out, bias);
        tensor(out, [batch, rows, d_out])
    }

    fn geglu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let [b, n, c2] = dims::<3>(&x);
        tensor(kernels::geglu(values(&x), b * n, c2 / 2), [b, n, c2 / 2])
    }

    /// burn-flex's matmul: the layers call [`super::matmul`]'s kernel on the GPU only.
    fn matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        use burn::backend::ops::FloatTensorOps;
        Self::float_matmul(lhs, rhs)
    }

    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let shape = x.layout().shape().clone();
        FlexTensor::from_data(TensorData::new(kernels::silu(values(&x)), shape))
    }

    /// Our attention kernel, then each output row scaled by the weight and the mask at its query.
    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        heads: usize,
        has_mask: bool,
        weight: f32,
    ) -> FloatTensor<Self> {
        let ([b, nq, c], [_, nk, _], [_, _, c_v]) = (dims::<3>(&q), dims::<3>(&k), dims::<3>(&v));
        let mut out =
            kernels::attention(values(&q), values(&k), values(&v), [b, nq, nk], c / heads, c_v / heads, heads);
        let mask = if has_mask { Some(values(&mask)) } else { None };
        if has_mask || weight != 1.0 {
            for (row, values) in out.chunks_mut(c_v).enumerate() {
                // A mask of batch 1 holds for every batch.
                let at = mask.as_ref().map_or(1.0, |m| m[row % m.len()]);
                values.iter_mut().for_each(|x| *x *= weight * at);
            }
        }
        tensor(out, [b, nq, c_v])
    }
}

/// The shape of a Flex tensor as `D` sizes.
fn dims<const D: usize>(t: &FlexTensor) -> [usize; D] {
    let shape = t.layout().shape();
    std::array::from_fn(|i| shape[i])
}

/// A Flex tensor's f32 values in row-major order, without a copy when it is contiguous.
fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    let n = t.layout().num_elements();
    if t.layout().is_contiguous() {
        let start = t.layout().start_offset();
        std::borrow::Cow::Borrowed(&t.storage::<f32>()[start..start + n])
    } else {
        let t = t.to_contiguous();
        let start = t.layout().start_offset();
        std::borrow::Cow::Owned(t.storage::<f32>()[start..start + n].to_vec())
    }
}

fn tensor<const D: usize>(values: Vec<f32>, dims: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, dims))
}

/// [`kernels::linear_strided`] on a Flex tensor's own strides, or on a contiguous copy where
/// one is negative (a flipped view).
fn strided_linear(
    x: &FlexTensor,
    dims: [usize; 3],
    weight: impl AsRef<[f32]>,
    d_out: usize,
    bias: Option<impl AsRef<[f32]>>,
) -> Vec<f32> {
    let layout = x.layout();
    match <[isize; 3]>::try_from(layout.strides()) {
        Ok(strides) if strides.iter().all(|&s| s >= 0) => {
            let data = &x.storage::<f32>()[layout.start_offset()..];
            kernels::linear_strided(data, dims, strides.map(|s| s as usize), weight, d_out, bias)
        }
        _ => {
            let [batch, rows, d_in] = dims;
            kernels::linear(values(x), batch * rows, d_in, weight, d_out, bias)
        }
    }
}
