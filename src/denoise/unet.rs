//! `UNet2DConditionModel` in diffusers' structure (`models/unets/unet_2d_condition.py`).
//!
//! The config struct keeps diffusers' `config.json` field names and the module tree keeps
//! its parameter names, so a diffusers checkpoint converted to a pack loads by name.
//! Supported now: SD 1.x/2.x style blocks (`CrossAttnDownBlock2D`, `DownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `UpBlock2D`, `CrossAttnUpBlock2D`), 4- or 9-channel input
//! (inpainting), conv or linear projections, per-block head counts.

use burn::tensor::Tensor;

use super::blocks::{DownBlock, MidBlock, TimeEmbedding, UpBlock};
pub use super::config::{DownBlockType, MidBlockType, PerBlock, UNetConfig, UpBlockType};
use super::mepa::Conditioning;
use crate::error::ModelError;
use crate::nn::{Conv2d, GroupNorm, silu};
use crate::pack::weights::Weights;

/// What a ControlNet adds to the UNet (diffusers' `down_block_additional_residuals` and
/// `mid_block_additional_residual`), already multiplied by the conditioning scale.
pub struct ControlResiduals {
    /// One per skip connection, in the order the down path produces them.
    pub down: Vec<Tensor<4>>,
    pub mid: Tensor<4>,
}

/// The denoiser ε_θ(x_t, t, c).
pub struct UNet2DConditionModel {
    config: UNetConfig,
    conv_in: Conv2d,
    time_embedding: TimeEmbedding,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet2DConditionModel {
    /// Builds the UNet from `config`, reading (or creating) every weight through `w`.
    pub fn load(w: &Weights, config: &UNetConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let c = &config.block_out_channels;
        let n = c.len();
        let down_blocks = (0..n).map(|i| DownBlock::load(w, config, i)).collect::<Result<Vec<_>, _>>()?;
        let mid_block = MidBlock::load(w, config)?;
        let up_blocks = (0..n).map(|i| UpBlock::load(w, config, i)).collect::<Result<Vec<_>, _>>()?;

        Ok(Self {
            config: config.clone(),
            conv_in: Conv2d::load(&w.pp("conv_in"), config.in_channels, c[0], 3, 1, 1)?,
            time_embedding: TimeEmbedding::load(w, config)?,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::load(&w.pp("conv_norm_out"), config.norm_num_groups, c[0], config.norm_eps)?,
            conv_out: Conv2d::load(&w.pp("conv_out"), c[0], config.out_channels, 3, 1, 1)?,
        })
    }

    /// The config this UNet was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Predicts the noise in `sample` at `timestep` given the prompt tokens.
    ///
    /// # Shapes
    /// - sample: `[batch, in_channels, h, w]` with h, w divisible by 2^(levels−1)
    /// - context: `[batch, tokens, cross_attention_dim]`
    /// - output: `[batch, out_channels, h, w]`
    pub fn forward(&self, sample: Tensor<4>, timestep: f32, context: &Tensor<3>) -> Tensor<4> {
        self.forward_conditioned(sample, timestep, &Conditioning::text(context.clone()))
    }

    /// Whether every cross-attention runs MEPA's processor (the pack carries its projections).
    pub fn takes_image_prompt(&self) -> bool {
        self.down_blocks.iter().all(DownBlock::takes_image_prompt)
            && self.mid_block.takes_image_prompt()
            && self.up_blocks.iter().all(UpBlock::takes_image_prompt)
    }

    /// [`forward`](Self::forward) with MEPA's prompts: text everywhere and, optionally, the
    /// image prompt weighted by its region mask in every cross-attention (docs/METHOD.md §6).
    pub fn forward_conditioned(&self, sample: Tensor<4>, timestep: f32, context: &Conditioning) -> Tensor<4> {
        self.forward_controlled(sample, timestep, context, None)
    }

    /// [`forward_conditioned`](Self::forward_conditioned) plus a ControlNet's residuals,
    /// added as diffusers adds them: each to its skip connection after the down path, and
    /// the last to the mid block's output.
    ///
    /// # Panics
    /// When `control` has a different number of residuals than this UNet has skips; the
    /// ControlNet loader checks that its config matches the UNet's.
    pub fn forward_controlled(
        &self,
        sample: Tensor<4>,
        timestep: f32,
        context: &Conditioning,
        control: Option<&ControlResiduals>,
    ) -> Tensor<4> {
        let [batch, _, _, _] = sample.dims();
        let temb = self.time_embedding.forward(timestep, batch, &sample.device());

        let mut h = self.conv_in.forward(sample);
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            h = block.forward(h, &temb, context, &mut skips);
        }
        h = self.mid_block.forward(h, &temb, context);
        if let Some(control) = control {
            assert_eq!(
                control.down.len(),
                skips.len(),
                "ControlNet residuals do not match the UNet's skip connections"
            );
            skips = skips.into_iter().zip(&control.down).map(|(skip, residual)| skip + residual.clone()).collect();
            h = h + control.mid.clone();
        }

        for block in &self.up_blocks {
            h = block.forward(h, &temb, context, &mut skips);
        }

        self.conv_out.forward(silu(self.conv_norm_out.forward(h)))
    }
}
