//! diffusers' `Attention` (`models/attention_processor.py`): the layer owns the
//! projections `to_q`, `to_k`, `to_v`, `to_out.0`; the math is the standard scaled
//! dot-product processor. Cross-attention here is the seam MEPA occupies: it decides
//! which prompt tokens each latent position attends to (docs/METHOD.md).

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::mepa::{ImagePromptProjections, MepaPrompts, RegionPrompt};
use crate::nn::Linear;
use crate::weights::{ModelError, Weights};

/// Multi-head attention with diffusers' parameter names.
pub struct Attention {
    heads: usize,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    /// MEPA's image-prompt projections, present when the checkpoint carries them.
    image_prompt: Option<ImagePromptProjections>,
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
            image_prompt: ImagePromptProjections::load(w, context_dim, inner)?,
        })
    }

    /// Whether this layer can take an image prompt (MEPA projections loaded).
    pub fn has_image_prompt(&self) -> bool {
        self.image_prompt.is_some()
    }

    /// Attends from `x` to `context` (to `x` itself when `None`).
    ///
    /// # Shapes
    /// - x: `[batch, tokens, query_dim]`
    /// - context: `[batch, context_tokens, context_dim]`
    /// - output: `[batch, tokens, query_dim]`
    pub fn forward(&self, x: Tensor<3>, context: Option<&Tensor<3>>) -> Tensor<3> {
        let context = context.cloned().unwrap_or_else(|| x.clone());
        self.forward_mepa(x, &MepaPrompts::text_only(context))
    }

    /// MEPA (docs/METHOD.md §6): `W_o(Σ_k λ_k · M_k ⊙ Attn(Q, K_k, V_k)) + b_o` over the text
    /// prompt (own projections) and, when given and this layer has the adapter, the image
    /// prompt (`to_k_ip`/`to_v_ip`).
    ///
    /// # Shapes
    /// - x: `[batch, queries, query_dim]`; prompt tokens `[batch, tokens, context_dim]`;
    ///   masks `[batch, queries, 1]`
    /// - output: `[batch, queries, query_dim]`
    pub fn forward_mepa(&self, x: Tensor<3>, prompts: &MepaPrompts) -> Tensor<3> {
        let q = self.split_heads(self.to_q.forward(x));
        let mut fused = self.attend(&q, &prompts.text, &self.to_k, &self.to_v);
        if let (Some(image), Some(ip)) = (&prompts.image, &self.image_prompt)
            && image.scale != 0.0
        {
            fused = fused + self.attend(&q, image, &ip.to_k_ip, &ip.to_v_ip);
        }
        self.to_out.forward(fused)
    }

    /// λ · M ⊙ softmax(Q Kᵀ/√d) V for one prompt, heads merged.
    fn attend(&self, q: &Tensor<4>, prompt: &RegionPrompt, to_k: &Linear, to_v: &Linear) -> Tensor<3> {
        let k = self.split_heads(to_k.forward(prompt.tokens.clone()));
        let v = self.split_heads(to_v.forward(prompt.tokens.clone()));
        let mut out = merge_heads(scaled_dot_product_attention(q.clone(), k, v));
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
    match q.dims()[3] <= FUSED_ATTENTION_MAX_HEAD_DIM {
        true => attention(q, k, v, None, None, AttentionModuleOptions::default()),
        false => explicit_attention(q, k, v),
    }
}

/// The same product in three plain ops, as diffusers' `AttnProcessor` computes it. Its
/// scores take queries × keys floats per head, which `VaeConfig::decoder_peak_bytes`
/// counts for the VAE's mid-block.
pub fn explicit_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let scale = 1.0 / (q.dims()[3] as f32).sqrt();
    softmax(q.matmul(k.swap_dims(2, 3)).mul_scalar(scale), 3).matmul(v)
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
