//! `UNet2DConditionModel`'s config, with diffusers' `config.json` field names, shared by the UNet,
//! its blocks and the ControlNet that copies its down path.

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// A number or one number per block, as diffusers allows for `attention_head_dim`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    fn get(&self, i: usize) -> usize {
        match self {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v[i],
        }
    }
}

/// A down block's kind, as diffusers' config names it; parsed once from `config.json`, so an
/// architecture we do not build is refused when the manifest is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::enum_variant_names)] // diffusers' names, which the config spells
pub enum DownBlockType {
    CrossAttnDownBlock2D,
    DownBlock2D,
}

/// An up block's kind, as diffusers' config names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::enum_variant_names)]
pub enum UpBlockType {
    CrossAttnUpBlock2D,
    UpBlock2D,
}

/// The mid block's kind: the one Stable Diffusion uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MidBlockType {
    #[default]
    UNetMidBlock2DCrossAttn,
}

impl DownBlockType {
    /// Whether the block's resnets are each followed by a transformer.
    pub fn has_attention(self) -> bool {
        self == Self::CrossAttnDownBlock2D
    }

    /// The up block that mirrors this one (a ControlNet's trunk config names only down blocks).
    pub fn mirrored(self) -> UpBlockType {
        match self {
            Self::CrossAttnDownBlock2D => UpBlockType::CrossAttnUpBlock2D,
            Self::DownBlock2D => UpBlockType::UpBlock2D,
        }
    }
}

impl UpBlockType {
    pub fn has_attention(self) -> bool {
        self == Self::CrossAttnUpBlock2D
    }
}

/// diffusers' `UNet2DConditionModel` config (field names as in its `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "default_sample_size")]
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<DownBlockType>,
    pub up_block_types: Vec<UpBlockType>,
    #[serde(default)]
    pub mid_block_type: MidBlockType,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_layers")]
    pub layers_per_block: usize,
    /// Number of heads per block (diffusers' historical naming; see `num_attention_heads`).
    pub attention_head_dim: PerBlock,
    /// When set, overrides `attention_head_dim` as the head count (diffusers ≥ 0.19).
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    pub cross_attention_dim: usize,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: usize,
}

/// burn's `Config` (JSON save and load) over the serde mapping of diffusers' `config.json`.
impl burn::config::Config for UNetConfig {}

fn default_sample_size() -> usize {
    64
}
fn default_layers() -> usize {
    2
}
fn default_groups() -> usize {
    32
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}

impl UNetConfig {
    /// Stable Diffusion 1.5 inpainting (`runwayml/stable-diffusion-inpainting/unet/config.json`).
    pub fn sd15_inpainting() -> Self {
        Self {
            sample_size: 64,
            in_channels: 9,
            out_channels: 4,
            down_block_types: vec![
                DownBlockType::CrossAttnDownBlock2D,
                DownBlockType::CrossAttnDownBlock2D,
                DownBlockType::CrossAttnDownBlock2D,
                DownBlockType::DownBlock2D,
            ],
            up_block_types: vec![
                UpBlockType::UpBlock2D,
                UpBlockType::CrossAttnUpBlock2D,
                UpBlockType::CrossAttnUpBlock2D,
                UpBlockType::CrossAttnUpBlock2D,
            ],
            mid_block_type: MidBlockType::UNetMidBlock2DCrossAttn,
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            cross_attention_dim: 768,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            use_linear_projection: false,
            flip_sin_to_cos: true,
            freq_shift: 0,
        }
    }

    /// The untrained demo model: SD's topology at a size SwiftShader runs in seconds,
    /// inpainting input, 384-wide context (MiniLM's embedding width).
    pub fn demo() -> Self {
        Self {
            sample_size: 16,
            in_channels: 9,
            out_channels: 4,
            down_block_types: vec![DownBlockType::CrossAttnDownBlock2D, DownBlockType::DownBlock2D],
            up_block_types: vec![UpBlockType::UpBlock2D, UpBlockType::CrossAttnUpBlock2D],
            mid_block_type: MidBlockType::UNetMidBlock2DCrossAttn,
            block_out_channels: vec![32, 64],
            layers_per_block: 1,
            attention_head_dim: PerBlock::One(2),
            num_attention_heads: None,
            cross_attention_dim: 384,
            norm_num_groups: 8,
            norm_eps: 1e-5,
            use_linear_projection: false,
            flip_sin_to_cos: true,
            freq_shift: 0,
        }
    }

    /// Width of the time embedding: 4 × the first block's channels.
    pub(crate) fn temb_channels(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    /// How many skip connections the down path makes (= ControlNet residuals): conv_in's
    /// output, one per resnet, one per downsampler.
    pub fn skip_count(&self) -> usize {
        let n = self.block_out_channels.len();
        1 + n * self.layers_per_block + (n - 1)
    }

    pub(crate) fn heads(&self, block: usize) -> usize {
        self.num_attention_heads.as_ref().unwrap_or(&self.attention_head_dim).get(block)
    }

    pub(crate) fn validate(&self) -> Result<(), ModelError> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(ModelError::Unsupported(format!(
                "UNet config has {} block_out_channels, {} down blocks and {} up blocks; they must be equal and non-zero",
                n,
                self.down_block_types.len(),
                self.up_block_types.len()
            )));
        }
        if let PerBlock::Each(v) = self.num_attention_heads.as_ref().unwrap_or(&self.attention_head_dim)
            && v.len() != n
        {
            return Err(ModelError::Unsupported("attention_head_dim must have one entry per block".into()));
        }
        // Counts that divide or size every layer: a zero or a remainder would not describe any
        // model diffusers can save.
        let groups = self.norm_num_groups;
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            let heads = self.heads(i);
            if c == 0 || groups == 0 || c % groups != 0 || heads == 0 || c % heads != 0 {
                return Err(ModelError::Unsupported(format!(
                    "UNet block {i} has {c} channels, which {groups} norm groups and {heads} attention heads must divide (both non-zero)"
                )));
            }
        }
        if self.layers_per_block == 0
            || self.in_channels == 0
            || self.out_channels == 0
            || self.cross_attention_dim == 0
        {
            return Err(ModelError::Unsupported(
                "UNet config: layers_per_block, in_channels, out_channels and cross_attention_dim must be non-zero"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Latent pixels per image pixel along one side is fixed by the VAE, not the UNet;
    /// the UNet only needs latent sides divisible by this.
    pub fn latent_multiple(&self) -> usize {
        crate::nn::levels_scale(self.block_out_channels.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SD 1.5 inpainting's own `unet/config.json` (diffusers 0.6 era, with its extra keys).
    const SD15_INPAINTING: &str = r#"{
      "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0.dev0",
      "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
      "center_input_sample": false, "cross_attention_dim": 768,
      "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
      "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 9,
      "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
      "out_channels": 4, "sample_size": 64,
      "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    }"#;

    #[test]
    fn reads_diffusers_config_json() {
        let config: UNetConfig = serde_json::from_str(SD15_INPAINTING).unwrap();
        assert_eq!(config, UNetConfig::sd15_inpainting());
        config.validate().unwrap();
        // conv_in, 4 blocks × 2 resnets, 3 downsamplers: diffusers' 12 ControlNet residuals.
        assert_eq!(config.skip_count(), 12);
        assert_eq!(config.latent_multiple(), 8);
        assert_eq!((config.heads(0), config.temb_channels()), (8, 1280));
    }

    /// A block type we do not build is refused when the config is read, naming it; so are
    /// block lists that disagree with the channel list.
    #[test]
    fn refuses_architectures_it_does_not_build() {
        let other = SD15_INPAINTING.replacen("\"DownBlock2D\"]", "\"SimpleCrossAttnDownBlock2D\"]", 1);
        let err = serde_json::from_str::<UNetConfig>(&other).unwrap_err().to_string();
        assert!(err.contains("SimpleCrossAttnDownBlock2D"), "{err}");
        let mut short = UNetConfig::sd15_inpainting();
        short.up_block_types.pop();
        assert!(matches!(short.validate(), Err(ModelError::Unsupported(_))));
        let mut heads = UNetConfig::sd15_inpainting();
        heads.attention_head_dim = PerBlock::Each(vec![5, 10, 20]);
        assert!(matches!(heads.validate(), Err(ModelError::Unsupported(_))));
        heads.num_attention_heads = Some(PerBlock::Each(vec![5, 10, 20, 20]));
        heads.validate().unwrap();
        assert_eq!(heads.heads(2), 20, "num_attention_heads overrides attention_head_dim");
    }
}
