//! `UNet2DConditionModel` in diffusers' structure (`models/unets/unet_2d_condition.py`).
//!
//! The config struct keeps diffusers' `config.json` field names and the module tree keeps
//! its parameter names, so a diffusers checkpoint converted to a pack loads by name.
//! Supported now: SD 1.x/2.x style blocks (`CrossAttnDownBlock2D`, `DownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `UpBlock2D`, `CrossAttnUpBlock2D`), 4- or 9-channel input
//! (inpainting), conv or linear projections, per-block head counts.

use burn::module::Module;
use burn::tensor::Tensor;

use super::blocks::{DownBlock, MidBlock, TimeEmbedding, UpBlock};
pub use super::config::{DownBlockType, MidBlockType, PerBlock, UNetConfig, UpBlockType};
use super::mepa::Conditioning;
use crate::error::ModelError;
use crate::nn::{Conv2d, GroupNorm};
use crate::pack::weights::Weights;

/// What a ControlNet adds to the UNet (diffusers' `down_block_additional_residuals` and
/// `mid_block_additional_residual`), already multiplied by the conditioning scale.
pub struct ControlResiduals {
    /// One per skip connection, in the order the down path produces them.
    pub down: Vec<Tensor<4>>,
    pub mid: Tensor<4>,
}

/// The denoiser ε_θ(x_t, t, c).
#[derive(Module, Debug)]
pub struct UNet2DConditionModel {
    #[module(skip)]
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

        self.conv_out.forward(self.conv_norm_out.forward_silu(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn demo(device: &Device) -> UNet2DConditionModel {
        let (w, _) = Weights::random(11, device);
        UNet2DConditionModel::load(&w, &UNetConfig::demo()).unwrap()
    }

    fn max_abs(t: Tensor<4>) -> f32 {
        t.abs().max().into_scalar()
    }

    /// The UNet is a burn module whose parameter paths are diffusers' keys: burn counts every
    /// weight the checkpoint has, a snapshot saved through burn's safetensors store holds
    /// exactly the checkpoint's keys, and another UNet loaded from that snapshot by burn
    /// computes the same.
    #[test]
    fn is_a_burn_module_whose_snapshot_is_the_diffusers_checkpoint() {
        use burn::module::Module;
        use burn::store::ModuleSnapshot;
        use std::collections::BTreeSet;

        let device = Device::flex();
        let (w, created) = Weights::random(11, &device);
        let unet = UNet2DConditionModel::load(&w, &UNetConfig::demo()).unwrap();
        let (count, checkpoint) = {
            let created = created.lock().unwrap();
            (created.parameter_count(), created.to_safetensors())
        };
        assert_eq!(unet.num_params(), count, "burn's parameter count is not the checkpoint's");

        let keys = |bytes: &[u8]| -> BTreeSet<String> {
            safetensors::SafeTensors::deserialize(bytes).unwrap().names().into_iter().map(str::to_string).collect()
        };
        let mut store = crate::pack::snapshot::saving_store();
        unet.save_into(&mut store).unwrap();
        let snapshot = store.get_bytes().unwrap();
        let (ours, theirs) = (keys(&snapshot), keys(&checkpoint));
        let only_ours: Vec<_> = ours.difference(&theirs).collect();
        let only_theirs: Vec<_> = theirs.difference(&ours).collect();
        assert!(
            only_ours.is_empty() && only_theirs.is_empty(),
            "burn's paths {only_ours:?}, the checkpoint's {only_theirs:?}"
        );

        let (other, _) = Weights::random(12, &device);
        let mut other = UNet2DConditionModel::load(&other, &UNetConfig::demo()).unwrap();
        let x = Tensor::<4>::random([1, 9, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let ctx = Tensor::<3>::random([1, 4, 384], Distribution::Normal(0.0, 1.0), &device);
        assert!(max_abs(other.forward(x.clone(), 300.0, &ctx) - unet.forward(x.clone(), 300.0, &ctx)) > 1e-3);
        let applied = other.load_from(&mut crate::pack::snapshot::loading_store(snapshot)).unwrap();
        assert!(applied.is_success() && applied.missing.is_empty(), "{applied:?}");
        assert_eq!(max_abs(other.forward(x.clone(), 300.0, &ctx) - unet.forward(x, 300.0, &ctx)), 0.0);
    }

    /// The output has the latents' shape with the config's channels, and a batch item comes
    /// out the same alone as beside another (no batch-mixing in norms or attention).
    #[test]
    fn keeps_the_latent_shape_and_batch_items_apart() {
        let device = Device::flex();
        let unet = demo(&device);
        assert!(!unet.takes_image_prompt(), "a model without to_k_ip runs the plain processor");
        let x = Tensor::<4>::random([2, 9, 8, 12], Distribution::Normal(0.0, 1.0), &device);
        let ctx = Tensor::<3>::random([2, 5, 384], Distribution::Normal(0.0, 1.0), &device);
        let both = unet.forward(x.clone(), 500.0, &ctx);
        assert_eq!(both.dims(), [2, 4, 8, 12]);
        let first = unet.forward(x.clone().narrow(0, 0, 1), 500.0, &ctx.clone().narrow(0, 0, 1));
        let diff = max_abs(both.clone().narrow(0, 0, 1) - first);
        assert!(diff < 1e-4, "batch item 0 changes with item 1 beside it: {diff}");
        let later = unet.forward(x, 20.0, &ctx);
        assert!(max_abs(both - later) > 1e-3, "the timestep changes nothing");
    }

    /// ControlNet residuals go where diffusers adds them: zeros change nothing, one on the
    /// mid block changes the output.
    #[test]
    fn control_residuals_add_to_the_skips() {
        let device = Device::flex();
        let unet = demo(&device);
        let x = Tensor::<4>::random([1, 9, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let ctx = Conditioning::text(Tensor::<3>::random([1, 4, 384], Distribution::Normal(0.0, 1.0), &device));
        let plain = unet.forward_conditioned(x.clone(), 300.0, &ctx);
        // Skip shapes of the demo (channels 32, 64; one resnet a block; 8² then 4²).
        let zeros = |c, s| Tensor::<4>::zeros([1, c, s, s], &device);
        let down = vec![zeros(32, 8), zeros(32, 8), zeros(32, 4), zeros(64, 4)];
        assert_eq!(down.len(), unet.config().skip_count());
        let none = ControlResiduals { down: down.clone(), mid: zeros(64, 4) };
        assert_eq!(max_abs(unet.forward_controlled(x.clone(), 300.0, &ctx, Some(&none)) - plain.clone()), 0.0);
        let some = ControlResiduals { down, mid: zeros(64, 4).add_scalar(0.5) };
        assert!(max_abs(unet.forward_controlled(x, 300.0, &ctx, Some(&some)) - plain) > 1e-3);
    }
}
