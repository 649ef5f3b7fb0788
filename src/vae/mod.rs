//! The VAE: the encoder turns the masked product image into latents for the inpainting
//! input, the decoder turns denoised latents into pixels. Two architectures load:
//! `AutoencoderKL` (Stable Diffusion's, here in diffusers' structure,
//! `models/autoencoders/autoencoder_kl.py`, `vae.py`) and `AutoencoderTiny`
//! (TAESD's, [`crate::vae::tiny`]); [`VaeModelConfig`], [`LatentEncoder`] and
//! [`LatentDecoder`] pick between them by the config's fields.

pub mod preview;
pub mod tiling;
pub mod tiny;

use burn::module::Module;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::nn::resnet::ResnetBlock2D;
use crate::nn::{Conv2d, GroupNorm, upsample_nearest_2x};
use crate::pack::weights::Weights;
use crate::vae::tiling::{Tiles, tile_side_within, tiled};
use crate::vae::tiny::{ProductPixels, TinyDecoder, TinyEncoder, TinyVaeConfig};

/// diffusers' `AutoencoderKL` config (field names as in its `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "one")]
    pub layers_per_block: usize,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "groups")]
    pub norm_num_groups: usize,
    #[serde(default = "scaling")]
    pub scaling_factor: f32,
    #[serde(default = "default_down")]
    pub down_block_types: Vec<EncoderBlockType>,
    #[serde(default = "default_up")]
    pub up_block_types: Vec<DecoderBlockType>,
}

/// burn's `Config` (JSON save and load) over the serde mapping of diffusers' `config.json`.
impl burn::config::Config for VaeConfig {}

/// The KL VAE's block kinds, as diffusers' config names them: one of each is all SD uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EncoderBlockType {
    DownEncoderBlock2D,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecoderBlockType {
    UpDecoderBlock2D,
}

fn three() -> usize {
    3
}
fn one() -> usize {
    1
}
fn four() -> usize {
    4
}
fn groups() -> usize {
    32
}
fn scaling() -> f32 {
    0.18215
}
fn default_down() -> Vec<EncoderBlockType> {
    vec![EncoderBlockType::DownEncoderBlock2D]
}
fn default_up() -> Vec<DecoderBlockType> {
    vec![DecoderBlockType::UpDecoderBlock2D]
}

impl VaeConfig {
    /// Stable Diffusion 1.x VAE (`stable-diffusion-v1-5/vae/config.json`).
    pub fn sd15() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            down_block_types: vec![EncoderBlockType::DownEncoderBlock2D; 4],
            up_block_types: vec![DecoderBlockType::UpDecoderBlock2D; 4],
        }
    }

    /// The untrained demo model's VAE: SD's 8× downsampling with few channels.
    pub fn demo() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![8, 16, 32, 32],
            layers_per_block: 1,
            latent_channels: 4,
            norm_num_groups: 8,
            scaling_factor: 0.18215,
            down_block_types: vec![EncoderBlockType::DownEncoderBlock2D; 4],
            up_block_types: vec![DecoderBlockType::UpDecoderBlock2D; 4],
        }
    }

    /// Image pixels per latent pixel along one side.
    pub fn downscale(&self) -> usize {
        crate::nn::levels_scale(self.block_out_channels.len())
    }

    /// Bytes of the largest f32 activation the decoder makes for one `h × w`-latent image: the
    /// widest block at its resolution (SD 1.5 at 64² latents: 256 channels at 512², 256 MiB),
    /// or the mid block's attention scores (`(h·w)²`) where those are larger.
    pub fn decoder_peak_bytes(&self, h: usize, w: usize) -> u64 {
        let reversed: Vec<usize> = self.block_out_channels.iter().rev().copied().collect();
        let mut peak = (h * w) * (h * w);
        let mut prev = reversed[0];
        let (mut h, mut w) = (h, w);
        for (i, &ch) in reversed.iter().enumerate() {
            peak = peak.max(prev.max(ch) * h * w);
            if i + 1 < reversed.len() {
                (h, w) = (2 * h, 2 * w);
                peak = peak.max(ch * h * w);
            }
            prev = ch;
        }
        4 * peak as u64
    }

    /// Bytes of the largest f32 activation the encoder makes for one `h × w`-pixel image.
    pub fn encoder_peak_bytes(&self, h: usize, w: usize) -> u64 {
        let c = &self.block_out_channels;
        let (mut h, mut w) = (h, w);
        let mut peak = 0;
        let mut prev = c[0];
        for (i, &ch) in c.iter().enumerate() {
            peak = peak.max(prev.max(ch) * h * w);
            if i + 1 < c.len() {
                (h, w) = (h.div_ceil(2), w.div_ceil(2));
            }
            prev = ch;
        }
        4 * peak.max((h * w) * (h * w)) as u64
    }

    /// The latent tile side for encoding and decoding an `h × w`-latent image when one pass
    /// over the whole image would make an activation larger than `limit` bytes (a GPU's
    /// largest storage buffer binding): the largest multiple of 4 whose tiles fit, so the
    /// fewest tiles. `None` when the whole image fits, or when not even an 8-latent tile would.
    pub fn tile_within(&self, h: usize, w: usize, limit: u64) -> Option<usize> {
        let f = self.downscale();
        tile_side_within(h, w, |th, tw| {
            self.decoder_peak_bytes(th, tw) <= limit && self.encoder_peak_bytes(th * f, tw * f) <= limit
        })
    }

    fn validate(&self) -> Result<(), ModelError> {
        let n = self.block_out_channels.len();
        let ok_types = self.down_block_types.len() == n && self.up_block_types.len() == n;
        if n == 0 || !ok_types {
            return Err(ModelError::Unsupported(
                "VAE must have one DownEncoderBlock2D and one UpDecoderBlock2D per block_out_channels entry".into(),
            ));
        }
        Ok(())
    }
}

/// The VAE's single-head spatial self-attention (diffusers `Attention` with `group_norm`,
/// `residual_connection=True`), applied in both mid blocks.
#[derive(Module, Debug)]
struct VaeAttention {
    group_norm: GroupNorm,
    inner: crate::nn::attention::Attention,
}

impl VaeAttention {
    fn load(w: &Weights, channels: usize, groups: usize) -> Result<Self, ModelError> {
        Ok(Self {
            group_norm: GroupNorm::load(&w.pp("group_norm"), groups, channels, 1e-6)?,
            inner: crate::nn::attention::Attention::load(w, channels, channels, 1, channels, true)?,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let tokens = self.group_norm.forward(x.clone()).reshape([b, c, h * w]).swap_dims(1, 2);
        let out = self.inner.forward(tokens, None);
        out.swap_dims(1, 2).reshape([b, c, h, w]) + x
    }
}

#[derive(Module, Debug)]
struct VaeMidBlock {
    resnet0: ResnetBlock2D,
    attention: VaeAttention,
    resnet1: ResnetBlock2D,
}

impl VaeMidBlock {
    fn load(w: &Weights, channels: usize, groups: usize) -> Result<Self, ModelError> {
        Ok(Self {
            resnet0: ResnetBlock2D::load(&w.pp("resnets").pp(0), channels, channels, None, groups, 1e-6)?,
            attention: VaeAttention::load(&w.pp("attentions").pp(0), channels, groups)?,
            resnet1: ResnetBlock2D::load(&w.pp("resnets").pp(1), channels, channels, None, groups, 1e-6)?,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.resnet0.forward(x, None);
        let x = self.attention.forward(x);
        self.resnet1.forward(x, None)
    }
}

#[derive(Module, Debug)]
struct CodecBlock {
    resnets: Vec<ResnetBlock2D>,
    resample: Option<Conv2d>,
}

/// Image → latent distribution mean (diffusers `Encoder` + `quant_conv`).
#[derive(Module, Debug)]
pub struct VaeEncoder {
    conv_in: Conv2d,
    down_blocks: Vec<CodecBlock>,
    mid_block: VaeMidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Conv2d,
    latent_channels: usize,
    scaling_factor: f32,
}

impl VaeEncoder {
    /// Loads `encoder.*` and `quant_conv.*` from the VAE weights `w`.
    pub fn load(w: &Weights, config: &VaeConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let c = &config.block_out_channels;
        let g = config.norm_num_groups;
        let ew = w.pp("encoder");
        let mut down_blocks = Vec::new();
        let mut out_ch = c[0];
        for i in 0..c.len() {
            let in_ch = out_ch;
            out_ch = c[i];
            let bw = ew.pp("down_blocks").pp(i);
            let resnets = (0..config.layers_per_block)
                .map(|j| {
                    ResnetBlock2D::load(
                        &bw.pp("resnets").pp(j),
                        if j == 0 { in_ch } else { out_ch },
                        out_ch,
                        None,
                        g,
                        1e-6,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            let resample = if i + 1 < c.len() {
                Some(Conv2d::load_padded(
                    &bw.pp("downsamplers").pp(0).pp("conv"),
                    out_ch,
                    out_ch,
                    3,
                    2,
                    [(0, 1), (0, 1)],
                )?)
            } else {
                None
            };
            down_blocks.push(CodecBlock { resnets, resample });
        }
        let top = c[c.len() - 1];
        let lat2 = 2 * config.latent_channels;
        Ok(Self {
            conv_in: Conv2d::load(&ew.pp("conv_in"), config.in_channels, c[0], 3, 1, 1)?,
            down_blocks,
            mid_block: VaeMidBlock::load(&ew.pp("mid_block"), top, g)?,
            conv_norm_out: GroupNorm::load(&ew.pp("conv_norm_out"), g, top, 1e-6)?,
            conv_out: Conv2d::load(&ew.pp("conv_out"), top, lat2, 3, 1, 1)?,
            quant_conv: Conv2d::load(&w.pp("quant_conv"), lat2, lat2, 1, 1, 0)?,
            latent_channels: config.latent_channels,
            scaling_factor: config.scaling_factor,
        })
    }

    /// Encodes and returns the distribution's mean times `scaling_factor` (the mode:
    /// deterministic, so the same inputs give the same latents).
    ///
    /// # Shapes
    /// - image: `[batch, 3, H, W]` in [-1, 1] → `[batch, latent_channels, H/f, W/f]`
    pub fn encode(&self, image: Tensor<4>) -> Tensor<4> {
        let mut h = self.conv_in.forward(image);
        for block in &self.down_blocks {
            for r in &block.resnets {
                h = r.forward(h, None);
            }
            if let Some(down) = &block.resample {
                h = down.forward(h);
            }
        }
        h = self.mid_block.forward(h);
        let moments = self.quant_conv.forward(self.conv_out.forward(self.conv_norm_out.forward_silu(h)));
        moments.narrow(1, 0, self.latent_channels).mul_scalar(self.scaling_factor)
    }

    /// [`VaeEncoder::encode`] over overlapping `tile × tile`-latent tiles, blended as diffusers'
    /// `enable_tiling()` does ([`crate::vae::tiling`]); an image no larger than one tile is
    /// encoded whole, as there. `tile` must be a multiple of 4.
    pub fn encode_tiled(&self, image: Tensor<4>, tile: usize) -> Tensor<4> {
        let f = 1 << (self.down_blocks.len() - 1);
        let tiles = Tiles { input: tile * f, output: tile };
        let [_, _, h, w] = image.dims();
        if tiles.needed_for(h, w) { tiled(image, tiles, |t, _| self.encode(t)) } else { self.encode(image) }
    }
}

/// Latents → image (diffusers `post_quant_conv` + `Decoder`).
#[derive(Module, Debug)]
pub struct VaeDecoder {
    post_quant_conv: Conv2d,
    conv_in: Conv2d,
    mid_block: VaeMidBlock,
    up_blocks: Vec<CodecBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    scaling_factor: f32,
}

impl VaeDecoder {
    /// Loads `decoder.*` and `post_quant_conv.*` from the VAE weights `w`.
    pub fn load(w: &Weights, config: &VaeConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let c = &config.block_out_channels;
        let g = config.norm_num_groups;
        let dw = w.pp("decoder");
        let reversed: Vec<usize> = c.iter().rev().copied().collect();
        let lat = config.latent_channels;
        let mut up_blocks = Vec::new();
        let mut out_ch = reversed[0];
        for i in 0..reversed.len() {
            let prev = out_ch;
            out_ch = reversed[i];
            let bw = dw.pp("up_blocks").pp(i);
            let resnets = (0..config.layers_per_block + 1)
                .map(|j| {
                    ResnetBlock2D::load(
                        &bw.pp("resnets").pp(j),
                        if j == 0 { prev } else { out_ch },
                        out_ch,
                        None,
                        g,
                        1e-6,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            let resample = if i + 1 < reversed.len() {
                Some(Conv2d::load(&bw.pp("upsamplers").pp(0).pp("conv"), out_ch, out_ch, 3, 1, 1)?)
            } else {
                None
            };
            up_blocks.push(CodecBlock { resnets, resample });
        }
        Ok(Self {
            post_quant_conv: Conv2d::load(&w.pp("post_quant_conv"), lat, lat, 1, 1, 0)?,
            conv_in: Conv2d::load(&dw.pp("conv_in"), lat, reversed[0], 3, 1, 1)?,
            mid_block: VaeMidBlock::load(&dw.pp("mid_block"), reversed[0], g)?,
            up_blocks,
            conv_norm_out: GroupNorm::load(&dw.pp("conv_norm_out"), g, c[0], 1e-6)?,
            conv_out: Conv2d::load(&dw.pp("conv_out"), c[0], config.out_channels, 3, 1, 1)?,
            scaling_factor: config.scaling_factor,
        })
    }

    /// Decodes scaled latents (divides by `scaling_factor` first, as the SD pipelines do).
    ///
    /// # Shapes
    /// - latents: `[batch, latent_channels, h, w]` → `[batch, 3, h·f, w·f]`, roughly in [-1, 1]
    pub fn decode(&self, latents: Tensor<4>) -> Tensor<4> {
        let z = self.post_quant_conv.forward(latents.div_scalar(self.scaling_factor));
        let mut h = self.mid_block.forward(self.conv_in.forward(z));
        for block in &self.up_blocks {
            for r in &block.resnets {
                h = r.forward(h, None);
            }
            if let Some(up) = &block.resample {
                h = up.forward(upsample_nearest_2x(h));
            }
        }
        self.conv_out.forward(self.conv_norm_out.forward_silu(h))
    }

    /// [`VaeDecoder::decode`] over overlapping `tile × tile`-latent tiles, blended as diffusers'
    /// `enable_tiling()` does ([`crate::vae::tiling`]); latents no larger than one tile are
    /// decoded whole, as there. `tile` must be a multiple of 4.
    pub fn decode_tiled(&self, latents: Tensor<4>, tile: usize) -> Tensor<4> {
        let f = 1 << (self.up_blocks.len() - 1);
        let tiles = Tiles { input: tile, output: tile * f };
        let [_, _, h, w] = latents.dims();
        if tiles.needed_for(h, w) { tiled(latents, tiles, |t, _| self.decode(t)) } else { self.decode(latents) }
    }
}

/// Either VAE's config, as a manifest or a diffusers `vae/config.json` spells it (told apart
/// by their fields: `encoder_block_out_channels` is AutoencoderTiny's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VaeModelConfig {
    Tiny(TinyVaeConfig),
    Kl(VaeConfig),
}

/// burn's `Config` (JSON save and load) over the serde mapping of diffusers' `config.json`.
impl burn::config::Config for VaeModelConfig {}

impl VaeModelConfig {
    /// Image pixels per latent pixel along one side.
    pub fn downscale(&self) -> usize {
        match self {
            VaeModelConfig::Tiny(c) => c.downscale(),
            VaeModelConfig::Kl(c) => c.downscale(),
        }
    }

    pub fn latent_channels(&self) -> usize {
        match self {
            VaeModelConfig::Tiny(c) => c.latent_channels,
            VaeModelConfig::Kl(c) => c.latent_channels,
        }
    }

    /// diffusers' `scaling_factor`: latents the UNet sees = VAE latents × this.
    pub fn scaling_factor(&self) -> f32 {
        match self {
            VaeModelConfig::Tiny(c) => c.scaling_factor,
            VaeModelConfig::Kl(c) => c.scaling_factor,
        }
    }
}

impl From<VaeConfig> for VaeModelConfig {
    fn from(c: VaeConfig) -> Self {
        VaeModelConfig::Kl(c)
    }
}

/// Image → scaled latents, for either VAE.
#[derive(Module, Debug)]
pub enum LatentEncoder {
    Kl(VaeEncoder),
    Tiny(TinyEncoder),
}

impl LatentEncoder {
    pub fn load(w: &Weights, config: &VaeModelConfig) -> Result<Self, ModelError> {
        Ok(match config {
            VaeModelConfig::Kl(c) => LatentEncoder::Kl(VaeEncoder::load(w, c)?),
            VaeModelConfig::Tiny(c) => LatentEncoder::Tiny(TinyEncoder::load(w, c)?),
        })
    }

    /// `[batch, 3, H, W]` in [-1, 1] → `[batch, latent_channels, H/f, W/f]` (× scaling factor).
    pub fn encode(&self, image: Tensor<4>) -> Tensor<4> {
        self.encode_tiled(image, None)
    }

    /// [`LatentEncoder::encode`], in `tile`-latent tiles when given.
    pub fn encode_tiled(&self, image: Tensor<4>, tile: Option<usize>) -> Tensor<4> {
        match (self, tile) {
            (LatentEncoder::Kl(e), Some(tile)) => e.encode_tiled(image, tile),
            (LatentEncoder::Kl(e), None) => e.encode(image),
            (LatentEncoder::Tiny(e), Some(tile)) => e.encode_tiled(image, tile),
            (LatentEncoder::Tiny(e), None) => e.encode(image),
        }
    }
}

/// Scaled latents → image, for either VAE.
#[derive(Module, Debug)]
pub enum LatentDecoder {
    Kl(VaeDecoder),
    Tiny(TinyDecoder),
}

impl LatentDecoder {
    pub fn load(w: &Weights, config: &VaeModelConfig) -> Result<Self, ModelError> {
        Ok(match config {
            VaeModelConfig::Kl(c) => LatentDecoder::Kl(VaeDecoder::load(w, c)?),
            VaeModelConfig::Tiny(c) => LatentDecoder::Tiny(TinyDecoder::load(w, c)?),
        })
    }

    /// `[batch, latent_channels, h, w]` → `[batch, 3, h·f, w·f]`, roughly in [-1, 1].
    pub fn decode(&self, latents: Tensor<4>) -> Tensor<4> {
        self.decode_tiled(latents, None)
    }

    /// [`LatentDecoder::decode`], in `tile`-latent tiles when given.
    pub fn decode_tiled(&self, latents: Tensor<4>, tile: Option<usize>) -> Tensor<4> {
        self.decode_tiled_with(latents, tile, None)
    }

    /// Whether the decoder reads the product's pixels (an AutoencoderTiny with `mask_condition`).
    pub fn is_conditioned(&self) -> bool {
        matches!(self, LatentDecoder::Tiny(d) if d.is_conditioned())
    }

    /// [`LatentDecoder::decode_tiled`], keeping `product` where the decoder [is conditioned](Self::is_conditioned).
    pub fn decode_tiled_with(
        &self,
        latents: Tensor<4>,
        tile: Option<usize>,
        product: Option<&ProductPixels>,
    ) -> Tensor<4> {
        match (self, tile) {
            (LatentDecoder::Kl(d), Some(tile)) => d.decode_tiled(latents, tile),
            (LatentDecoder::Kl(d), None) => d.decode(latents),
            (LatentDecoder::Tiny(d), Some(tile)) => d.decode_tiled_with(latents, tile, product),
            (LatentDecoder::Tiny(d), None) => d.decode_with(latents, product),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn sd15_decoder_peak_is_256_channels_at_full_size() {
        let sd = VaeConfig::sd15();
        assert_eq!(sd.decoder_peak_bytes(64, 64), 256 * 512 * 512 * 4);
        assert_eq!(sd.encoder_peak_bytes(512, 512), 128 * MIB);
    }

    /// WebGPU's default 128 MiB binding: SD 1.5 at 512² needs tiles, and the largest tiles that
    /// fit are 44 latents (352 px: 256 channels × 352² × 4 B = 121 MiB); a 2 GiB binding needs none.
    #[test]
    fn tile_side_is_the_largest_that_fits_the_binding() {
        let sd = VaeConfig::sd15();
        assert_eq!(sd.tile_within(64, 64, 128 * MIB), Some(44));
        assert!(sd.decoder_peak_bytes(44, 44) <= 128 * MIB && sd.decoder_peak_bytes(48, 48) > 128 * MIB);
        assert_eq!(sd.tile_within(64, 64, 2048 * MIB), None);
        assert_eq!(sd.tile_within(128, 96, 128 * MIB), Some(44));
        assert_eq!(sd.tile_within(64, 64, MIB), None, "not even 8-latent tiles fit 1 MiB");
    }
}
