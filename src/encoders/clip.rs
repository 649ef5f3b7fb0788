//! CLIP, as Stable Diffusion uses it: the text transformer that turns a prompt into the
//! UNet's context (transformers' `CLIPTextModel`, its parameter names and config) and the
//! byte-level BPE tokenizer it reads, built from a diffusers `tokenizer/` folder
//! (`vocab.json`, `merges.txt`) into the `tokenizer.json` the `tokenizers` crate runs.
//! The encoder layer is shared with the style-reference encoder (`image.rs`).

use burn::module::Module;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ModelError;
use crate::nn::{LayerNorm, Linear, TokenEmbedding, gelu};
use crate::pack::weights::{FloatParam, Init, Weights};

/// One pre-norm transformer layer: `x + attn(ln1 x)`, then `x + mlp(ln2 x)`.
#[derive(Module, Debug)]
pub(crate) struct ClipEncoderLayer {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl ClipEncoderLayer {
    /// Loads `layer_norm1`, `self_attn.{q,k,v,out}_proj`, `layer_norm2`, `mlp.fc{1,2}` under `l`.
    pub(crate) fn load(l: &Weights, hidden: usize, intermediate: usize, eps: f64) -> Result<Self, ModelError> {
        let a = l.pp("self_attn");
        Ok(Self {
            norm1: LayerNorm::load(&l.pp("layer_norm1"), hidden, eps)?,
            q: Linear::load(&a.pp("q_proj"), hidden, hidden, true)?,
            k: Linear::load(&a.pp("k_proj"), hidden, hidden, true)?,
            v: Linear::load(&a.pp("v_proj"), hidden, hidden, true)?,
            out: Linear::load(&a.pp("out_proj"), hidden, hidden, true)?,
            norm2: LayerNorm::load(&l.pp("layer_norm2"), hidden, eps)?,
            fc1: Linear::load(&l.pp("mlp").pp("fc1"), hidden, intermediate, true)?,
            fc2: Linear::load(&l.pp("mlp").pp("fc2"), intermediate, hidden, true)?,
        })
    }

    /// `causal`: each token attends only to itself and earlier ones (the text model).
    ///
    /// # Shapes
    /// - x: `[batch, tokens, hidden]` → same
    pub(crate) fn forward(&self, x: Tensor<3>, heads: usize, quick_gelu: bool, causal: bool) -> Tensor<3> {
        let [b, n, h] = x.dims();
        let split = |t: Tensor<3>| t.reshape([b, n, heads, h / heads]).swap_dims(1, 2);
        let y = self.norm1.forward(x.clone());
        let (q, k, v) = (split(self.q.forward(y.clone())), split(self.k.forward(y.clone())), split(self.v.forward(y)));
        let options = AttentionModuleOptions { is_causal: causal, ..Default::default() };
        let a = attention(q, k, v, None, None, options).swap_dims(1, 2).reshape([b, n, h]);
        let x = x + self.out.forward(a);
        let y = self.fc1.forward(self.norm2.forward(x.clone()));
        let y = if quick_gelu { quick_gelu_act(y) } else { gelu(y) };
        x + self.fc2.forward(y)
    }
}

/// CLIP's `x · σ(1.702 x)`.
fn quick_gelu_act(x: Tensor<3>) -> Tensor<3> {
    x.clone() * burn::tensor::activation::sigmoid(x.mul_scalar(1.702))
}

/// Whether CLIP's config names an activation we run; `true` for quick GELU.
pub(crate) fn is_quick_gelu(hidden_act: &str, model: &str) -> Result<bool, ModelError> {
    match hidden_act {
        "quick_gelu" => Ok(true),
        "gelu" => Ok(false),
        other => Err(ModelError::Unsupported(format!("{model} activation {other}"))),
    }
}

/// transformers' `CLIPTextConfig` fields the text model reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "seventy_seven")]
    pub max_position_embeddings: usize,
    #[serde(default = "quick_gelu_name")]
    pub hidden_act: String,
    #[serde(default = "clip_eps")]
    pub layer_norm_eps: f64,
}

/// burn's `Config` (JSON save and load) over the serde mapping of diffusers' `config.json`.
impl burn::config::Config for ClipTextConfig {}

fn seventy_seven() -> usize {
    77
}
fn quick_gelu_name() -> String {
    "quick_gelu".into()
}
fn clip_eps() -> f64 {
    1e-5
}

/// `CLIPTextModel`: token ids → `last_hidden_state` (after `final_layer_norm`), the context
/// SD 1.x and 2.x feed their UNets.
#[derive(Module, Debug)]
pub struct ClipTextModel {
    #[module(skip)]
    config: ClipTextConfig,
    quick_gelu: bool,
    token_embedding: TokenEmbedding,
    position_embedding: FloatParam<2>,
    layers: Vec<ClipEncoderLayer>,
    final_norm: LayerNorm,
}

impl ClipTextModel {
    /// Loads `text_model.*` (also without the prefix, as transformers 5 saves `CLIPTextModel`).
    pub fn load(w: &Weights, config: &ClipTextConfig) -> Result<Self, ModelError> {
        let quick_gelu = is_quick_gelu(&config.hidden_act, "text encoder")?;
        if !config.hidden_size.is_multiple_of(config.num_attention_heads) {
            return Err(ModelError::Unsupported(
                "text encoder: hidden_size must divide into num_attention_heads".into(),
            ));
        }
        let tm = if w.contains("text_model.final_layer_norm.weight") { w.pp("text_model") } else { w.clone() };
        let (h, eps) = (config.hidden_size, config.layer_norm_eps);
        let e = tm.pp("embeddings");
        let layers = (0..config.num_hidden_layers)
            .map(|i| ClipEncoderLayer::load(&tm.pp("encoder").pp("layers").pp(i), h, config.intermediate_size, eps))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            config: config.clone(),
            quick_gelu,
            token_embedding: TokenEmbedding::load(&e.pp("token_embedding"), config.vocab_size, h)?,
            position_embedding: e.pp("position_embedding").float(
                "weight",
                [config.max_position_embeddings, h],
                Init::FanIn(1),
            )?,
            layers,
            final_norm: LayerNorm::load(&tm.pp("final_layer_norm"), h, eps)?,
        })
    }

    /// Encodes one token sequence (SD pads prompts to 77 tokens, so no attention mask is
    /// used: the causal mask already keeps padding out of the real tokens' states).
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
        let tokens = self.token_embedding.lookup(ids, device)?;
        let mut x: Tensor<3> = (tokens + self.position_embedding.val().narrow(0, 0, t)).reshape([1, t, h]);
        for layer in &self.layers {
            x = layer.forward(x, self.config.num_attention_heads, self.quick_gelu, true);
        }
        Ok(self.final_norm.forward(x))
    }
}

/// A diffusers `tokenizer/` folder's CLIP files as one `tokenizer.json`, equal in behaviour to
/// transformers' `CLIPTokenizer`: NFC, whitespace runs → one space, lower case; CLIP's split
/// pattern, then byte-level mapping; BPE with `</w>` word ends; `<|startoftext|> … <|endoftext|>`;
/// padded with `pad_token` and truncated to `max_length` (77), as the SD pipelines call it.
pub fn clip_tokenizer_json(
    vocab_json: &[u8],
    merges_txt: &str,
    pad_token: &str,
    max_length: usize,
) -> Result<Vec<u8>, String> {
    let vocab: serde_json::Map<String, Value> =
        serde_json::from_slice(vocab_json).map_err(|e| format!("vocab.json is not a JSON object of token ids: {e}"))?;
    let id = |token: &str| -> Result<u64, String> {
        vocab.get(token).and_then(Value::as_u64).ok_or_else(|| format!("vocab.json has no id for {token:?}"))
    };
    let (bos, eos, pad) = (id("<|startoftext|>")?, id("<|endoftext|>")?, id(pad_token)?);
    let merges: Vec<&str> = merges_txt.lines().filter(|l| !l.starts_with("#version") && !l.trim().is_empty()).collect();
    if let Some(bad) = merges.iter().find(|m| m.split(' ').count() != 2) {
        return Err(format!("merges.txt line {bad:?} is not two tokens"));
    }
    let special = |content: &str, id: u64| json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
    // transformers makes the pad token a special token, so with SD 2.x's "!" a "!!" in a prompt
    // becomes two pad-token ids rather than the BPE merge "!!"; follow it.
    let mut added = vec![special("<|startoftext|>", bos), special("<|endoftext|>", eos)];
    if pad != bos && pad != eos {
        added.push(special(pad_token, pad));
    }
    let tokenizer = json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": max_length, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": max_length}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": pad, "pad_type_id": 0, "pad_token": pad_token},
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"},
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
             "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        ]},
        "post_processor": {"type": "RobertaProcessing", "sep": ["<|endoftext|>", eos], "cls": ["<|startoftext|>", bos],
                           "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<|endoftext|>", "continuing_subword_prefix": "",
                  "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    });
    let bytes = serde_json::to_vec(&tokenizer).expect("tokenizer JSON serialises");
    tokenizers::Tokenizer::from_bytes(&bytes)
        .map_err(|e| format!("the CLIP tokenizer built from vocab.json and merges.txt does not load: {e}"))?;
    Ok(bytes)
}
