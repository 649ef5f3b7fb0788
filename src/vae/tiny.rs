//! `AutoencoderTiny` in diffusers' structure (`models/autoencoders/autoencoder_tiny.py`,
//! `EncoderTiny`/`DecoderTiny` in `vae.py`): TAESD's architecture. Plain 3×3 convs, ReLU
//! and residual blocks, no normalisation and no attention, so decoding costs a fraction of
//! AutoencoderKL's: the fast decoder for the browser, and the default model's VAE.
//!
//! A decoder may carry a product-condition branch (`mask_condition`, ours: AsymmetricAutoencoderKL's
//! mask-conditioned decoder for TAESD, `training/condition_decoder.py`, docs/METHOD.md §4): it
//! reads the product's own pixels, which the latents alone cannot hold to 30 dB.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::nn::{Conv2d, upsample_nearest_2x};
use crate::pack::weights::Weights;
use crate::vae::tiling::{Tiles, tile_side_within, tiled};

/// diffusers' `AutoencoderTiny` config (field names as in its `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TinyVaeConfig {
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    pub encoder_block_out_channels: Vec<usize>,
    pub decoder_block_out_channels: Vec<usize>,
    pub num_encoder_blocks: Vec<usize>,
    pub num_decoder_blocks: Vec<usize>,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "relu_name")]
    pub act_fn: String,
    #[serde(default = "nearest")]
    pub upsample_fn: String,
    #[serde(default = "two")]
    pub upsampling_scaling_factor: usize,
    #[serde(default = "one")]
    pub scaling_factor: f32,
    /// The decoder has the product-condition branch (`decoder.condition_encoder.*`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mask_condition: bool,
}

/// burn's `Config` (JSON save and load) over the serde mapping of diffusers' `config.json`.
impl burn::config::Config for TinyVaeConfig {}

fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn two() -> usize {
    2
}
fn one() -> f32 {
    1.0
}
fn relu_name() -> String {
    "relu".into()
}
fn nearest() -> String {
    "nearest".into()
}

impl TinyVaeConfig {
    /// Image pixels per latent pixel along one side.
    pub fn downscale(&self) -> usize {
        crate::nn::levels_scale(self.encoder_block_out_channels.len())
    }

    /// Bytes of the decoder's largest activation for `h × w` latents (batch 1): its widest level
    /// at full resolution, where the last block runs.
    pub fn decoder_peak_bytes(&self, h: usize, w: usize) -> u64 {
        let f = self.downscale();
        let widest = self.decoder_block_out_channels.iter().copied().max().unwrap_or(0);
        4 * (widest * h * f * w * f) as u64
    }

    /// Bytes of the encoder's largest activation for an `h × w`-pixel image (batch 1): its
    /// first conv's output, at full resolution.
    pub fn encoder_peak_bytes(&self, h: usize, w: usize) -> u64 {
        4 * (self.encoder_block_out_channels.first().copied().unwrap_or(0) * h * w) as u64
    }

    /// The latent tile side to run the VAE in when the whole `h × w`-latent image would make an
    /// activation larger than `limit` bytes (a GPU's largest storage binding): the largest
    /// multiple of 4 whose tiles fit. `None` when the whole image fits, or when not even an
    /// 8-latent tile would ([`tile_side_within`], as for the KL VAE).
    pub fn tile_within(&self, h: usize, w: usize, limit: u64) -> Option<usize> {
        let f = self.downscale();
        tile_side_within(h, w, |th, tw| {
            self.decoder_peak_bytes(th, tw) <= limit && self.encoder_peak_bytes(th * f, tw * f) <= limit
        })
    }

    fn validate(&self) -> Result<(), ModelError> {
        let (e, d) = (&self.encoder_block_out_channels, &self.decoder_block_out_channels);
        let uniform = |c: &[usize]| c.windows(2).all(|p| p[0] == p[1]);
        if e.is_empty()
            || e.len() != self.num_encoder_blocks.len()
            || d.len() != self.num_decoder_blocks.len()
            || d.len() != e.len()
        {
            return Err(ModelError::Unsupported(
                "AutoencoderTiny needs one block count per block_out_channels entry, as many decoder as encoder levels"
                    .into(),
            ));
        }
        // diffusers builds each level's resampling conv as C_i → C_i, so only uniform widths load.
        if !uniform(e) || !uniform(d) {
            return Err(ModelError::Unsupported("AutoencoderTiny with different widths per level".into()));
        }
        if self.act_fn != "relu" || self.upsample_fn != "nearest" || self.upsampling_scaling_factor != 2 {
            return Err(ModelError::Unsupported(format!(
                "AutoencoderTiny with act_fn {}, upsample_fn {}, factor {} (adcanvas runs relu, nearest, 2)",
                self.act_fn, self.upsample_fn, self.upsampling_scaling_factor
            )));
        }
        Ok(())
    }
}

/// `AutoencoderTinyBlock`: `relu(conv(relu(conv(relu(conv(x))))) + x)` (equal widths, so the skip is the identity).
#[derive(Module, Debug)]
struct TinyBlock {
    convs: [Conv2d; 3],
}

impl TinyBlock {
    fn load(w: &Weights, channels: usize) -> Result<Self, ModelError> {
        let c = |i: usize| Conv2d::load(&w.pp("conv").pp(i), channels, channels, 3, 1, 1);
        Ok(Self { convs: [c(0)?, c(2)?, c(4)?] })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = relu(self.convs[0].forward(x.clone()));
        let h = relu(self.convs[1].forward(h));
        relu(self.convs[2].forward(h) + x)
    }
}

#[derive(Module, Debug)]
enum Layer {
    Conv(Conv2d),
    Block(TinyBlock),
    Relu(Relu),
    Upsample(Upsample),
    Blend(Blend),
}

/// `relu` between the convs (no parameters).
#[derive(Module, Debug)]
struct Relu;

/// Nearest-neighbour 2× upsampling (no parameters).
#[derive(Module, Debug)]
struct Upsample;

/// Where a conditioned decoder blends in the product's features (a no-op without them).
#[derive(Module, Debug)]
struct Blend;

fn run(layers: &[Layer], mut x: Tensor<4>, product: Option<&ProductFeatures>) -> Tensor<4> {
    for layer in layers {
        x = match (layer, product) {
            (Layer::Conv(c), _) => c.forward(x),
            (Layer::Block(b), _) => b.forward(x),
            (Layer::Relu(_), _) => relu(x),
            (Layer::Upsample(_), _) => upsample_nearest_2x(x),
            (Layer::Blend(_), Some(p)) => p.blend(x),
            (Layer::Blend(_), None) => x,
        };
    }
    x
}

/// The product a conditioned decoder keeps: its pixels and its mask on the whole canvas.
pub struct ProductPixels {
    /// `[1, 3, H, W]` in [-1, 1]; only where `mask` > 0 is read.
    pub image: Tensor<4>,
    /// `[1, 1, H, W]` in [0, 1], 1 on the product.
    pub mask: Tensor<4>,
}

impl ProductPixels {
    /// The `h × w` pixels from `[top, left]`.
    fn crop(&self, top: usize, left: usize, h: usize, w: usize) -> Self {
        let cut = |t: &Tensor<4>| t.clone().narrow(2, top, h).narrow(3, left, w);
        Self { image: cut(&self.image), mask: cut(&self.mask) }
    }
}

/// The condition encoder (`decoder.condition_encoder.layers.N`): a 3×3 conv from the masked
/// product and its mask at full size, then one 4×4 stride-2 conv per coarser decoder level.
#[derive(Module, Debug)]
struct ConditionEncoder {
    convs: Vec<Conv2d>,
}

impl ConditionEncoder {
    fn load(w: &Weights, image_channels: usize, channels: usize, levels: usize) -> Result<Self, ModelError> {
        let lw = w.pp("decoder").pp("condition_encoder").pp("layers");
        let mut convs = vec![Conv2d::load(&lw.pp(0), image_channels + 1, channels, 3, 1, 1)?];
        for i in 1..levels {
            convs.push(Conv2d::load(&lw.pp(i), channels, channels, 4, 2, 1)?);
        }
        Ok(Self { convs })
    }

    /// Each conv's output before its ReLU, full size first, with the mask at that size.
    fn features(&self, product: &ProductPixels) -> ProductFeatures {
        let mut x = Tensor::cat(vec![product.image.clone() * product.mask.clone(), product.mask.clone()], 1);
        let mut levels = Vec::with_capacity(self.convs.len());
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv.forward(x);
            levels.push((x.clone(), downsample_nearest(product.mask.clone(), 1 << i)));
            x = relu(x);
        }
        ProductFeatures { levels }
    }
}

/// The product's features and mask at each decoder resolution.
struct ProductFeatures {
    levels: Vec<(Tensor<4>, Tensor<4>)>,
}

impl ProductFeatures {
    /// `h · (1 − m) + c · m` with the features `c` and mask `m` of `h`'s resolution (the
    /// mask-guided blend of diffusers' `MaskConditionDecoder`, whose mask is our 1 − m).
    fn blend(&self, h: Tensor<4>) -> Tensor<4> {
        let side = h.dims()[3];
        let (c, m) = self
            .levels
            .iter()
            .find(|(c, _)| c.dims()[3] == side)
            .expect("a product feature at every decoder resolution");
        h.clone() + (c.clone() - h) * m.clone()
    }
}

/// Every `k`-th pixel from the first (`F.interpolate(mode="nearest")` to `1/k` the size).
///
/// # Shapes
/// - x: `[b, c, h, w]` → `[b, c, h/k, w/k]` (`h`, `w` multiples of `k`)
fn downsample_nearest(x: Tensor<4>, k: usize) -> Tensor<4> {
    if k == 1 {
        return x;
    }
    let [b, c, h, w] = x.dims();
    let rows = x.reshape([b * c * h / k, k, w]).narrow(1, 0, 1);
    rows.reshape([b * c * h / k * w / k, k]).narrow(1, 0, 1).reshape([b, c, h / k, w / k])
}

/// Image → latents × `scaling_factor` (`EncoderTiny`; deterministic).
#[derive(Module, Debug)]
pub struct TinyEncoder {
    layers: Vec<Layer>,
    levels: usize,
    scaling_factor: f32,
}

impl TinyEncoder {
    /// Loads `encoder.layers.N.*` (indices as `nn.Sequential` numbers them).
    pub fn load(w: &Weights, config: &TinyVaeConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let lw = w.pp("encoder").pp("layers");
        let c = &config.encoder_block_out_channels;
        let mut layers = Vec::new();
        for (i, &blocks) in config.num_encoder_blocks.iter().enumerate() {
            let idx = layers.len();
            layers.push(Layer::Conv(if i == 0 {
                Conv2d::load(&lw.pp(idx), config.in_channels, c[i], 3, 1, 1)?
            } else {
                Conv2d::load_no_bias(&lw.pp(idx), c[i], c[i], 3, 2, 1)?
            }));
            for _ in 0..blocks {
                let idx = layers.len();
                layers.push(Layer::Block(TinyBlock::load(&lw.pp(idx), c[i])?));
            }
        }
        let idx = layers.len();
        layers.push(Layer::Conv(Conv2d::load(&lw.pp(idx), c[c.len() - 1], config.latent_channels, 3, 1, 1)?));
        Ok(Self { layers, levels: c.len(), scaling_factor: config.scaling_factor })
    }

    /// # Shapes
    /// - image: `[batch, 3, H, W]` in [-1, 1] → `[batch, latent_channels, H/f, W/f]`
    pub fn encode(&self, image: Tensor<4>) -> Tensor<4> {
        // TAESD works on [0, 1] images.
        run(&self.layers, image.add_scalar(1.0).div_scalar(2.0), None).mul_scalar(self.scaling_factor)
    }

    /// [`TinyEncoder::encode`] over overlapping `tile × tile`-latent tiles, blended like the KL
    /// encoder's ([`crate::vae::tiling`]). diffusers tiles AutoencoderTiny its own way; this is
    /// for images whose whole-image activations would not fit one GPU buffer.
    pub fn encode_tiled(&self, image: Tensor<4>, tile: usize) -> Tensor<4> {
        let f = 1 << (self.levels - 1);
        let tiles = Tiles { input: tile * f, output: tile };
        let [_, _, h, w] = image.dims();
        if tiles.needed_for(h, w) { tiled(image, tiles, |t, _| self.encode(t)) } else { self.encode(image) }
    }
}

/// Latents → image (`DecoderTiny`), with the product-condition branch when the config has one.
#[derive(Module, Debug)]
pub struct TinyDecoder {
    layers: Vec<Layer>,
    levels: usize,
    scaling_factor: f32,
    condition: Option<ConditionEncoder>,
}

impl TinyDecoder {
    /// Loads `decoder.layers.N.*`.
    pub fn load(w: &Weights, config: &TinyVaeConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let lw = w.pp("decoder").pp("layers");
        let c = &config.decoder_block_out_channels;
        let mut layers =
            vec![Layer::Conv(Conv2d::load(&lw.pp(0), config.latent_channels, c[0], 3, 1, 1)?), Layer::Relu(Relu)];
        let n = config.num_decoder_blocks.len();
        // `Layer::Blend` takes no index in diffusers' `nn.Sequential`, so indices skip them.
        let index = |layers: &[Layer]| layers.iter().filter(|l| !matches!(l, Layer::Blend(_))).count();
        for (i, &blocks) in config.num_decoder_blocks.iter().enumerate() {
            // The condition's blends: before each level's blocks and before the output conv.
            if blocks > 0 {
                layers.push(Layer::Blend(Blend));
            }
            for _ in 0..blocks {
                let idx = index(&layers);
                layers.push(Layer::Block(TinyBlock::load(&lw.pp(idx), c[i])?));
            }
            let last = i + 1 == n;
            if !last {
                layers.push(Layer::Upsample(Upsample));
            } else {
                layers.push(Layer::Blend(Blend));
            }
            let idx = index(&layers);
            layers.push(Layer::Conv(if last {
                Conv2d::load(&lw.pp(idx), c[i], config.out_channels, 3, 1, 1)?
            } else {
                Conv2d::load_no_bias(&lw.pp(idx), c[i], c[i], 3, 1, 1)?
            }));
        }
        let condition = match config.mask_condition {
            true => Some(ConditionEncoder::load(w, config.out_channels, c[0], n)?),
            false => None,
        };
        Ok(Self { layers, levels: n, scaling_factor: config.scaling_factor, condition })
    }

    /// Whether the decoder reads the product's pixels ([`TinyDecoder::decode_with`]).
    pub fn is_conditioned(&self) -> bool {
        self.condition.is_some()
    }

    /// Decodes scaled latents (divided by `scaling_factor` first, as the SD pipelines do).
    ///
    /// # Shapes
    /// - latents: `[batch, latent_channels, h, w]` → `[batch, 3, h·f, w·f]`, roughly in [-1, 1]
    pub fn decode(&self, latents: Tensor<4>) -> Tensor<4> {
        self.decode_with(latents, None)
    }

    /// [`TinyDecoder::decode`] that keeps `product` where the decoder has the branch for it
    /// (ignored otherwise; without it a conditioned decoder decodes from the latents alone).
    ///
    /// # Shapes
    /// - product: `[1, 3 | 1, h·f, w·f]`, the latents' image size
    pub fn decode_with(&self, latents: Tensor<4>, product: Option<&ProductPixels>) -> Tensor<4> {
        let features = self.condition.as_ref().zip(product).map(|(c, p)| c.features(p));
        // DecoderTiny clamps its input softly to (-3, 3) and maps its [0, 1] output to [-1, 1].
        let z = latents.div_scalar(self.scaling_factor).div_scalar(3.0).tanh().mul_scalar(3.0);
        run(&self.layers, z, features.as_ref()).mul_scalar(2.0).sub_scalar(1.0)
    }

    /// [`TinyDecoder::decode`] over overlapping `tile × tile`-latent tiles (see
    /// [`TinyEncoder::encode_tiled`]); latents no larger than one tile are decoded whole.
    pub fn decode_tiled(&self, latents: Tensor<4>, tile: usize) -> Tensor<4> {
        self.decode_tiled_with(latents, tile, None)
    }

    /// [`TinyDecoder::decode_with`] in tiles; each tile keeps its own part of `product`.
    pub fn decode_tiled_with(&self, latents: Tensor<4>, tile: usize, product: Option<&ProductPixels>) -> Tensor<4> {
        let f = 1 << (self.levels - 1);
        let tiles = Tiles { input: tile, output: tile * f };
        let [_, _, h, w] = latents.dims();
        if !tiles.needed_for(h, w) {
            return self.decode_with(latents, product);
        }
        tiled(latents, tiles, |t, [top, left]| {
            let [_, _, th, tw] = t.dims();
            let part = product.map(|p| p.crop(top * f, left * f, th * f, tw * f));
            self.decode_with(t, part.as_ref())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn config(decoder_width: usize) -> TinyVaeConfig {
        TinyVaeConfig {
            in_channels: 3,
            out_channels: 3,
            encoder_block_out_channels: vec![32; 4],
            decoder_block_out_channels: vec![decoder_width; 4],
            num_encoder_blocks: vec![0, 1, 1, 1],
            num_decoder_blocks: vec![2, 2, 2, 1],
            latent_channels: 8,
            act_fn: "relu".into(),
            upsample_fn: "nearest".into(),
            upsampling_scaling_factor: 2,
            scaling_factor: 1.0,
            mask_condition: false,
        }
    }

    /// The default model's 64-wide decoder fits WebGPU's default 128 MiB binding whole at 512²
    /// (64 MiB); at 1024² (256 MiB) it runs in 88-latent tiles (704 px: 64 × 704² × 4 B = 121 MiB).
    #[test]
    fn tiny_vae_tiles_only_when_its_full_size_level_outgrows_the_binding() {
        let c = config(64);
        assert_eq!(c.decoder_peak_bytes(64, 64), 64 * MIB);
        assert_eq!(c.encoder_peak_bytes(512, 512), 32 * MIB);
        assert_eq!(c.tile_within(64, 64, 128 * MIB), None);
        assert_eq!(c.tile_within(128, 128, 128 * MIB), Some(88));
        assert!(c.decoder_peak_bytes(88, 88) <= 128 * MIB && c.decoder_peak_bytes(92, 92) > 128 * MIB);
        assert_eq!(c.tile_within(128, 128, 1024 * MIB), None);
        assert_eq!(config(32).tile_within(128, 128, 128 * MIB), None, "32 wide: exactly 128 MiB at 1024²");
    }
}
