//! The UNet's building blocks, shared with the ControlNet (which copies its down path and mid
//! block): diffusers' `Transformer2DModel` (self-attention, cross-attention through each layer's
//! processor, GEGLU feed-forward), the down, mid and up blocks, and the timestep embedding.

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

use super::config::UNetConfig;
use super::mepa::{Conditioning, CrossAttentionProcessor, MepaProcessor};
use crate::error::ModelError;
use crate::kernels;
use crate::nn::attention::{Attention, RegionPrompt};
use crate::nn::resnet::ResnetBlock2D;
use crate::nn::{Conv2d, GroupNorm, LayerNorm, Linear, gelu, silu, upsample_nearest_2x};
use crate::pack::weights::Weights;

/// diffusers' `FeedForward` with GEGLU (`ff.net.0.proj`, `ff.net.2`).
#[derive(Module, Debug)]
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn load(w: &Weights, dim: usize) -> Result<Self, ModelError> {
        let inner = dim * 4;
        Ok(Self {
            proj: Linear::load(&w.pp("net").pp(0).pp("proj"), dim, inner * 2, true)?,
            out: Linear::load(&w.pp("net").pp(2), inner, dim, true)?,
        })
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let projected = self.proj.forward(x);
        let activated = kernels::geglu(projected).unwrap_or_else(|projected| {
            let c2 = projected.dims()[2];
            let hidden = projected.clone().narrow(2, 0, c2 / 2);
            let gate = projected.narrow(2, c2 / 2, c2 / 2);
            hidden * gelu(gate)
        });
        self.out.forward(activated)
    }
}

/// diffusers' `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward.
#[derive(Module, Debug)]
struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention<CrossAttentionProcessor>,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn load(w: &Weights, dim: usize, heads: usize, context_dim: usize) -> Result<Self, ModelError> {
        let head_dim = dim / heads;
        Ok(Self {
            norm1: LayerNorm::load(&w.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::load(&w.pp("attn1"), dim, dim, heads, head_dim, false)?,
            norm2: LayerNorm::load(&w.pp("norm2"), dim, 1e-5)?,
            attn2: Attention::load(&w.pp("attn2"), dim, context_dim, heads, head_dim, false)?
                .with_processor(MepaProcessor::for_layer(&w.pp("attn2"), context_dim, heads * head_dim)?),
            norm3: LayerNorm::load(&w.pp("norm3"), dim, 1e-5)?,
            ff: FeedForward::load(&w.pp("ff"), dim)?,
        })
    }

    fn forward(&self, x: Tensor<3>, prompts: &[RegionPrompt]) -> Tensor<3> {
        let x = self.attn1.forward(self.norm1.forward(x.clone()), None) + x;
        let x = self.attn2.forward_prompts(self.norm2.forward(x.clone()), prompts) + x;
        self.ff.forward(self.norm3.forward(x.clone())) + x
    }
}

/// Either projection diffusers uses around the transformer blocks.
#[derive(Module, Debug)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// diffusers' `Transformer2DModel` (one transformer layer, continuous input).
#[derive(Module, Debug)]
pub(crate) struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2DModel {
    fn load(
        w: &Weights,
        channels: usize,
        heads: usize,
        context_dim: usize,
        groups: usize,
        linear: bool,
    ) -> Result<Self, ModelError> {
        let proj = |name: &str| -> Result<Projection, ModelError> {
            Ok(if linear {
                Projection::Linear(Linear::load(&w.pp(name), channels, channels, true)?)
            } else {
                Projection::Conv(Conv2d::load(&w.pp(name), channels, channels, 1, 1, 0)?)
            })
        };
        Ok(Self {
            norm: GroupNorm::load(&w.pp("norm"), groups, channels, 1e-6)?,
            proj_in: proj("proj_in")?,
            transformer_blocks: vec![BasicTransformerBlock::load(
                &w.pp("transformer_blocks").pp(0),
                channels,
                heads,
                context_dim,
            )?],
            proj_out: proj("proj_out")?,
        })
    }

    fn takes_image_prompt(&self) -> bool {
        self.transformer_blocks.iter().all(|block| block.attn2.takes_image_prompt())
    }

    /// # Shapes
    /// - x: `[batch, c, h, w]`, prompt tokens `[batch, tokens, context_dim]` → `[batch, c, h, w]`
    fn forward(&self, x: Tensor<4>, cond: &Conditioning) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let prompts = cond.at_resolution(h, w);
        let residual = x.clone();
        let x = self.norm.forward(x);
        let to_tokens = |x: Tensor<4>| x.reshape([b, c, h * w]).swap_dims(1, 2);
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(x)),
            Projection::Linear(lin) => lin.forward(to_tokens(x)),
        };
        for block in &self.transformer_blocks {
            tokens = block.forward(tokens, &prompts);
        }
        let to_map = |t: Tensor<3>| t.swap_dims(1, 2).reshape([b, c, h, w]);
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(to_map(tokens)),
            Projection::Linear(lin) => to_map(lin.forward(tokens)),
        };
        out + residual
    }
}

/// A resnet as the UNet's config builds them: with the time embedding, the config's norms.
fn unet_resnet(w: &Weights, config: &UNetConfig, c_in: usize, c_out: usize) -> Result<ResnetBlock2D, ModelError> {
    ResnetBlock2D::load(w, c_in, c_out, Some(config.temb_channels()), config.norm_num_groups, config.norm_eps)
}

/// A transformer as the UNet's config builds them, `heads` wide at `channels`.
fn unet_transformer(
    w: &Weights,
    config: &UNetConfig,
    channels: usize,
    heads: usize,
) -> Result<Transformer2DModel, ModelError> {
    let (context, groups, linear) = (config.cross_attention_dim, config.norm_num_groups, config.use_linear_projection);
    Transformer2DModel::load(w, channels, heads, context, groups, linear)
}

/// One resolution level going down: resnets (each optionally followed by attention),
/// then a stride-2 conv unless it is the last level. The ControlNet reuses it as is.
#[derive(Module, Debug)]
pub(crate) struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Conv2d>,
}

impl DownBlock {
    /// Level `i` of `config`'s down path, reading `down_blocks.{i}` under `w`.
    pub(crate) fn load(w: &Weights, config: &UNetConfig, i: usize) -> Result<Self, ModelError> {
        let c = &config.block_out_channels;
        let (in_ch, out_ch) = (if i == 0 { c[0] } else { c[i - 1] }, c[i]);
        let bw = w.pp("down_blocks").pp(i);
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for j in 0..config.layers_per_block {
            let r_in = if j == 0 { in_ch } else { out_ch };
            resnets.push(unet_resnet(&bw.pp("resnets").pp(j), config, r_in, out_ch)?);
            if config.down_block_types[i].has_attention() {
                attentions.push(unet_transformer(&bw.pp("attentions").pp(j), config, out_ch, config.heads(i))?);
            }
        }
        let downsampler = if i + 1 < c.len() {
            Some(Conv2d::load(&bw.pp("downsamplers").pp(0).pp("conv"), out_ch, out_ch, 3, 2, 1)?)
        } else {
            None
        };
        Ok(Self { resnets, attentions, downsampler })
    }

    /// Runs the level and pushes every output the up path takes as a skip.
    pub(crate) fn forward(
        &self,
        mut h: Tensor<4>,
        temb: &Tensor<2>,
        cond: &Conditioning,
        skips: &mut Vec<Tensor<4>>,
    ) -> Tensor<4> {
        for (j, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(h, Some(temb));
            if let Some(attn) = self.attentions.get(j) {
                h = attn.forward(h, cond);
            }
            skips.push(h.clone());
        }
        if let Some(down) = &self.downsampler {
            h = down.forward(h);
            skips.push(h.clone());
        }
        h
    }

    pub(crate) fn takes_image_prompt(&self) -> bool {
        self.attentions.iter().all(Transformer2DModel::takes_image_prompt)
    }
}

/// One resolution level going up: resnets over concatenated skips (each optionally
/// followed by attention), then nearest 2× + conv unless it is the last level.
#[derive(Module, Debug)]
pub(crate) struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Conv2d>,
}

impl UpBlock {
    /// Level `i` of `config`'s up path (level 0 is the lowest resolution), reading `up_blocks.{i}`.
    pub(crate) fn load(w: &Weights, config: &UNetConfig, i: usize) -> Result<Self, ModelError> {
        let n = config.block_out_channels.len();
        let reversed: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
        let (out_ch, in_ch) = (reversed[i], reversed[(i + 1).min(n - 1)]);
        // The block below this one (or the mid block) hands over its own width.
        let prev_out = reversed[i.saturating_sub(1)];
        let bw = w.pp("up_blocks").pp(i);
        let layers = config.layers_per_block + 1;
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for j in 0..layers {
            let skip = if j == layers - 1 { in_ch } else { out_ch };
            let r_in = if j == 0 { prev_out } else { out_ch };
            resnets.push(unet_resnet(&bw.pp("resnets").pp(j), config, r_in + skip, out_ch)?);
            if config.up_block_types[i].has_attention() {
                attentions.push(unet_transformer(&bw.pp("attentions").pp(j), config, out_ch, config.heads(n - 1 - i))?);
            }
        }
        let upsampler = if i + 1 < n {
            Some(Conv2d::load(&bw.pp("upsamplers").pp(0).pp("conv"), out_ch, out_ch, 3, 1, 1)?)
        } else {
            None
        };
        Ok(Self { resnets, attentions, upsampler })
    }

    pub(crate) fn takes_image_prompt(&self) -> bool {
        self.attentions.iter().all(Transformer2DModel::takes_image_prompt)
    }

    /// Consumes this level's skip connections from the end of `skips`.
    pub(crate) fn forward(
        &self,
        mut h: Tensor<4>,
        temb: &Tensor<2>,
        cond: &Conditioning,
        skips: &mut Vec<Tensor<4>>,
    ) -> Tensor<4> {
        for (j, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().expect("one skip per up-block resnet by construction");
            h = resnet.forward(Tensor::cat(vec![h, skip], 1), Some(temb));
            if let Some(attn) = self.attentions.get(j) {
                h = attn.forward(h, cond);
            }
        }
        match &self.upsampler {
            Some(up) => up.forward(upsample_nearest_2x(h)),
            None => h,
        }
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, attention, resnet at the lowest resolution.
#[derive(Module, Debug)]
pub(crate) struct MidBlock {
    resnets: [ResnetBlock2D; 2],
    attention: Transformer2DModel,
}

impl MidBlock {
    pub(crate) fn load(w: &Weights, config: &UNetConfig) -> Result<Self, ModelError> {
        let mw = w.pp("mid_block");
        let n = config.block_out_channels.len();
        let top = config.block_out_channels[n - 1];
        Ok(Self {
            resnets: [
                unet_resnet(&mw.pp("resnets").pp(0), config, top, top)?,
                unet_resnet(&mw.pp("resnets").pp(1), config, top, top)?,
            ],
            attention: unet_transformer(&mw.pp("attentions").pp(0), config, top, config.heads(n - 1))?,
        })
    }

    pub(crate) fn takes_image_prompt(&self) -> bool {
        self.attention.takes_image_prompt()
    }

    pub(crate) fn forward(&self, h: Tensor<4>, temb: &Tensor<2>, cond: &Conditioning) -> Tensor<4> {
        let h = self.resnets[0].forward(h, Some(temb));
        let h = self.attention.forward(h, cond);
        self.resnets[1].forward(h, Some(temb))
    }
}

/// diffusers' `TimestepEmbedding` over the sinusoidal `Timesteps` projection.
#[derive(Module, Debug)]
pub(crate) struct TimeEmbedding {
    linear_1: Linear,
    linear_2: Linear,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: usize,
}

impl TimeEmbedding {
    pub(crate) fn load(w: &Weights, config: &UNetConfig) -> Result<Self, ModelError> {
        let c0 = config.block_out_channels[0];
        let te = w.pp("time_embedding");
        Ok(Self {
            linear_1: Linear::load(&te.pp("linear_1"), c0, config.temb_channels(), true)?,
            linear_2: Linear::load(&te.pp("linear_2"), config.temb_channels(), config.temb_channels(), true)?,
            dim: c0,
            flip_sin_to_cos: config.flip_sin_to_cos,
            freq_shift: config.freq_shift,
        })
    }

    /// `[batch, temb_channels]` for one timestep repeated over the batch.
    pub(crate) fn forward(&self, timestep: f32, batch: usize, device: &Device) -> Tensor<2> {
        let t = timestep_embedding(timestep, self.dim, self.flip_sin_to_cos, self.freq_shift, batch, device);
        self.linear_2.forward(silu(self.linear_1.forward(t)))
    }
}

/// diffusers' `get_timestep_embedding` for one timestep repeated over the batch,
/// computed on the CPU in f32 (as diffusers does) and uploaded.
pub(crate) fn timestep_embedding(
    timestep: f32,
    dim: usize,
    flip_sin_to_cos: bool,
    shift: usize,
    batch: usize,
    device: &Device,
) -> Tensor<2> {
    let half = dim / 2;
    let mut row = vec![0f32; dim];
    for i in 0..half {
        let exponent = -(10000f32.ln()) * i as f32 / (half as f32 - shift as f32);
        let arg = timestep * exponent.exp();
        let (first, second) = if flip_sin_to_cos { (arg.cos(), arg.sin()) } else { (arg.sin(), arg.cos()) };
        row[i] = first;
        row[half + i] = second;
    }
    let data: Vec<f32> = (0..batch).flat_map(|_| row.iter().copied()).collect();
    Tensor::from_data(TensorData::new(data, [batch, dim]), device)
}
