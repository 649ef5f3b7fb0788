//! `ControlNetModel` in diffusers' structure (`models/controlnets/controlnet.py`): a copy of
//! the UNet's down path and mid block that reads a control image (for adcanvas, the
//! product's depth) and returns one residual per UNet skip connection plus one for the mid
//! block, each through a zero-initialised 1×1 conv and scaled by the conditioning scale.
//! [`UNet2DConditionModel::forward_controlled`](super::unet::UNet2DConditionModel::forward_controlled)
//! adds them. The region masking MEPA applies to the depth prompt is in docs/METHOD.md §7.

use burn::module::Module;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::blocks::{DownBlock, MidBlock, TimeEmbedding};
use super::config::{DownBlockType, MidBlockType, PerBlock, UNetConfig};
use super::mepa::Conditioning;
use super::unet::ControlResiduals;
use crate::error::ModelError;
use crate::nn::{Conv2d, silu};
use crate::pack::weights::Weights;

/// diffusers' `ControlNetModel` config (field names as in its `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlNetConfig {
    #[serde(default = "four")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub conditioning_channels: usize,
    pub down_block_types: Vec<DownBlockType>,
    #[serde(default)]
    pub mid_block_type: MidBlockType,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "two")]
    pub layers_per_block: usize,
    pub attention_head_dim: PerBlock,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    pub cross_attention_dim: usize,
    #[serde(default = "groups")]
    pub norm_num_groups: usize,
    #[serde(default = "eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: usize,
    /// "rgb" or "bgr": the channel order the control image was trained with.
    #[serde(default = "rgb")]
    pub controlnet_conditioning_channel_order: String,
    #[serde(default = "embedding_channels")]
    pub conditioning_embedding_out_channels: Vec<usize>,
    #[serde(default)]
    pub global_pool_conditions: bool,
}

/// burn's `Config` (JSON save and load) over the serde mapping of diffusers' `config.json`.
impl burn::config::Config for ControlNetConfig {}

fn four() -> usize {
    4
}
fn three() -> usize {
    3
}
fn two() -> usize {
    2
}
fn groups() -> usize {
    32
}
fn eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}
fn rgb() -> String {
    "rgb".into()
}
fn embedding_channels() -> Vec<usize> {
    vec![16, 32, 96, 256]
}

impl ControlNetConfig {
    /// A ControlNet for `unet`, as diffusers' `ControlNetModel.from_unet` builds it: the same
    /// down path and input, a 3-channel control image through the default (16, 32, 96, 256)
    /// embedding (8× the latent size).
    pub fn for_unet(unet: &UNetConfig) -> Self {
        Self {
            in_channels: unet.in_channels,
            conditioning_channels: 3,
            down_block_types: unet.down_block_types.clone(),
            mid_block_type: unet.mid_block_type,
            block_out_channels: unet.block_out_channels.clone(),
            layers_per_block: unet.layers_per_block,
            attention_head_dim: unet.attention_head_dim.clone(),
            num_attention_heads: unet.num_attention_heads.clone(),
            cross_attention_dim: unet.cross_attention_dim,
            norm_num_groups: unet.norm_num_groups,
            norm_eps: unet.norm_eps,
            use_linear_projection: unet.use_linear_projection,
            flip_sin_to_cos: unet.flip_sin_to_cos,
            freq_shift: unet.freq_shift,
            controlnet_conditioning_channel_order: rgb(),
            conditioning_embedding_out_channels: embedding_channels(),
            global_pool_conditions: false,
        }
    }

    /// The UNet whose down path and mid block this ControlNet copies (diffusers'
    /// `ControlNetModel.from_unet` goes the other way). The up path is implied.
    fn trunk(&self) -> UNetConfig {
        let up = self.down_block_types.iter().rev().map(|t| t.mirrored()).collect();
        UNetConfig {
            sample_size: 64,
            in_channels: self.in_channels,
            out_channels: self.in_channels,
            down_block_types: self.down_block_types.clone(),
            up_block_types: up,
            mid_block_type: self.mid_block_type,
            block_out_channels: self.block_out_channels.clone(),
            layers_per_block: self.layers_per_block,
            attention_head_dim: self.attention_head_dim.clone(),
            num_attention_heads: self.num_attention_heads.clone(),
            cross_attention_dim: self.cross_attention_dim,
            norm_num_groups: self.norm_num_groups,
            norm_eps: self.norm_eps,
            use_linear_projection: self.use_linear_projection,
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
        }
    }

    /// Image pixels per latent pixel the conditioning embedding assumes (8 for SD's).
    pub fn downscale(&self) -> usize {
        crate::nn::levels_scale(self.conditioning_embedding_out_channels.len())
    }

    /// Refuses a ControlNet that cannot steer `unet`, saying why.
    pub fn check_fits(&self, unet: &UNetConfig) -> Result<(), ModelError> {
        let trunk = self.trunk();
        trunk.validate().map_err(|e| match e {
            ModelError::Unsupported(why) => ModelError::Unsupported(format!("the ControlNet's config: {why}")),
            other => other,
        })?;
        let same = trunk.block_out_channels == unet.block_out_channels
            && trunk.layers_per_block == unet.layers_per_block
            && trunk.down_block_types == unet.down_block_types
            && trunk.cross_attention_dim == unet.cross_attention_dim;
        if !same {
            return Err(ModelError::Unsupported(format!(
                "the ControlNet was built for another UNet (blocks {:?} × {} layers, context {}; this UNet has {:?} × {}, context {})",
                trunk.block_out_channels,
                trunk.layers_per_block,
                trunk.cross_attention_dim,
                unet.block_out_channels,
                unet.layers_per_block,
                unet.cross_attention_dim
            )));
        }
        if self.in_channels != unet.in_channels && 2 * self.in_channels + 1 != unet.in_channels {
            return Err(ModelError::Unsupported(format!(
                "the ControlNet reads {}-channel latents; the UNet takes {} channels",
                self.in_channels, unet.in_channels
            )));
        }
        Ok(())
    }
}

/// `ControlNetConditioningEmbedding`: conv_in, then (conv, stride-2 conv) pairs, SiLU after
/// each, then the zero conv to the UNet's first width.
#[derive(Module, Debug)]
struct ConditioningEmbedding {
    conv_in: Conv2d,
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl ConditioningEmbedding {
    fn load(w: &Weights, config: &ControlNetConfig) -> Result<Self, ModelError> {
        let ch = &config.conditioning_embedding_out_channels;
        if ch.is_empty() {
            return Err(ModelError::Unsupported("conditioning_embedding_out_channels is empty".into()));
        }
        let mut blocks = Vec::new();
        for i in 0..ch.len() - 1 {
            blocks.push(Conv2d::load(&w.pp("blocks").pp(2 * i), ch[i], ch[i], 3, 1, 1)?);
            blocks.push(Conv2d::load(&w.pp("blocks").pp(2 * i + 1), ch[i], ch[i + 1], 3, 2, 1)?);
        }
        Ok(Self {
            conv_in: Conv2d::load(&w.pp("conv_in"), config.conditioning_channels, ch[0], 3, 1, 1)?,
            blocks,
            conv_out: Conv2d::load(&w.pp("conv_out"), ch[ch.len() - 1], config.block_out_channels[0], 3, 1, 1)?,
        })
    }

    fn forward(&self, image: Tensor<4>) -> Tensor<4> {
        let mut h = silu(self.conv_in.forward(image));
        for conv in &self.blocks {
            h = silu(conv.forward(h));
        }
        self.conv_out.forward(h)
    }
}

/// The ControlNet: the UNet's down path and mid block over latents + embedded control image.
#[derive(Module, Debug)]
pub struct ControlNetModel {
    #[module(skip)]
    config: ControlNetConfig,
    conv_in: Conv2d,
    time_embedding: TimeEmbedding,
    cond_embedding: ConditioningEmbedding,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    /// The zero convs: one per skip connection, then the mid block's.
    down_outputs: Vec<Conv2d>,
    mid_output: Conv2d,
}

impl ControlNetModel {
    /// Builds the ControlNet from `config`, reading every weight through `w`.
    pub fn load(w: &Weights, config: &ControlNetConfig) -> Result<Self, ModelError> {
        if config.global_pool_conditions {
            return Err(ModelError::Unsupported(
                "ControlNets with global_pool_conditions (shuffle-style) are not supported".into(),
            ));
        }
        if !matches!(config.controlnet_conditioning_channel_order.as_str(), "rgb" | "bgr") {
            return Err(ModelError::Unsupported(format!(
                "controlnet_conditioning_channel_order {:?} (expected rgb or bgr)",
                config.controlnet_conditioning_channel_order
            )));
        }
        let trunk = config.trunk();
        trunk.validate()?;
        let c = &trunk.block_out_channels;
        let n = c.len();
        let down_blocks = (0..n).map(|i| DownBlock::load(w, &trunk, i)).collect::<Result<Vec<_>, _>>()?;
        // Widths of the skips in the order the down path makes them.
        let mut widths = vec![c[0]];
        for (i, &ch) in c.iter().enumerate() {
            widths.extend(std::iter::repeat_n(ch, trunk.layers_per_block));
            if i + 1 < n {
                widths.push(ch);
            }
        }
        let down_outputs = widths
            .iter()
            .enumerate()
            .map(|(k, &ch)| Conv2d::load(&w.pp("controlnet_down_blocks").pp(k), ch, ch, 1, 1, 0))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            config: config.clone(),
            conv_in: Conv2d::load(&w.pp("conv_in"), config.in_channels, c[0], 3, 1, 1)?,
            time_embedding: TimeEmbedding::load(w, &trunk)?,
            cond_embedding: ConditioningEmbedding::load(&w.pp("controlnet_cond_embedding"), config)?,
            down_blocks,
            mid_block: MidBlock::load(w, &trunk)?,
            down_outputs,
            mid_output: Conv2d::load(&w.pp("controlnet_mid_block"), c[n - 1], c[n - 1], 1, 1, 0)?,
        })
    }

    pub fn config(&self) -> &ControlNetConfig {
        &self.config
    }

    /// The residuals for one UNet call, times `scale` (diffusers' `conditioning_scale`;
    /// guess mode is not implemented).
    ///
    /// # Shapes
    /// - sample: `[batch, in_channels, h, w]` (the noisy latents, as the UNet gets them)
    /// - control_image: `[batch, conditioning_channels, h·f, w·f]` in [0, 1] RGB, with f =
    ///   [`ControlNetConfig::downscale`]
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timestep: f32,
        context: &Conditioning,
        control_image: Tensor<4>,
        scale: f32,
    ) -> ControlResiduals {
        let embedded = self.embed_control(control_image);
        self.forward_embedded(sample, timestep, context, embedded, scale)
    }

    /// The control image through the conditioning embedding: `[b, block_out_channels[0], h, w]`.
    /// It does not depend on the timestep, so a sampler computes it once per image.
    pub fn embed_control(&self, control_image: Tensor<4>) -> Tensor<4> {
        let control_image = if self.config.controlnet_conditioning_channel_order == "bgr" {
            control_image.flip([1])
        } else {
            control_image
        };
        self.cond_embedding.forward(control_image)
    }

    /// [`forward`](Self::forward) from an already embedded control image (batch 1 is broadcast
    /// over the sample's batch).
    pub fn forward_embedded(
        &self,
        sample: Tensor<4>,
        timestep: f32,
        context: &Conditioning,
        embedded: Tensor<4>,
        scale: f32,
    ) -> ControlResiduals {
        let [batch, _, _, _] = sample.dims();
        let temb = self.time_embedding.forward(timestep, batch, &sample.device());
        let mut h = self.conv_in.forward(sample) + embedded;
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            h = block.forward(h, &temb, context, &mut skips);
        }
        let h = self.mid_block.forward(h, &temb, context);
        let down = skips
            .into_iter()
            .zip(&self.down_outputs)
            .map(|(skip, conv)| conv.forward(skip).mul_scalar(scale))
            .collect();
        ControlResiduals { down, mid: self.mid_output.forward(h).mul_scalar(scale) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::denoise::unet::UNet2DConditionModel;
    use burn::tensor::{Device, Distribution};

    fn max_abs(t: Tensor<4>) -> f32 {
        t.abs().max().into_scalar()
    }

    /// One residual per UNet skip, each the shape of its skip (the UNet adds them), linear in
    /// the conditioning scale; a `bgr` ControlNet given the flipped image matches an `rgb` one.
    #[test]
    fn residuals_fit_the_unet_and_follow_the_scale() {
        let device = Device::flex();
        let unet_config = UNetConfig::demo();
        let config = ControlNetConfig::for_unet(&unet_config);
        config.check_fits(&unet_config).unwrap();
        let (w, _) = Weights::random(5, &device);
        let net = ControlNetModel::load(&w, &config).unwrap();
        let x = Tensor::<4>::random([1, 9, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let ctx = Conditioning::text(Tensor::<3>::random([1, 4, 384], Distribution::Normal(0.0, 1.0), &device));
        let f = config.downscale();
        assert_eq!(f, 8);
        let image = Tensor::<4>::random([1, 3, 8 * f, 8 * f], Distribution::Uniform(0.0, 1.0), &device);
        let one = net.forward(x.clone(), 400.0, &ctx, image.clone(), 1.0);
        let shapes: Vec<[usize; 4]> = one.down.iter().map(|t| t.dims()).collect();
        assert_eq!(shapes, vec![[1, 32, 8, 8], [1, 32, 8, 8], [1, 32, 4, 4], [1, 64, 4, 4]]);
        assert_eq!(one.mid.dims(), [1, 64, 4, 4]);
        let (w, _) = Weights::random(6, &device);
        let unet = UNet2DConditionModel::load(&w, &unet_config).unwrap();
        assert_eq!(unet.forward_controlled(x.clone(), 400.0, &ctx, Some(&one)).dims(), [1, 4, 8, 8]);

        let half = net.forward(x.clone(), 400.0, &ctx, image.clone(), 0.5);
        for (a, b) in one.down.iter().zip(&half.down) {
            assert!(max_abs(a.clone().mul_scalar(0.5) - b.clone()) < 1e-5);
        }
        assert!(max_abs(one.mid.clone()) > 1e-4, "random zero convs gave zeros");
        let off = net.forward(x.clone(), 400.0, &ctx, image.clone(), 0.0);
        assert_eq!(off.down.iter().chain([&off.mid]).map(|t| max_abs(t.clone())).fold(0.0, f32::max), 0.0);

        let bgr_config = ControlNetConfig { controlnet_conditioning_channel_order: "bgr".into(), ..config.clone() };
        let (w, _) = Weights::random(5, &device);
        let bgr = ControlNetModel::load(&w, &bgr_config).unwrap();
        let flipped = bgr.forward(x, 400.0, &ctx, image.flip([1]), 1.0);
        assert!(max_abs(flipped.mid - one.mid) < 1e-5, "bgr with the flipped image differs from rgb");
        let odd = ControlNetConfig { controlnet_conditioning_channel_order: "yuv".into(), ..config };
        assert!(matches!(ControlNetModel::load(&w, &odd), Err(ModelError::Unsupported(_))));
    }
}
