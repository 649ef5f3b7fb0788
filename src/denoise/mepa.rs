//! MEPA — Mask Encoder Prompt Adapter (docs/METHOD.md §6): region-masked fusion of several
//! prompts in one cross-attention layer,
//!
//! `out = W_o ( Σ_k λ_k · M_k ⊙ softmax(Q K_kᵀ/√d) V_k ) + b_o`,
//!
//! with the text prompt through the layer's own `to_k`/`to_v` and the image prompt through
//! the adapter's `to_k_ip`/`to_v_ip` (IP-Adapter's decoupled cross-attention). With only
//! the text prompt and no mask it is exactly Stable Diffusion's cross-attention.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;

use crate::error::ModelError;
use crate::nn::attention::{Attention, AttentionProcessor, PlainProcessor, RegionPrompt};
use crate::nn::{LayerNorm, Linear, gelu};
use crate::pack::weights::Weights;

/// MEPA's attention processor: the text prompt through the layer's own `to_k`/`to_v`, plus the
/// image prompt through the adapter's projections, stored under diffusers' names
/// (`<attn>.processor.to_k_ip.0`, `<attn>.processor.to_v_ip.0`, no bias).
#[derive(Module, Debug)]
pub struct MepaProcessor {
    to_k_ip: Linear,
    to_v_ip: Linear,
}

/// The processor of a UNet cross-attention layer: MEPA's, or the plain one for a layer whose
/// weights carry no adapter (a Stable Diffusion checkpoint). Chosen per layer at load.
#[derive(Module, Debug)]
pub enum CrossAttentionProcessor {
    Plain(PlainProcessor),
    Mepa(MepaProcessor),
}

impl MepaProcessor {
    /// The processor for the attention layer under `attn`: MEPA's when the weights carry its
    /// projections, else the plain one (a Stable Diffusion layer).
    pub fn for_layer(attn: &Weights, token_dim: usize, inner: usize) -> Result<CrossAttentionProcessor, ModelError> {
        let p = attn.pp("processor");
        if !p.contains("to_k_ip.0.weight") {
            return Ok(CrossAttentionProcessor::Plain(PlainProcessor));
        }
        Ok(CrossAttentionProcessor::Mepa(Self {
            to_k_ip: Linear::load(&p.pp("to_k_ip").pp(0), token_dim, inner, false)?,
            to_v_ip: Linear::load(&p.pp("to_v_ip").pp(0), token_dim, inner, false)?,
        }))
    }
}

impl AttentionProcessor for CrossAttentionProcessor {
    fn attend<P: AttentionProcessor>(
        &self,
        layer: &Attention<P>,
        q: &Tensor<3>,
        prompts: &[RegionPrompt],
    ) -> Tensor<3> {
        match self {
            Self::Plain(p) => p.attend(layer, q, prompts),
            Self::Mepa(p) => p.attend(layer, q, prompts),
        }
    }

    fn takes_image_prompt(&self) -> bool {
        matches!(self, Self::Mepa(_))
    }
}

impl AttentionProcessor for MepaProcessor {
    /// `Σ_k λ_k · M_k ⊙ Attn(Q, K_k, V_k)` over the text prompt (`prompts[0]`) and the image
    /// prompt (`prompts[1]`, when given with λ ≠ 0).
    fn attend<P: AttentionProcessor>(
        &self,
        layer: &Attention<P>,
        q: &Tensor<3>,
        prompts: &[RegionPrompt],
    ) -> Tensor<3> {
        let text = PlainProcessor.attend(layer, q, &prompts[..1]);
        match prompts.get(1) {
            Some(image) if image.scale != 0.0 => text + layer.attend(q, image, &self.to_k_ip, &self.to_v_ip),
            _ => text,
        }
    }

    fn takes_image_prompt(&self) -> bool {
        true
    }
}

/// M_k at a layer's resolution: the latent-resolution mask `[batch, 1, h, w]` area-averaged
/// by the integer factor down to `[h_r, w_r]`, as `[batch, h_r·w_r, 1]` query weights.
///
/// # Shapes
/// - mask: `[batch, 1, h, w]` with h, w multiples of h_r, w_r
/// - output: `[batch, h_r · w_r, 1]`
pub fn region_mask(mask: &Tensor<4>, h_r: usize, w_r: usize) -> Tensor<3> {
    let [b, _, h, w] = mask.dims();
    assert!(h % h_r == 0 && w % w_r == 0, "region mask {h}×{w} does not divide into {h_r}×{w_r}");
    let (fy, fx) = (h / h_r, w / w_r);
    let pooled =
        if fy == 1 && fx == 1 { mask.clone() } else { avg_pool2d(mask.clone(), AvgPoolOptions::new([fy, fx])) };
    pooled.reshape([b, h_r * w_r, 1])
}

/// diffusers' `IPAdapterFullImageProjection` (stored in the UNet as
/// `encoder_hid_proj.image_projection_layers.0`): each image-encoder token is mapped on its own
/// to the cross-attention width, `LayerNorm(W₂ gelu(W₁ t + b₁) + b₂)`, so PFV's token grid survives.
#[derive(Module, Debug)]
pub struct ImageProjection {
    proj: Linear,
    out: Linear,
    norm: LayerNorm,
}

impl ImageProjection {
    /// Loads the projection when the UNet weights carry one (`None` otherwise).
    pub fn load(unet: &Weights, embed_dim: usize, cross_dim: usize) -> Result<Option<Self>, ModelError> {
        let w = unet.pp("encoder_hid_proj").pp("image_projection_layers").pp(0);
        if !w.contains("norm.weight") {
            return Ok(None);
        }
        let ff = w.pp("ff").pp("net");
        Ok(Some(Self {
            proj: Linear::load(&ff.pp(0).pp("proj"), embed_dim, embed_dim, true)?,
            out: Linear::load(&ff.pp(2), embed_dim, cross_dim, true)?,
            norm: LayerNorm::load(&w.pp("norm"), cross_dim, 1e-5)?,
        }))
    }

    /// `[batch, tokens, embed_dim]` → `[batch, tokens, cross_dim]`.
    pub fn forward(&self, tokens: Tensor<3>) -> Tensor<3> {
        self.norm.forward(self.out.forward(gelu(self.proj.forward(tokens))))
    }
}

/// The image prompt at latent resolution, as the UNet receives it.
#[derive(Clone)]
pub struct ImagePrompt {
    /// Projected, PFV-kept tokens `[batch, tokens, cross_dim]`.
    pub tokens: Tensor<3>,
    /// λ_i.
    pub scale: f32,
    /// M_i at latent resolution `[batch, 1, h, w]` (area-averaged background); `None` = everywhere
    /// (the region-mask ablation, and IP-Adapter's behaviour).
    pub region: Option<Tensor<4>>,
}

/// Everything the UNet's cross-attentions attend to: MEPA's prompts before they are brought to
/// each layer's resolution.
#[derive(Clone)]
pub struct Conditioning {
    /// Text context `[batch, tokens, cross_dim]`; it governs the whole picture (M_t = 1).
    pub text: Tensor<3>,
    /// λ_t (1 in training and by default; other values are an ablation).
    pub text_scale: f32,
    pub image: Option<ImagePrompt>,
}

impl Conditioning {
    /// Ordinary SD conditioning.
    pub fn text(text: Tensor<3>) -> Self {
        Self { text, text_scale: 1.0, image: None }
    }

    /// The prompts for one cross-attention layer at `h_r × w_r`: the text first (everywhere),
    /// then the image prompt with its region mask brought to that resolution.
    pub fn at_resolution(&self, h_r: usize, w_r: usize) -> Vec<RegionPrompt> {
        let text = RegionPrompt { tokens: self.text.clone(), scale: self.text_scale, mask: None };
        let image = self.image.as_ref().map(|p| RegionPrompt {
            tokens: p.tokens.clone(),
            scale: p.scale,
            mask: p.region.as_ref().map(|r| region_mask(r, h_r, w_r)),
        });
        std::iter::once(text).chain(image).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};

    /// Query width, text-context width, image-token width, heads, head width.
    const DIM: usize = 16;
    const TEXT_DIM: usize = 12;
    const IMAGE_DIM: usize = 20;
    const HEADS: usize = 2;
    const HEAD_DIM: usize = 8;

    /// One attention layer's weights as a pack stores them, with MEPA's projections or without.
    fn layer_weights(with_mepa: bool, device: &Device) -> Vec<u8> {
        let (w, created) = Weights::random(7, device);
        Attention::load(&w, DIM, TEXT_DIM, HEADS, HEAD_DIM, false).unwrap();
        if with_mepa {
            let p = w.pp("processor");
            Linear::load(&p.pp("to_k_ip").pp(0), IMAGE_DIM, HEADS * HEAD_DIM, false).unwrap();
            Linear::load(&p.pp("to_v_ip").pp(0), IMAGE_DIM, HEADS * HEAD_DIM, false).unwrap();
        }
        created.lock().unwrap().to_safetensors()
    }

    fn values(t: Tensor<3>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// The paper's region control, on one layer: with the text prompt alone MEPA is the plain
    /// layer exactly; the image prompt changes only the queries its region mask covers (the
    /// product's stay the text's alone), and by λ times its term.
    #[test]
    fn the_image_prompt_acts_only_where_its_region_mask_is_and_by_its_weight() {
        let device = Device::flex();
        let bytes = layer_weights(true, &device);
        let w = Weights::from_safetensors("attn.safetensors", &bytes, &device).unwrap();
        let plain = Attention::load(&w, DIM, TEXT_DIM, HEADS, HEAD_DIM, false).unwrap();
        let processor = MepaProcessor::for_layer(&w, IMAGE_DIM, HEADS * HEAD_DIM).unwrap();
        let mepa = Attention::load(&w, DIM, TEXT_DIM, HEADS, HEAD_DIM, false).unwrap().with_processor(processor);
        assert!(mepa.takes_image_prompt() && !plain.takes_image_prompt());

        let normal = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<3>::random([1, 6, DIM], normal, &device);
        let text = RegionPrompt::everywhere(Tensor::<3>::random([1, 5, TEXT_DIM], normal, &device));
        let tokens = Tensor::<3>::random([1, 4, IMAGE_DIM], normal, &device);
        // Queries 0–2 are background (M = 1), 3–5 the product (M = 0).
        let mask = Tensor::<3>::from_data(TensorData::new(vec![1.0f32, 1.0, 1.0, 0.0, 0.0, 0.0], [1, 6, 1]), &device);
        let image = |scale| RegionPrompt { tokens: tokens.clone(), scale, mask: Some(mask.clone()) };

        let text_only = values(plain.forward_prompts(x.clone(), std::slice::from_ref(&text)));
        assert_eq!(values(mepa.forward_prompts(x.clone(), std::slice::from_ref(&text))), text_only);
        assert_eq!(values(mepa.forward_prompts(x.clone(), &[text.clone(), image(0.0)])), text_only);
        let once = values(mepa.forward_prompts(x.clone(), &[text.clone(), image(1.0)]));
        let twice = values(mepa.forward_prompts(x, &[text, image(2.0)]));
        let (mut moved, mut worst_linear, mut worst_product) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..text_only.len() {
            let (d1, d2) = (once[i] - text_only[i], twice[i] - text_only[i]);
            if i / DIM < 3 {
                moved = moved.max(d1.abs());
                worst_linear = worst_linear.max((d2 - 2.0 * d1).abs());
            } else {
                worst_product = worst_product.max(d1.abs()).max(d2.abs());
            }
        }
        assert!(moved > 1e-3, "the image prompt changed nothing in its region (max {moved})");
        assert!(worst_linear < 1e-5, "not linear in λ: {worst_linear}");
        assert!(worst_product < 1e-6, "the image prompt leaked into the product's queries: {worst_product}");
    }

    /// A layer whose weights carry no MEPA projections (Stable Diffusion's) gets the plain processor.
    #[test]
    fn a_layer_without_mepa_projections_is_plain() {
        let device = Device::flex();
        let bytes = layer_weights(false, &device);
        let w = Weights::from_safetensors("attn.safetensors", &bytes, &device).unwrap();
        assert!(!MepaProcessor::for_layer(&w, IMAGE_DIM, HEADS * HEAD_DIM).unwrap().takes_image_prompt());
    }
}
