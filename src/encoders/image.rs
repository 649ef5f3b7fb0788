//! The style-reference encoder: a CLIP vision transformer (transformers' `CLIPVisionModel`,
//! its parameter names and config) whose patch tokens PFV masks before MEPA attends to them
//! (docs/METHOD.md §5–6). IP-Adapter uses the same model family for its image prompts.

use burn::module::Module;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::clip::{ClipEncoderLayer, is_quick_gelu};
use crate::error::ModelError;
use crate::nn::LayerNorm;
use crate::pack::weights::{FloatParam, Init, Weights};

/// transformers' `CLIPVisionConfig` fields the encoder reads, plus which hidden state feeds
/// the image prompt and how pixels are normalised (a CLIP image processor's mean and std).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageEncoderConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "three")]
    pub num_channels: usize,
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "clip_eps")]
    pub layer_norm_eps: f64,
    /// Which hidden state the prompt takes, Python-style: -1 = the last layer's output (before
    /// `post_layernorm`), -2 = the one before it (IP-Adapter Plus / full-face checkpoints).
    #[serde(default = "last")]
    pub hidden_layer: i32,
    /// Per-channel normalisation of pixels in [0, 1]: `(x − mean) / std`.
    #[serde(default = "clip_mean")]
    pub image_mean: [f32; 3],
    #[serde(default = "clip_std")]
    pub image_std: [f32; 3],
}

/// burn's `Config` (JSON save and load) over the serde mapping of diffusers' `config.json`.
impl burn::config::Config for ImageEncoderConfig {}

fn three() -> usize {
    3
}
fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn clip_eps() -> f64 {
    1e-5
}
fn last() -> i32 {
    -1
}
fn clip_mean() -> [f32; 3] {
    [0.481_454_66, 0.457_827_5, 0.408_210_73]
}
fn clip_std() -> [f32; 3] {
    [0.268_629_54, 0.261_302_6, 0.275_777_1]
}

impl ImageEncoderConfig {
    /// Patch tokens per side (`image_size / patch_size`).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    fn layers_run(&self) -> Result<usize, ModelError> {
        let n = self.num_hidden_layers as i32 + 1 + self.hidden_layer;
        if self.hidden_layer >= 0 || n < 0 {
            return Err(ModelError::Unsupported(format!(
                "image encoder hidden_layer {} (use -1 … -{})",
                self.hidden_layer,
                self.num_hidden_layers + 1
            )));
        }
        Ok(n as usize)
    }
}

/// `CLIPVisionModel` up to the chosen hidden state: pixels → tokens (CLS first).
#[derive(Module, Debug)]
pub struct ImageEncoder {
    #[module(skip)]
    config: ImageEncoderConfig,
    quick_gelu: bool,
    patch_embedding: FloatParam<4>,
    class_embedding: FloatParam<1>,
    position_embedding: FloatParam<2>,
    pre_norm: LayerNorm,
    layers: Vec<ClipEncoderLayer>,
}

impl ImageEncoder {
    /// Loads `vision_model.*` (the keys of `CLIPVisionModel` and `CLIPVisionModelWithProjection`;
    /// `post_layernorm` and `visual_projection` are not used by image prompts and not read).
    pub fn load(w: &Weights, config: &ImageEncoderConfig) -> Result<Self, ModelError> {
        let quick_gelu = is_quick_gelu(&config.hidden_act, "image encoder")?;
        if !config.hidden_size.is_multiple_of(config.num_attention_heads)
            || config.patch_size == 0
            || !config.image_size.is_multiple_of(config.patch_size)
        {
            return Err(ModelError::Unsupported(
                "image encoder: hidden_size must divide into heads and image_size into patches".into(),
            ));
        }
        let run = config.layers_run()?;
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        // transformers 4 saves `vision_model.*`; transformers 5's CLIPVisionModel drops the prefix.
        let vm = if w.contains("vision_model.embeddings.class_embedding") { w.pp("vision_model") } else { w.clone() };
        let e = vm.pp("embeddings");
        let p = config.patch_size;
        let positions = config.grid() * config.grid() + 1;
        let layers = (0..run)
            .map(|i| ClipEncoderLayer::load(&vm.pp("encoder").pp("layers").pp(i), h, config.intermediate_size, eps))
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(Self {
            config: config.clone(),
            quick_gelu,
            patch_embedding: e.pp("patch_embedding").float(
                "weight",
                [h, config.num_channels, p, p],
                Init::FanIn(config.num_channels * p * p),
            )?,
            class_embedding: e.float("class_embedding", [h], Init::FanIn(1))?,
            position_embedding: e.pp("position_embedding").float("weight", [positions, h], Init::FanIn(1))?,
            pre_norm: LayerNorm::load(&vm.pp("pre_layrnorm"), h, eps)?,
            layers,
        })
    }

    pub fn config(&self) -> &ImageEncoderConfig {
        &self.config
    }

    /// Normalised pixels for an RGB image of `image_size²` (row-major RGB8, as the reference
    /// leaves PFV): `[1, 3, S, S]`.
    pub fn pixels(&self, rgb: &[u8], device: &Device) -> Tensor<4> {
        let s = self.config.image_size;
        assert_eq!(rgb.len(), s * s * 3, "image encoder input must be {s}×{s} RGB");
        let mut planar = vec![0f32; 3 * s * s];
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                planar[c * s * s + i] =
                    (f32::from(px[c]) / 255.0 - self.config.image_mean[c]) / self.config.image_std[c];
            }
        }
        Tensor::from_data(TensorData::new(planar, [1, 3, s, s]), device)
    }

    /// Tokens `[batch, 1 + grid², hidden]`, CLS first, patches row-major.
    pub fn forward(&self, pixels: Tensor<4>) -> Tensor<3> {
        let [b, _, _, _] = pixels.dims();
        let h = self.config.hidden_size;
        let p = self.config.patch_size;
        let patches = conv2d(pixels, self.patch_embedding.val(), None, ConvOptions::new([p, p], [0, 0], [1, 1], 1));
        let [_, _, gh, gw] = patches.dims();
        let patches = patches.reshape([b, h, gh * gw]).swap_dims(1, 2);
        let cls = self.class_embedding.val().reshape([1, 1, h]).expand([b, 1, h]);
        let n = gh * gw + 1;
        let mut x = Tensor::cat(vec![cls, patches], 1) + self.position_embedding.val().reshape([1, n, h]);
        x = self.pre_norm.forward(x);
        for layer in &self.layers {
            x = layer.forward(x, self.config.num_attention_heads, self.quick_gelu, false);
        }
        x
    }
}

/// Keeps the token rows whose `keep` flag is set (`[1, n, d]` → `[1, kept, d]`): PFV's drop mode
/// on the device, so the tokens never leave the GPU.
pub fn keep_tokens(tokens: Tensor<3>, keep: &[bool]) -> Tensor<3> {
    let [_, n, _] = tokens.dims();
    assert_eq!(n, keep.len(), "keep list must cover every token");
    let index: Vec<i64> = keep.iter().enumerate().filter(|(_, k)| **k).map(|(i, _)| i as i64).collect();
    let device = tokens.device();
    let len = index.len();
    tokens.select(1, Tensor::<1, Int>::from_data(TensorData::new(index, [len]), &device))
}
