//! The text encoder: a BERT-family model (all-MiniLM-L6-v2 by default, 384-wide) or, for
//! Stable Diffusion packs, CLIP's text model ([`super::clip`]), in Hugging Face transformers'
//! structure (parameter names as their checkpoints spell them), with the real tokenizer from
//! the `tokenizers` crate reading the pack's `tokenizer.json`. Its last hidden states are the
//! UNet's cross-attention context.

use burn::module::Module;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::clip::{ClipTextConfig, ClipTextModel};
use crate::error::ModelError;
use crate::nn::{LayerNorm, Linear, TokenEmbedding, gelu};
use crate::pack::weights::{FloatParam, Init, Weights};

/// transformers' `BertConfig` fields the encoder reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    #[serde(default = "bert_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "gelu_name")]
    pub hidden_act: String,
}

/// burn's `Config` (JSON save and load) over the serde mapping of diffusers' `config.json`.
impl burn::config::Config for BertConfig {}

fn two() -> usize {
    2
}
fn bert_eps() -> f64 {
    1e-12
}
fn gelu_name() -> String {
    "gelu".into()
}

impl BertConfig {
    /// all-MiniLM-L6-v2 (`sentence-transformers/all-MiniLM-L6-v2/config.json`).
    pub fn minilm_l6() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 384,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
        }
    }
}

/// The text encoder's architecture as a pack manifest (and transformers' `config.json`,
/// by its `model_type`) names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model_type")]
pub enum TextEncoderConfig {
    /// BERT/MiniLM (our default model): prompts at their own length.
    #[serde(rename = "bert")]
    Bert(BertConfig),
    /// CLIP's text model (Stable Diffusion 1.x/2.x): prompts padded to 77 tokens.
    #[serde(rename = "clip_text_model")]
    Clip(ClipTextConfig),
}

/// burn's `Config` (JSON save and load) over the serde mapping of diffusers' `config.json`.
impl burn::config::Config for TextEncoderConfig {}

impl TextEncoderConfig {
    /// Width of the hidden states (must equal the UNet's `cross_attention_dim`).
    pub fn hidden_size(&self) -> usize {
        match self {
            TextEncoderConfig::Bert(c) => c.hidden_size,
            TextEncoderConfig::Clip(c) => c.hidden_size,
        }
    }
}

#[derive(Module, Debug)]
enum TextModel {
    Bert(BertModel),
    Clip(ClipTextModel),
}

/// Prompt → cross-attention context: the tokenizer and the encoder together.
#[derive(Module, Debug)]
pub struct TextEncoder {
    #[module(skip)]
    tokenizer: PromptTokenizer,
    model: TextModel,
}

impl TextEncoder {
    /// Loads the encoder's weights (safetensors bytes) and its `tokenizer.json`.
    pub fn load(config: &TextEncoderConfig, weights: &Weights, tokenizer_json: &[u8]) -> Result<Self, ModelError> {
        Ok(match config {
            TextEncoderConfig::Bert(bert) => Self {
                tokenizer: PromptTokenizer::from_bytes(tokenizer_json)?,
                model: TextModel::Bert(BertModel::load(weights, bert)?),
            },
            TextEncoderConfig::Clip(clip) => Self {
                tokenizer: PromptTokenizer::fixed_length(tokenizer_json, clip.max_position_embeddings)?,
                model: TextModel::Clip(ClipTextModel::load(weights, clip)?),
            },
        })
    }

    /// The context `[1, T, hidden]` for `prompt` (the empty prompt gives `[CLS] [SEP]` for
    /// BERT and start, end and padding for CLIP: the unconditional context of
    /// classifier-free guidance, as the SD pipelines make it).
    pub fn encode(&self, prompt: &str, device: &Device) -> Result<Tensor<3>, ModelError> {
        let ids = self.tokenizer.encode(prompt)?;
        match &self.model {
            TextModel::Bert(m) => m.forward(&ids, device),
            TextModel::Clip(m) => m.forward(&ids, device),
        }
    }
}

#[derive(Module, Debug)]
struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// `BertModel` without the pooler: token ids → last hidden states.
#[derive(Module, Debug)]
pub struct BertModel {
    #[module(skip)]
    config: BertConfig,
    word_embeddings: TokenEmbedding,
    position_embeddings: FloatParam<2>,
    token_type_embeddings: FloatParam<2>,
    embeddings_norm: LayerNorm,
    layers: Vec<BertLayer>,
}

impl BertModel {
    /// Loads `embeddings.*` and `encoder.layer.N.*` (no `bert.` prefix, as sentence-transformers saves).
    pub fn load(w: &Weights, config: &BertConfig) -> Result<Self, ModelError> {
        if config.hidden_act != "gelu" {
            return Err(ModelError::Unsupported(format!("text encoder activation {}", config.hidden_act)));
        }
        if !config.hidden_size.is_multiple_of(config.num_attention_heads) {
            return Err(ModelError::Unsupported("hidden_size must divide into num_attention_heads".into()));
        }
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let e = w.pp("embeddings");
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = w.pp("encoder").pp("layer").pp(i);
                let a = l.pp("attention");
                Ok(BertLayer {
                    query: Linear::load(&a.pp("self").pp("query"), h, h, true)?,
                    key: Linear::load(&a.pp("self").pp("key"), h, h, true)?,
                    value: Linear::load(&a.pp("self").pp("value"), h, h, true)?,
                    attention_output: Linear::load(&a.pp("output").pp("dense"), h, h, true)?,
                    attention_norm: LayerNorm::load(&a.pp("output").pp("LayerNorm"), h, eps)?,
                    intermediate: Linear::load(&l.pp("intermediate").pp("dense"), h, config.intermediate_size, true)?,
                    output: Linear::load(&l.pp("output").pp("dense"), config.intermediate_size, h, true)?,
                    output_norm: LayerNorm::load(&l.pp("output").pp("LayerNorm"), h, eps)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(Self {
            config: config.clone(),
            word_embeddings: TokenEmbedding::load(&e.pp("word_embeddings"), config.vocab_size, h)?,
            position_embeddings: e.pp("position_embeddings").float(
                "weight",
                [config.max_position_embeddings, h],
                Init::FanIn(1),
            )?,
            token_type_embeddings: e.pp("token_type_embeddings").float(
                "weight",
                [config.type_vocab_size, h],
                Init::FanIn(1),
            )?,
            embeddings_norm: LayerNorm::load(&e.pp("LayerNorm"), h, eps)?,
            layers,
        })
    }

    /// Encodes one token sequence (no padding, so no attention mask is needed).
    ///
    /// # Shapes
    /// - ids: `T` token ids, 1 ≤ T ≤ max_position_embeddings
    /// - output: `[1, T, hidden_size]`
    pub fn forward(&self, ids: &[u32], device: &Device) -> Result<Tensor<3>, ModelError> {
        let t = ids.len();
        if t == 0 || t > self.config.max_position_embeddings {
            return Err(ModelError::Unsupported(format!(
                "a prompt of {t} tokens (the text encoder takes 1 to {})",
                self.config.max_position_embeddings
            )));
        }
        let h = self.config.hidden_size;
        let words = self.word_embeddings.lookup(ids, device)?;
        let positions = self.position_embeddings.val().narrow(0, 0, t);
        let token_type = self.token_type_embeddings.val().narrow(0, 0, 1);
        let mut x: Tensor<3> = self.embeddings_norm.forward(words + positions + token_type).reshape([1, t, h]);
        let heads = self.config.num_attention_heads;
        let split = |x: Tensor<3>| x.reshape([1, t, heads, h / heads]).swap_dims(1, 2);
        for layer in &self.layers {
            let q = split(layer.query.forward(x.clone()));
            let k = split(layer.key.forward(x.clone()));
            let v = split(layer.value.forward(x.clone()));
            let context =
                attention(q, k, v, None, None, AttentionModuleOptions::default()).swap_dims(1, 2).reshape([1, t, h]);
            x = layer.attention_norm.forward(layer.attention_output.forward(context) + x);
            let inner = gelu(layer.intermediate.forward(x.clone()));
            x = layer.output_norm.forward(layer.output.forward(inner) + x);
        }
        Ok(x)
    }
}

/// Reads a `tokenizer.json`. Two things tokenizers 0.22 does not refuse but panics on (an abort
/// in the browser) are checked first, both found by `scripts/fuzz.sh tokenizer` (the files are
/// `tests/fuzz/tokenizer/crash-*`): malformed JSON inside a decoder, and a template that names a
/// special token it does not define (the panic comes at the first prompt).
fn parse(json: &[u8]) -> Result<tokenizers::Tokenizer, ModelError> {
    let corrupt = |reason: String| ModelError::Corrupt { file: "tokenizer.json".into(), reason };
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| corrupt(format!("not valid JSON: {e}")))?;
    if let Some(post) = value.get("post_processor") {
        undefined_special_token(post).map_or(Ok(()), |id| {
            Err(corrupt(format!("its template uses the special token {id:?}, which it does not define")))
        })?;
    }
    tokenizers::Tokenizer::from_bytes(json).map_err(|e| corrupt(e.to_string()))
}

/// The first special token a `TemplateProcessing` (here or in a `Sequence` of processors) uses in
/// its `single` or `pair` template without defining it under that key in `special_tokens`.
fn undefined_special_token(processor: &serde_json::Value) -> Option<String> {
    if let Some(list) = processor.get("processors").and_then(|p| p.as_array()) {
        return list.iter().find_map(undefined_special_token);
    }
    // A template by its shape, not its `type`: tokenizers' untagged parsing takes a template whose
    // type is misspelt ("TamplateProcessing", tests/fuzz/tokenizer/crash-fca4…).
    if processor.get("single").is_none() && processor.get("pair").is_none() {
        return None;
    }
    let defined = processor.get("special_tokens").and_then(|t| t.as_object());
    ["single", "pair"]
        .iter()
        .filter_map(|k| processor.get(*k).and_then(|t| t.as_array()))
        .flatten()
        .filter_map(|piece| piece.get("SpecialToken").and_then(|t| t.get("id")).and_then(|id| id.as_str()))
        .find(|id| !defined.is_some_and(|d| d.contains_key(*id)))
        .map(str::to_string)
}

/// The model's own tokenizer (`tokenizer.json`): WordPiece for BERT, byte-level BPE for CLIP.
#[derive(Clone)]
pub struct PromptTokenizer {
    inner: tokenizers::Tokenizer,
}

/// By its vocabulary's size (burn's module display prints it; the vocabulary itself is 30 000 words).
impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTokenizer").field("vocab_size", &self.inner.get_vocab_size(true)).finish()
    }
}

impl PromptTokenizer {
    /// Parses a `tokenizer.json` and drops the fixed padding it carries: prompts are encoded
    /// at their own length, truncated to 128 tokens (BERT/MiniLM).
    pub fn from_bytes(json: &[u8]) -> Result<Self, ModelError> {
        let mut inner = parse(json)?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(tokenizers::TruncationParams { max_length: 128, ..Default::default() }))
            .map_err(|e| ModelError::Corrupt { file: "tokenizer.json".into(), reason: e.to_string() })?;
        Ok(Self { inner })
    }

    /// Parses a `tokenizer.json` that pads and truncates every prompt to exactly `length`
    /// tokens (CLIP's 77, as [`super::clip::clip_tokenizer_json`] writes it); refuses one that
    /// does not, since the UNet was trained on padded contexts.
    pub fn fixed_length(json: &[u8], length: usize) -> Result<Self, ModelError> {
        let inner = parse(json)?;
        let padded = matches!(inner.get_padding().map(|p| &p.strategy), Some(tokenizers::PaddingStrategy::Fixed(n)) if *n == length);
        let truncated = inner.get_truncation().is_some_and(|t| t.max_length == length);
        if !padded || !truncated {
            return Err(ModelError::Corrupt {
                file: "tokenizer.json".into(),
                reason: format!(
                    "a CLIP tokenizer must pad and truncate to {length} tokens (convert the pack with adcanvas convert)"
                ),
            });
        }
        Ok(Self { inner })
    }

    /// Token ids with the special tokens (`[CLS] … [SEP]`, `<|startoftext|> … <|endoftext|>`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| ModelError::Unsupported(format!("the prompt could not be tokenised: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }
}
