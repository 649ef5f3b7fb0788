//! `UNet2DConditionModel` in diffusers' structure (`models/unets/unet_2d_condition.py`).
//!
//! The config struct keeps diffusers' `config.json` field names and the module tree keeps
//! its parameter names, so a diffusers checkpoint converted to a pack loads by name.
//! Supported now: SD 1.x/2.x style blocks (`CrossAttnDownBlock2D`, `DownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `UpBlock2D`, `CrossAttnUpBlock2D`), 4- or 9-channel input
//! (inpainting), conv or linear projections, per-block head counts.

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::attention::Attention;
use super::mepa::{Conditioning, MepaPrompts};
use crate::nn::{Conv2d, GroupNorm, LayerNorm, Linear, gelu, silu, upsample_nearest_2x};
use crate::weights::{ModelError, Weights};

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

/// diffusers' `UNet2DConditionModel` config (field names as in its `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "default_sample_size")]
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    #[serde(default = "default_mid_block")]
    pub mid_block_type: String,
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

fn default_sample_size() -> usize {
    64
}
fn default_mid_block() -> String {
    "UNetMidBlock2DCrossAttn".into()
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
                "CrossAttnDownBlock2D".into(),
                "CrossAttnDownBlock2D".into(),
                "CrossAttnDownBlock2D".into(),
                "DownBlock2D".into(),
            ],
            up_block_types: vec![
                "UpBlock2D".into(),
                "CrossAttnUpBlock2D".into(),
                "CrossAttnUpBlock2D".into(),
                "CrossAttnUpBlock2D".into(),
            ],
            mid_block_type: default_mid_block(),
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
            down_block_types: vec!["CrossAttnDownBlock2D".into(), "DownBlock2D".into()],
            up_block_types: vec!["UpBlock2D".into(), "CrossAttnUpBlock2D".into()],
            mid_block_type: default_mid_block(),
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
        for t in &self.down_block_types {
            if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
                return Err(ModelError::Unsupported(format!("UNet down block type {t}")));
            }
        }
        for t in &self.up_block_types {
            if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
                return Err(ModelError::Unsupported(format!("UNet up block type {t}")));
            }
        }
        if self.mid_block_type != "UNetMidBlock2DCrossAttn" {
            return Err(ModelError::Unsupported(format!("UNet mid block type {}", self.mid_block_type)));
        }
        if let PerBlock::Each(v) = self.num_attention_heads.as_ref().unwrap_or(&self.attention_head_dim)
            && v.len() != n
        {
            return Err(ModelError::Unsupported("attention_head_dim must have one entry per block".into()));
        }
        Ok(())
    }

    /// Latent pixels per image pixel along one side is fixed by the VAE, not the UNet;
    /// the UNet only needs latent sides divisible by this.
    pub fn latent_multiple(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// diffusers' `ResnetBlock2D` with a time embedding (`resnet_time_scale_shift="default"`).
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    /// `temb_channels` is `None` in the VAE, whose resnets have no time input.
    pub fn load(
        w: &Weights,
        c_in: usize,
        c_out: usize,
        temb_channels: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            norm1: GroupNorm::load(&w.pp("norm1"), groups, c_in, eps)?,
            conv1: Conv2d::load(&w.pp("conv1"), c_in, c_out, 3, 1, 1)?,
            time_emb_proj: temb_channels.map(|t| Linear::load(&w.pp("time_emb_proj"), t, c_out, true)).transpose()?,
            norm2: GroupNorm::load(&w.pp("norm2"), groups, c_out, eps)?,
            conv2: Conv2d::load(&w.pp("conv2"), c_out, c_out, 3, 1, 1)?,
            conv_shortcut: if c_in != c_out {
                Some(Conv2d::load(&w.pp("conv_shortcut"), c_in, c_out, 1, 1, 0)?)
            } else {
                None
            },
        })
    }

    /// # Shapes
    /// - x: `[batch, c_in, h, w]`, temb: `[batch, temb_channels]` → `[batch, c_out, h, w]`
    pub fn forward(&self, x: Tensor<4>, temb: Option<&Tensor<2>>) -> Tensor<4> {
        let mut h = self.conv1.forward(silu(self.norm1.forward(x.clone())));
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t: Tensor<2> = proj.forward(silu(temb.clone()));
            let [b, c] = t.dims();
            h = h + t.reshape([b, c, 1, 1]);
        }
        let h = self.conv2.forward(silu(self.norm2.forward(h)));
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        shortcut + h
    }
}

/// diffusers' `FeedForward` with GEGLU (`ff.net.0.proj`, `ff.net.2`).
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
        let [b, n, c2] = projected.dims();
        let hidden = projected.clone().narrow(2, 0, c2 / 2);
        let gate = projected.narrow(2, c2 / 2, c2 / 2);
        let _ = (b, n);
        self.out.forward(hidden * gelu(gate))
    }
}

/// diffusers' `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward.
struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
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
            attn2: Attention::load(&w.pp("attn2"), dim, context_dim, heads, head_dim, false)?,
            norm3: LayerNorm::load(&w.pp("norm3"), dim, 1e-5)?,
            ff: FeedForward::load(&w.pp("ff"), dim)?,
        })
    }

    fn forward(&self, x: Tensor<3>, prompts: &MepaPrompts) -> Tensor<3> {
        let x = self.attn1.forward(self.norm1.forward(x.clone()), None) + x;
        let x = self.attn2.forward_mepa(self.norm2.forward(x.clone()), prompts) + x;
        self.ff.forward(self.norm3.forward(x.clone())) + x
    }
}

/// Either projection diffusers uses around the transformer blocks.
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// diffusers' `Transformer2DModel` (one transformer layer, continuous input).
pub struct Transformer2DModel {
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

/// One resolution level going down: resnets (each optionally followed by attention),
/// then a stride-2 conv unless it is the last level. The ControlNet reuses it as is.
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
            resnets.push(ResnetBlock2D::load(
                &bw.pp("resnets").pp(j),
                r_in,
                out_ch,
                Some(config.temb_channels()),
                config.norm_num_groups,
                config.norm_eps,
            )?);
            if config.down_block_types[i] == "CrossAttnDownBlock2D" {
                attentions.push(Transformer2DModel::load(
                    &bw.pp("attentions").pp(j),
                    out_ch,
                    config.heads(i),
                    config.cross_attention_dim,
                    config.norm_num_groups,
                    config.use_linear_projection,
                )?);
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

    fn attentions(&self) -> &[Transformer2DModel] {
        &self.attentions
    }
}

/// One resolution level going up: resnets over concatenated skips (each optionally
/// followed by attention), then nearest 2× + conv unless it is the last level.
struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Conv2d>,
}

/// `UNetMidBlock2DCrossAttn`: resnet, attention, resnet at the lowest resolution.
pub(crate) struct MidBlock {
    resnets: [ResnetBlock2D; 2],
    attention: Transformer2DModel,
}

impl MidBlock {
    pub(crate) fn load(w: &Weights, config: &UNetConfig) -> Result<Self, ModelError> {
        let mw = w.pp("mid_block");
        let n = config.block_out_channels.len();
        let top = config.block_out_channels[n - 1];
        let (temb, groups, eps) = (config.temb_channels(), config.norm_num_groups, config.norm_eps);
        Ok(Self {
            resnets: [
                ResnetBlock2D::load(&mw.pp("resnets").pp(0), top, top, Some(temb), groups, eps)?,
                ResnetBlock2D::load(&mw.pp("resnets").pp(1), top, top, Some(temb), groups, eps)?,
            ],
            attention: Transformer2DModel::load(
                &mw.pp("attentions").pp(0),
                top,
                config.heads(n - 1),
                config.cross_attention_dim,
                groups,
                config.use_linear_projection,
            )?,
        })
    }

    pub(crate) fn forward(&self, h: Tensor<4>, temb: &Tensor<2>, cond: &Conditioning) -> Tensor<4> {
        let h = self.resnets[0].forward(h, Some(temb));
        let h = self.attention.forward(h, cond);
        self.resnets[1].forward(h, Some(temb))
    }
}

/// diffusers' `TimestepEmbedding` over the sinusoidal `Timesteps` projection.
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
        let groups = config.norm_num_groups;
        let eps = config.norm_eps;
        let temb = config.temb_channels();
        let ctx = config.cross_attention_dim;
        let linear = config.use_linear_projection;
        let n = c.len();
        let down_blocks = (0..n).map(|i| DownBlock::load(w, config, i)).collect::<Result<Vec<_>, _>>()?;
        let mid_block = MidBlock::load(w, config)?;

        let reversed: Vec<usize> = c.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut prev_out = reversed[0];
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let out_ch = reversed[i];
            let in_ch = reversed[(i + 1).min(n - 1)];
            let bw = w.pp("up_blocks").pp(i);
            let heads = config.heads(n - 1 - i);
            let layers = config.layers_per_block + 1;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers {
                let skip = if j == layers - 1 { in_ch } else { out_ch };
                let r_in = if j == 0 { prev_out } else { out_ch };
                resnets.push(ResnetBlock2D::load(
                    &bw.pp("resnets").pp(j),
                    r_in + skip,
                    out_ch,
                    Some(temb),
                    groups,
                    eps,
                )?);
                if kind == "CrossAttnUpBlock2D" {
                    attentions.push(Transformer2DModel::load(
                        &bw.pp("attentions").pp(j),
                        out_ch,
                        heads,
                        ctx,
                        groups,
                        linear,
                    )?);
                }
            }
            let upsampler = if i + 1 < n {
                Some(Conv2d::load(&bw.pp("upsamplers").pp(0).pp("conv"), out_ch, out_ch, 3, 1, 1)?)
            } else {
                None
            };
            up_blocks.push(UpBlock { resnets, attentions, upsampler });
            prev_out = out_ch;
        }

        Ok(Self {
            config: config.clone(),
            conv_in: Conv2d::load(&w.pp("conv_in"), config.in_channels, c[0], 3, 1, 1)?,
            time_embedding: TimeEmbedding::load(w, config)?,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::load(&w.pp("conv_norm_out"), groups, c[0], eps)?,
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

    /// Whether every cross-attention carries MEPA's image-prompt projections.
    pub fn takes_image_prompt(&self) -> bool {
        let down = self.down_blocks.iter().flat_map(|b| b.attentions());
        let up = self.up_blocks.iter().flat_map(|b| &b.attentions);
        down.chain(std::iter::once(&self.mid_block.attention))
            .chain(up)
            .flat_map(|t| &t.transformer_blocks)
            .all(|block| block.attn2.has_image_prompt())
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
            for (j, resnet) in block.resnets.iter().enumerate() {
                let skip = skips.pop().expect("one skip per up-block resnet by construction");
                h = resnet.forward(Tensor::cat(vec![h, skip], 1), Some(&temb));
                if let Some(attn) = block.attentions.get(j) {
                    h = attn.forward(h, context);
                }
            }
            if let Some(up) = &block.upsampler {
                h = up.forward(upsample_nearest_2x(h));
            }
        }

        self.conv_out.forward(silu(self.conv_norm_out.forward(h)))
    }
}

/// diffusers' `get_timestep_embedding` for one timestep repeated over the batch,
/// computed on the CPU in f32 (as diffusers does) and uploaded.
pub fn timestep_embedding(
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
