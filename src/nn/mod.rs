//! The few layer types the diffusers models are made of, loaded by parameter name.
//!
//! Each layer keeps PyTorch's storage layout (conv `[out, in, kh, kw]`, linear `[out, in]`),
//! so a diffusers checkpoint loads without conversion; the linear weight is used transposed
//! (a view, no copy). Conv and linear weights are [`Weight`]s: f32, or quantised blocks
//! expanded when the layer runs. Every layer is a burn [`Module`], its parameters burn
//! parameters, named as diffusers names them: the models built from these layers derive
//! `Module` too, so burn's visitors, device moves and snapshots work on them.

pub mod attention;
pub mod kernel_check;
pub mod resnet;

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation;
use burn::tensor::module::{conv2d, interpolate, layer_norm, linear};
use burn::tensor::ops::{ConvOptions, InterpolateMode, InterpolateOptions};

use crate::error::ModelError;
use crate::kernels;
use crate::pack::weights::{FloatParam, Init, QuantizedWeight, Weight, Weights};

/// `torch.nn.Conv2d` with square kernel, symmetric padding and no dilation.
#[derive(Module, Debug)]
pub struct Conv2d {
    weight: Weight<4>,
    bias: Option<FloatParam<1>>,
    #[module(skip)]
    options: ConvOptions<2>,
}

impl Conv2d {
    /// Loads `weight` `[c_out, c_in, k, k]` and `bias` `[c_out]` from `w`.
    pub fn load(
        w: &Weights,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self, ModelError> {
        let fan_in = c_in * kernel * kernel;
        Ok(Self {
            weight: w.param("weight", [c_out, c_in, kernel, kernel], Init::FanIn(fan_in))?,
            bias: Some(w.float("bias", [c_out], Init::FanIn(fan_in))?),
            options: ConvOptions::new([stride, stride], [padding, padding], [1, 1], 1),
        })
    }

    /// Like [`Conv2d::load`] for a conv built with `bias=False`.
    pub fn load_no_bias(
        w: &Weights,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self, ModelError> {
        let fan_in = c_in * kernel * kernel;
        Ok(Self {
            weight: w.param("weight", [c_out, c_in, kernel, kernel], Init::FanIn(fan_in))?,
            bias: None,
            options: ConvOptions::new([stride, stride], [padding, padding], [1, 1], 1),
        })
    }

    /// Like [`Conv2d::load`] with explicit per-side padding `(top, bottom)`/`(left, right)`,
    /// for diffusers' VAE downsampler, which pads (0, 1, 0, 1) then convolves with padding 0.
    pub fn load_padded(
        w: &Weights,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        pad: [(usize, usize); 2],
    ) -> Result<Self, ModelError> {
        let mut conv = Self::load(w, c_in, c_out, kernel, stride, 0)?;
        conv.options.padding = pad;
        Ok(conv)
    }

    /// # Shapes
    /// - x: `[batch, c_in, h, w]` → `[batch, c_out, h', w']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let o = &self.options;
        let [(top, bottom), (left, right)] = o.padding;
        if o.groups != 1 || o.dilation != [1, 1] || o.stride[0] != o.stride[1] {
            return self.forward_ops(x);
        }
        let (stride, padding) = (o.stride[0], [top, bottom, left, right]);
        let ours = match &self.weight {
            Weight::Quantized(QuantizedWeight { blocks, shape }) if kernels::layers_use_quantized_conv2d(&x) => {
                kernels::quantized_conv2d(x, blocks, *shape, self.bias.as_deref(), stride, padding)
            }
            Weight::Float(w) if kernels::layers_use_conv2d(&x) => {
                kernels::conv2d(x, w.val(), self.bias.as_deref(), stride, padding)
            }
            _ => Err(x),
        };
        ours.unwrap_or_else(|x| self.forward_ops(x))
    }

    /// The weights `[c_out, c_in, k, k]` as f32 (expanded when quantised).
    pub fn weight(&self) -> Tensor<4> {
        self.weight.value()
    }

    pub fn bias(&self) -> Option<&Tensor<1>> {
        self.bias.as_deref()
    }

    /// The tensor-op version (burn's conv2d): the CPU path, and the kernel's reference.
    pub fn forward_ops(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d(x, self.weight.value(), self.bias.as_ref().map(|b| b.val()), self.options.clone())
    }
}

/// `torch.nn.Linear`.
#[derive(Module, Debug)]
pub struct Linear {
    /// `[d_out, d_in]`, as PyTorch stores it.
    weight: Weight<2>,
    bias: Option<FloatParam<1>>,
}

impl Linear {
    /// Loads `weight` `[d_out, d_in]` and, when `bias`, `bias` `[d_out]`.
    pub fn load(w: &Weights, d_in: usize, d_out: usize, bias: bool) -> Result<Self, ModelError> {
        let weight = w.param("weight", [d_out, d_in], Init::FanIn(d_in))?;
        let bias = if bias { Some(w.float("bias", [d_out], Init::FanIn(d_in))?) } else { None };
        Ok(Self { weight, bias })
    }

    /// # Shapes
    /// - x: `[..., d_in]` → `[..., d_out]`
    ///
    /// On the CPU an f32 weight goes to our GEMM, which reads `x` through its strides; a
    /// quantised weight on a GPU device is read packed by our kernel under
    /// `ADCANVAS_KERNELS=all`; elsewhere on a GPU the matmul routine is the adapter table's
    /// ([`kernels::layers_use_gemm`]) or burn's.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        // On the CPU a quantised weight is expanded and takes the same GEMM as an f32 one, so
        // kept and expanded packs make the same bytes.
        let on_cpu = kernels::runs_on(&x) == Some(kernels::Place::Cpu);
        let x = match &self.weight {
            Weight::Float(w) => kernels::linear(x, w, self.bias.as_deref()),
            Weight::Quantized(_) if on_cpu => kernels::linear(x, &self.weight.value(), self.bias.as_deref()),
            Weight::Quantized(_) => Err(x),
        };
        let x = match x {
            Ok(y) => return y,
            Err(x) => x,
        };
        let x = match kernels::layers_use_quantized_linear() {
            true => match self.forward_quantized(x) {
                Ok(y) => return y,
                Err(x) => x,
            },
            false => x,
        };
        match kernels::layers_use_gemm(&x) {
            true => self.forward_gemm(x),
            false => self.forward_ops(x),
        }
    }

    /// Our quantised-weight kernel whatever `ADCANVAS_KERNELS` says (for the benchmark), or
    /// `x` back where it does not run.
    pub fn forward_quantized<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
        match &self.weight {
            Weight::Quantized(QuantizedWeight { blocks, shape: [d_out, _] }) => {
                kernels::quantized_linear(x, blocks, *d_out, self.bias.as_deref())
            }
            Weight::Float(_) => Err(x),
        }
    }

    /// The weight (expanded to f32 when quantised) through [`kernels::matmul`], whose GPU routine
    /// is chosen by rule where no autotuner chooses; the bias a tensor op, fused with what follows.
    pub fn forward_gemm<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let y = kernels::matmul(x, self.weight.value().transpose().unsqueeze::<D>());
        match &self.bias {
            Some(b) => y + b.val().unsqueeze::<D>(),
            None => y,
        }
    }

    /// The tensor-op version (the weight expanded to f32 when quantised, then burn's matmul):
    /// the CPU path, and the kernel's reference.
    pub fn forward_ops<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(x, self.weight.value().transpose(), self.bias.as_ref().map(|b| b.val()))
    }
}

/// `torch.nn.GroupNorm` (affine) over `[batch, channels, h, w]`.
#[derive(Module, Debug)]
pub struct GroupNorm {
    groups: usize,
    eps: f64,
    weight: FloatParam<1>,
    bias: FloatParam<1>,
}

impl GroupNorm {
    /// Loads `weight` and `bias` `[channels]`; `channels` must divide into `groups`.
    pub fn load(w: &Weights, groups: usize, channels: usize, eps: f64) -> Result<Self, ModelError> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(ModelError::Unsupported(format!(
                "group norm with {channels} channels cannot be split into {groups} groups"
            )));
        }
        Ok(Self {
            groups,
            eps,
            weight: w.float("weight", [channels], Init::Ones)?,
            bias: w.float("bias", [channels], Init::Zeros)?,
        })
    }

    /// # Shapes
    /// - x: `[batch, channels, h, w]` → same
    ///
    /// Mean and variance are reduced in two stages (over each row, then over the rows'
    /// results): one f32 sum over a whole group (a million values for SD's VAE at 512²)
    /// drifts by ~1e-4 relative, which the decoder amplifies to ~1e-3 in its output;
    /// PyTorch's reductions do not drift like that.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_then(x, false)
    }

    /// `silu(self.forward(x))`, in one GPU launch where our kernel runs.
    pub fn forward_silu(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_then(x, true)
    }

    fn forward_then(&self, x: Tensor<4>, then_silu: bool) -> Tensor<4> {
        match kernels::group_norm(x, &self.weight, &self.bias, self.groups, self.eps, then_silu) {
            Ok(y) => y,
            Err(x) if then_silu => silu(self.forward_ops(x)),
            Err(x) => self.forward_ops(x),
        }
    }

    /// The tensor-op version: the CPU path, and the fused kernel's reference.
    pub fn forward_ops(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, wd] = x.dims();
        let rows = (c / self.groups) * h;
        let grouped = x.reshape([b, self.groups, rows, wd]);
        let mean_of = |t: Tensor<4>| t.mean_dim(3).mean_dim(2);
        let mean = mean_of(grouped.clone());
        let centered = grouped - mean;
        let var = mean_of(centered.clone().powi_scalar(2));
        let normed = (centered / var.add_scalar(self.eps).sqrt()).reshape([b, c, h, wd]);
        normed * self.weight.val().reshape([1, c, 1, 1]) + self.bias.val().reshape([1, c, 1, 1])
    }
}

/// `torch.nn.LayerNorm` over the last axis.
#[derive(Module, Debug)]
pub struct LayerNorm {
    eps: f64,
    weight: FloatParam<1>,
    bias: FloatParam<1>,
}

impl LayerNorm {
    /// Loads `weight` and `bias` `[dim]`.
    pub fn load(w: &Weights, dim: usize, eps: f64) -> Result<Self, ModelError> {
        Ok(Self { eps, weight: w.float("weight", [dim], Init::Ones)?, bias: w.float("bias", [dim], Init::Zeros)? })
    }

    /// # Shapes
    /// - x: `[..., dim]` → same
    ///
    /// On a GPU this is our GroupNorm kernel: a LayerNorm over `[rows, dim]` is a GroupNorm
    /// over `[rows, dim, 1, 1]` with one group, the scale and shift per channel.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        let dim = dims[D - 1];
        let rows = dims.iter().product::<usize>() / dim.max(1);
        match kernels::group_norm(x.reshape([rows, dim, 1, 1]), &self.weight, &self.bias, 1, self.eps, false) {
            Ok(y) => y.reshape(dims),
            Err(x) => self.forward_ops(x.reshape(dims)),
        }
    }

    /// The tensor-op version: the CPU path, and the kernel's reference.
    pub fn forward_ops<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        layer_norm(x, self.weight.val(), Some(self.bias.val()), self.eps)
    }
}

/// SiLU (swish), the activation of every diffusers resnet: our kernel on the CPU, burn's
/// elsewhere.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    kernels::silu(x).unwrap_or_else(silu_ops)
}

/// burn's SiLU: the GPU's, and the CPU kernel's reference.
pub fn silu_ops<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    activation::silu(x)
}

/// Exact (erf) GELU, as `torch.nn.functional.gelu` with its default `approximate="none"`.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    activation::gelu(x)
}

/// Nearest-neighbour 2× upsampling, as `F.interpolate(scale_factor=2.0, mode="nearest")`.
pub fn upsample_nearest_2x(x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    interpolate(x, InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([h * 2, w * 2]))
}

/// `torch.nn.Embedding` kept on the CPU: a prompt needs only a few dozen rows, and the table
/// is the largest single tensor of SD's text encoders (CLIP ViT-L: 49 408 × 768, 145 MiB in
/// f32), more than WebGPU's default 128 MiB buffer binding. Only the looked-up rows are uploaded.
///
/// The table is host memory, not a device parameter, so burn's module machinery skips it.
#[derive(Module, Debug)]
pub struct TokenEmbedding {
    #[module(skip)]
    table: HostTable,
    rows: usize,
    dim: usize,
}

impl TokenEmbedding {
    /// Loads `weight` `[rows, dim]`.
    pub fn load(w: &Weights, rows: usize, dim: usize) -> Result<Self, ModelError> {
        Ok(Self { table: HostTable(w.values("weight", &[rows, dim], Init::FanIn(1))?), rows, dim })
    }

    /// `[ids.len(), dim]`; every id must be below the table's row count.
    pub fn lookup(&self, ids: &[u32], device: &burn::tensor::Device) -> Result<Tensor<2>, ModelError> {
        let mut out = Vec::with_capacity(ids.len() * self.dim);
        for &id in ids {
            let id = id as usize;
            if id >= self.rows {
                return Err(ModelError::Unsupported(format!(
                    "token id {id} is outside the vocabulary of {}",
                    self.rows
                )));
            }
            out.extend_from_slice(&self.table.0[id * self.dim..(id + 1) * self.dim]);
        }
        Ok(Tensor::from_data(burn::tensor::TensorData::new(out, [ids.len(), self.dim]), device))
    }
}

/// A table in host memory, shown by its size: burn's module display prints a skipped field
/// with `Debug`, and eleven million floats help nobody reading it.
#[derive(Clone)]
struct HostTable(Vec<f32>);

impl std::fmt::Debug for HostTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} f32 on the host", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    /// Each group of channels comes out with mean 0 and variance 1 (ones/zeros affine), on a
    /// large offset where a one-pass variance would lose its digits.
    #[test]
    fn group_norm_normalises_each_group() {
        let device = Device::flex();
        let (w, _) = Weights::random(0, &device);
        let norm = GroupNorm::load(&w, 3, 6, 1e-6).unwrap();
        let x = Tensor::<4>::random([2, 6, 9, 7], Distribution::Normal(0.0, 2.0), &device).add_scalar(1000.0);
        let y = norm.forward(x).reshape([2, 3, 2 * 9 * 7]);
        let mean = y.clone().mean_dim(2);
        let var = (y - mean.clone()).powi_scalar(2).mean_dim(2);
        let worst_mean: f32 = mean.abs().max().into_scalar();
        let worst_var: f32 = var.sub_scalar(1.0).abs().max().into_scalar();
        assert!(worst_mean < 1e-3 && worst_var < 1e-3, "mean off by {worst_mean}, variance by {worst_var}");
        assert!(matches!(GroupNorm::load(&w, 4, 6, 1e-6), Err(ModelError::Unsupported(_))), "6 channels in 4 groups");
    }

    /// Linear keeps PyTorch's `[out, in]` layout: y = x Wᵀ + b.
    #[test]
    fn linear_uses_the_pytorch_layout() {
        let device = Device::flex();
        let w: Vec<u8> = [1.0f32, 2.0, 3.0, -1.0, 0.0, 0.5].iter().flat_map(|v| v.to_le_bytes()).collect();
        let b: Vec<u8> = [10.0f32, 20.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = safetensors::serialize(
            [
                ("weight", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], &w).unwrap()),
                ("bias", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &b).unwrap()),
            ],
            None,
        )
        .unwrap();
        let weights = Weights::from_safetensors("linear.safetensors", &bytes, &device).unwrap();
        let layer = Linear::load(&weights, 3, 2, true).unwrap();
        let x = Tensor::<2>::from_data(burn::tensor::TensorData::new(vec![1.0f32, 1.0, 2.0], [1, 3]), &device);
        let y = layer.forward(x).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(y, vec![1.0 + 2.0 + 6.0 + 10.0, -1.0 + 0.0 + 1.0 + 20.0]);
    }
}

/// The scale `levels` levels of 2× resampling make (`2^(levels − 1)`): what a config's block
/// list implies before the config is checked, so a manifest with none or absurdly many is refused
/// by its check rather than overflowing here.
pub fn levels_scale(levels: usize) -> usize {
    1 << levels.saturating_sub(1).min(usize::BITS as usize - 2)
}
