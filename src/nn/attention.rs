//! diffusers' `Attention` (`models/attention_processor.py`): the layer owns the projections
//! `to_q`, `to_k`, `to_v`, `to_out.0`, and an [`AttentionProcessor`] decides how its queries
//! meet what they attend to, as diffusers' `set_attn_processor` does. The processor is the
//! layer's type parameter (a burn module like the projections): [`PlainProcessor`] is Stable
//! Diffusion's scaled dot-product attention; the UNet's cross-attention layers take
//! `crate::denoise::mepa::CrossAttentionProcessor`, MEPA's processor where the pack carries its
//! projections (docs/METHOD.md §6).

use burn::module::{Module, ModuleDisplay};
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::Linear;
use crate::error::ModelError;
use crate::kernels;
use crate::pack::weights::Weights;

/// One prompt a layer attends to: its tokens, its weight λ and its region mask at the layer's
/// resolution.
#[derive(Clone)]
pub struct RegionPrompt {
    /// `[batch, tokens, dim]`.
    pub tokens: Tensor<3>,
    /// λ; 0 skips the prompt entirely.
    pub scale: f32,
    /// M as `[batch, queries, 1]` in [0, 1]; `None` means everywhere.
    pub mask: Option<Tensor<3>>,
}

impl RegionPrompt {
    /// A prompt that acts everywhere with weight 1: ordinary attention's context.
    pub fn everywhere(tokens: Tensor<3>) -> Self {
        Self { tokens, scale: 1.0, mask: None }
    }
}

/// How a layer's queries meet its prompts, before `to_out`. `prompts[0]` is the layer's own
/// context (keys and values through its `to_k`/`to_v`); a processor may take further prompts
/// through projections of its own.
pub trait AttentionProcessor: Module + ModuleDisplay + Sync {
    /// # Shapes
    /// - q: `[batch, queries, heads × head_dim]` (the layer's `to_q`)
    /// - output: `[batch, queries, heads × head_dim]`
    fn attend<P: AttentionProcessor>(&self, layer: &Attention<P>, q: &Tensor<3>, prompts: &[RegionPrompt])
    -> Tensor<3>;

    /// Whether the processor takes an image prompt (`prompts[1]`).
    fn takes_image_prompt(&self) -> bool {
        false
    }
}

/// diffusers' `AttnProcessor2_0`: `λ · M ⊙ softmax(Q Kᵀ/√d) V` over the layer's own context;
/// with λ = 1 and no mask, exactly scaled dot-product attention. Further prompts are ignored:
/// a plain layer has no projections for them.
#[derive(Module, Debug)]
pub struct PlainProcessor;

impl AttentionProcessor for PlainProcessor {
    fn attend<P: AttentionProcessor>(
        &self,
        layer: &Attention<P>,
        q: &Tensor<3>,
        prompts: &[RegionPrompt],
    ) -> Tensor<3> {
        layer.attend(q, &prompts[0], &layer.to_k, &layer.to_v)
    }
}

/// Multi-head attention with diffusers' parameter names.
#[derive(Module, Debug)]
pub struct Attention<P = PlainProcessor> {
    heads: usize,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    processor: P,
}

impl Attention {
    /// `query_dim` → `heads × head_dim` inner width; keys and values come from
    /// `context_dim` features (equal to `query_dim` for self-attention).
    /// `qkv_bias` is false in the UNet's transformer blocks and true in the VAE.
    pub fn load(
        w: &Weights,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
        qkv_bias: bool,
    ) -> Result<Self, ModelError> {
        let inner = heads * head_dim;
        Ok(Self {
            heads,
            to_q: Linear::load(&w.pp("to_q"), query_dim, inner, qkv_bias)?,
            to_k: Linear::load(&w.pp("to_k"), context_dim, inner, qkv_bias)?,
            to_v: Linear::load(&w.pp("to_v"), context_dim, inner, qkv_bias)?,
            to_out: Linear::load(&w.pp("to_out").pp(0), inner, query_dim, true)?,
            processor: PlainProcessor,
        })
    }
}

impl<P: AttentionProcessor> Attention<P> {
    /// The layer with another processor (diffusers' `set_processor`).
    pub fn with_processor<Q: AttentionProcessor>(self, processor: Q) -> Attention<Q> {
        let Self { heads, to_q, to_k, to_v, to_out, .. } = self;
        Attention { heads, to_q, to_k, to_v, to_out, processor }
    }

    /// Whether this layer's processor takes an image prompt.
    pub fn takes_image_prompt(&self) -> bool {
        self.processor.takes_image_prompt()
    }

    /// Attends from `x` to `context` (to `x` itself when `None`).
    ///
    /// # Shapes
    /// - x: `[batch, tokens, query_dim]`
    /// - context: `[batch, context_tokens, context_dim]`
    /// - output: `[batch, tokens, query_dim]`
    pub fn forward(&self, x: Tensor<3>, context: Option<&Tensor<3>>) -> Tensor<3> {
        let context = context.cloned().unwrap_or_else(|| x.clone());
        self.forward_prompts(x, &[RegionPrompt::everywhere(context)])
    }

    /// Attends from `x` to `prompts` through the layer's processor: `W_o(processor(Q, prompts)) + b_o`.
    ///
    /// # Shapes
    /// - x: `[batch, queries, query_dim]`; prompt tokens `[batch, tokens, context_dim]`;
    ///   masks `[batch, queries, 1]`
    /// - output: `[batch, queries, query_dim]`
    pub fn forward_prompts(&self, x: Tensor<3>, prompts: &[RegionPrompt]) -> Tensor<3> {
        let q = self.to_q.forward(x);
        self.to_out.forward(self.processor.attend(self, &q, prompts))
    }

    /// `λ · M ⊙ softmax(Q Kᵀ/√d) V` for one prompt through the projections `to_k`, `to_v` (the
    /// layer's own, or a processor's), heads merged: the term every processor sums. Where
    /// [`kernels::layers_use_attention`] says, our kernel reads the heads in place
    /// ([`kernels::attention`]); elsewhere they are split for burn's attention and merged after.
    pub fn attend(&self, q: &Tensor<3>, prompt: &RegionPrompt, to_k: &Linear, to_v: &Linear) -> Tensor<3> {
        let k = to_k.forward(prompt.tokens.clone());
        let v = to_v.forward(prompt.tokens.clone());
        if kernels::layers_use_attention(q) {
            // The kernel applies λ and the region mask as it writes each row.
            if let Ok(out) = kernels::attention(q.clone(), &k, &v, self.heads, prompt.mask.as_ref(), prompt.scale) {
                return out;
            }
        }
        let mut out = merge_heads(scaled_dot_product_attention(
            self.split_heads(q.clone()),
            self.split_heads(k),
            self.split_heads(v),
        ));
        if let Some(mask) = &prompt.mask {
            out = out * mask.clone();
        }
        if prompt.scale != 1.0 {
            out = out.mul_scalar(prompt.scale);
        }
        out
    }

    fn split_heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, n, c] = x.dims();
        x.reshape([b, n, self.heads, c / self.heads]).swap_dims(1, 2)
    }
}

/// The widest head that goes to burn's fused attention kernel. Fused (flash) attention
/// kernels are built for head widths up to 256 (FlashAttention-2's limit too). SD's VAE
/// attends in one 512-wide head: on an NVIDIA H200 (Vulkan) cubek's kernel for it was
/// still compiling after 8 minutes, and on lavapipe a 4096-token call did not end in 10.
pub const FUSED_ATTENTION_MAX_HEAD_DIM: usize = 256;

/// softmax(Q Kᵀ/√d) V over `[batch, heads, tokens, head_dim]` tensors: burn's fused kernel
/// for heads up to [`FUSED_ATTENTION_MAX_HEAD_DIM`] wide, else [`explicit_attention`].
pub fn scaled_dot_product_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    if kernels::layers_use_gemm(&q) {
        // burn's attention without an autotuner is the same three ops, its products on the
        // unit routine; the explicit ones take the adapter table's (kernels::matmul).
        return explicit_attention(q, k, v);
    }
    match q.dims()[3] <= FUSED_ATTENTION_MAX_HEAD_DIM {
        true => attention(q, k, v, None, None, AttentionModuleOptions::default()),
        false => explicit_attention(q, k, v),
    }
}

/// The same product in three plain ops, as diffusers' `AttnProcessor` computes it; the two
/// products through [`kernels::matmul`] (burn's matmul unless the adapter table says otherwise,
/// and always on the CPU, where this is our attention kernel's reference). Its scores take queries × keys floats per head, which `VaeConfig::decoder_peak_bytes`
/// counts for the VAE's mid-block.
pub fn explicit_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let scale = 1.0 / (q.dims()[3] as f32).sqrt();
    kernels::matmul(softmax(kernels::matmul(q, k.swap_dims(2, 3)).mul_scalar(scale), 3), v)
}

/// `[batch, heads, tokens, head_dim]` → `[batch, tokens, heads × head_dim]`.
fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, n, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * d])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    /// The explicit product equals burn's fused kernel, so the head width that picks the
    /// path changes no output.
    #[test]
    fn explicit_attention_matches_the_fused_kernel() {
        let device = Device::flex();
        let t = |tokens| Tensor::<4>::random([2, 3, tokens, 24], Distribution::Normal(0.0, 1.5), &device);
        let (q, k, v) = (t(19), t(7), t(7));
        let fused = attention(q.clone(), k.clone(), v.clone(), None, None, AttentionModuleOptions::default());
        let diff: f32 = (explicit_attention(q, k, v) - fused).abs().max().into_scalar();
        assert!(diff < 1e-5, "max abs diff {diff}");
    }
}
