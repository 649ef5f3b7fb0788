//! `adcanvas convert`: a diffusers pipeline folder → an adcanvas model pack.
//!
//! diffusers already stores weights under the parameter names our modules use, so the
//! conversion is: read each component's `config.json` and safetensors (single file or
//! shards), refuse what the runtime cannot run with a reason, cast to the pack dtype,
//! and write the files with a manifest (configs, sizes, sha256). The pack is then loaded
//! once on the CPU to prove every tensor the architecture needs is present and shaped.
//!
//! Accepted layouts (see docs/PACKS.md): SD 1.5 inpainting and SD 2.x inpainting folders
//! (`model_index.json`, `unet/`, `vae/`, `scheduler/`, and a BERT/MiniLM `text_encoder/` with
//! `tokenizer/tokenizer.json`, or SD's CLIP text encoder with `tokenizer/vocab.json` and
//! `merges.txt`, from which a `tokenizer.json` is built), with an
//! optional `controlnet/` (diffusers `ControlNetModel`, e.g. a depth ControlNet). Plain (4-channel) SD 1.5 / 2.1-base / SD-Turbo UNets convert,
//! but the inpainting pipeline refuses them at load with a message saying why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::denoise::config::UNetConfig;
use crate::denoise::controlnet::ControlNetConfig;
use crate::denoise::scheduler::SchedulerConfig;
use crate::encoders::image::ImageEncoderConfig;
use crate::encoders::text::TextEncoderConfig;
use crate::model::Model;
use crate::pack::weights::decode_f32;
use crate::pack::{FORMAT_VERSION, Manifest, component_file};
use crate::vae::VaeModelConfig;

/// Element type of the weights in the written pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackDtype {
    F32,
    F16,
    /// Block-32 int8 with f16 scales (see [`crate::pack::quant`]); small tensors stay f16.
    Q8,
    /// Block-32 4-bit with f16 scales; small tensors stay f16.
    Q4,
}

impl PackDtype {
    fn name(self) -> &'static str {
        match self {
            PackDtype::F32 => "f32",
            PackDtype::F16 => "f16",
            PackDtype::Q8 => "q8",
            PackDtype::Q4 => "q4",
        }
    }
}

/// One tensor as written: its safetensors dtype, shape and bytes.
type Encoded = (Dtype, Vec<usize>, Vec<u8>);

/// Encodes one tensor in the pack dtype; quantised ones add a `.q_scale` entry.
fn encode_tensor(name: &str, shape: &[usize], values: &[f32], dtype: PackDtype, out: &mut BTreeMap<String, Encoded>) {
    use crate::pack::quant::{SCALE_SUFFIX, quantizable, quantize_q4, quantize_q8};
    let f16_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect() };
    let scale_bytes = |s: &[half::f16]| -> Vec<u8> { s.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let quantize = matches!(dtype, PackDtype::Q8 | PackDtype::Q4) && quantizable(values.len());
    let entry = match dtype {
        PackDtype::F32 => (Dtype::F32, shape.to_vec(), bytemuck::cast_slice(values).to_vec()),
        PackDtype::Q8 if quantize => {
            let (q, scales) = quantize_q8(values);
            out.insert(format!("{name}{SCALE_SUFFIX}"), (Dtype::F16, vec![scales.len()], scale_bytes(&scales)));
            (Dtype::I8, shape.to_vec(), q.iter().map(|&b| b as u8).collect())
        }
        PackDtype::Q4 if quantize => {
            let (q, scales) = quantize_q4(values);
            out.insert(format!("{name}{SCALE_SUFFIX}"), (Dtype::F16, vec![scales.len()], scale_bytes(&scales)));
            (Dtype::U8, vec![q.len()], q)
        }
        _ => (Dtype::F16, shape.to_vec(), f16_bytes(values)),
    };
    out.insert(name.to_string(), entry);
}

/// What was written, and what the user should know about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertReport {
    pub manifest: Manifest,
    /// Things that were skipped or assumed (text encoder not converted, scheduler class, …).
    pub notes: Vec<String>,
}

/// Why a folder could not be converted. Messages say what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertError(pub String);

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConvertError {}

fn err<T>(message: impl Into<String>) -> Result<T, ConvertError> {
    Err(ConvertError(message.into()))
}

fn read(path: &Path) -> Result<Vec<u8>, ConvertError> {
    std::fs::read(path).map_err(|e| ConvertError(format!("cannot read {}: {e}", path.display())))
}

/// Parses a diffusers `config.json`, dropping `null` fields (diffusers writes unset
/// options as null; our configs use defaults for them instead).
fn read_config(path: &Path) -> Result<Value, ConvertError> {
    let value: Value = serde_json::from_slice(&read(path)?)
        .map_err(|e| ConvertError(format!("{} is not valid JSON: {e}", path.display())))?;
    match value {
        Value::Object(map) => Ok(Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect())),
        _ => err(format!("{} is not a JSON object", path.display())),
    }
}

/// A config key and whether its value asks for something the runtime does not implement.
type UnsupportedOption = (&'static str, fn(&Value) -> bool);

/// Refuses UNet options the runtime does not implement, naming the option.
fn check_unet_options(config: &Value) -> Result<(), ConvertError> {
    let unsupported: [UnsupportedOption; 10] = [
        ("class_embed_type", |_| true),
        ("addition_embed_type", |_| true),
        ("encoder_hid_dim", |_| true),
        ("time_cond_proj_dim", |_| true),
        ("transformer_layers_per_block", |v| v.as_u64() != Some(1)),
        ("resnet_time_scale_shift", |v| v.as_str() != Some("default")),
        ("time_embedding_type", |v| v.as_str() != Some("positional")),
        ("only_cross_attention", |v| v.as_bool() != Some(false)),
        ("dual_cross_attention", |v| v.as_bool() != Some(false)),
        ("center_input_sample", |v| v.as_bool() != Some(false)),
    ];
    for (key, is_unsupported) in unsupported {
        if let Some(v) = config.get(key)
            && is_unsupported(v)
        {
            return err(format!(
                "the UNet uses {key} = {v}, which adcanvas does not implement (SDXL, LCM-distilled and class-conditioned UNets are not supported yet)"
            ));
        }
    }
    Ok(())
}

/// The safetensors files of a component: one file, or the shards its index lists.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ConvertError> {
    for name in ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"] {
        let path = dir.join(name);
        if path.exists() {
            return Ok(vec![path]);
        }
    }
    for index in
        ["diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.fp16.safetensors.index.json"]
    {
        let path = dir.join(index);
        if path.exists() {
            let value: Value = serde_json::from_slice(&read(&path)?)
                .map_err(|e| ConvertError(format!("{} is not valid JSON: {e}", path.display())))?;
            let mut shards: Vec<String> = value["weight_map"]
                .as_object()
                .ok_or_else(|| ConvertError(format!("{} has no weight_map", path.display())))?
                .values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            shards.sort();
            shards.dedup();
            return Ok(shards.into_iter().map(|s| dir.join(s)).collect());
        }
    }
    if dir.join("diffusion_pytorch_model.bin").exists() {
        return err(format!(
            "{} holds a PyTorch pickle (.bin); adcanvas reads safetensors only. Re-save it with `save_pretrained(..., safe_serialization=True)`.",
            dir.display()
        ));
    }
    err(format!("{} has no diffusion_pytorch_model.safetensors", dir.display()))
}

/// Whether a text encoder tensor is its token embedding table (BERT's `word_embeddings`, CLIP's
/// `token_embedding`): rows looked up by token, not multiplied, so they take a coarser dtype than
/// the layers with little effect on the encoder's output ([`convert_diffusers_with`]).
pub fn is_token_embedding(name: &str) -> bool {
    name.ends_with("word_embeddings.weight") || name.ends_with("token_embedding.weight")
}

/// Reads every tensor of a component, casts or quantises it to `dtype` (`dtype_of` may choose
/// another for a tensor by name), and serialises one safetensors file. `keep` filters tensor names
/// (the text encoder drops its pooler).
fn convert_weights(
    files: &[PathBuf],
    dtype_of: &dyn Fn(&str) -> PackDtype,
    keep: &dyn Fn(&str) -> bool,
) -> Result<(Vec<u8>, usize), ConvertError> {
    let mut tensors: BTreeMap<String, Encoded> = BTreeMap::new();
    let mut count = 0;
    for path in files {
        let bytes = read(path)?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| ConvertError(format!("{} is not a valid safetensors file: {e}", path.display())))?;
        for (name, view) in st.tensors() {
            if !keep(&name) {
                continue;
            }
            let values = decode_f32(&name, view.dtype(), view.data())
                .map_err(|e| ConvertError(format!("{} ({}): {e}", path.display(), name)))?;
            encode_tensor(&name, view.shape(), &values, dtype_of(&name), &mut tensors);
            count += 1;
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, (st_dtype, shape, data))| {
            let view = safetensors::tensor::TensorView::new(*st_dtype, shape.clone(), data)
                .map_err(|e| ConvertError(format!("tensor {name}: {e}")))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<_, ConvertError>>()?;
    let bytes = safetensors::serialize(views, None).map_err(|e| ConvertError(format!("writing safetensors: {e}")))?;
    Ok((bytes, count))
}

/// The text encoder's weight files: transformers saves `model.safetensors` (or shards).
fn transformers_weight_files(dir: &Path) -> Result<Vec<PathBuf>, ConvertError> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let value: Value = serde_json::from_slice(&read(&index)?)
            .map_err(|e| ConvertError(format!("{} is not valid JSON: {e}", index.display())))?;
        let mut shards: Vec<String> = value["weight_map"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        shards.sort();
        shards.dedup();
        return Ok(shards.into_iter().map(|s| dir.join(s)).collect());
    }
    err(format!("{} has no model.safetensors", dir.display()))
}

/// Converts the diffusers folder `dir` into a pack at `out`. With `verify`, the written
/// pack is loaded on the CPU device before returning.
pub fn convert_diffusers(
    dir: &Path,
    out: &Path,
    dtype: PackDtype,
    name: Option<String>,
    verify: bool,
) -> Result<ConvertReport, ConvertError> {
    convert_diffusers_with(dir, out, dtype, dtype, name, verify)
}

/// [`convert_diffusers`] with the text encoder's token embedding table in `embeddings` (e.g. q4
/// in a q8 pack: the default model's table is half its download, and its q4 rows move the
/// encoder's output a few percent where q4 layers move it by a quarter; BENCHMARKS.md 2026-12-07).
pub fn convert_diffusers_with(
    dir: &Path,
    out: &Path,
    dtype: PackDtype,
    embeddings: PackDtype,
    name: Option<String>,
    verify: bool,
) -> Result<ConvertReport, ConvertError> {
    if !dir.join("model_index.json").exists() {
        return err(format!(
            "{} is not a diffusers pipeline folder (no model_index.json); point --diffusers at the folder that holds unet/ and vae/",
            dir.display()
        ));
    }
    let mut notes = Vec::new();

    let unet_json = read_config(&dir.join("unet/config.json"))?;
    check_unet_options(&unet_json)?;
    let unet: UNetConfig =
        serde_json::from_value(unet_json).map_err(|e| ConvertError(format!("unet/config.json: {e}")))?;
    let vae: VaeModelConfig = serde_json::from_value(read_config(&dir.join("vae/config.json"))?)
        .map_err(|e| ConvertError(format!("vae/config.json: {e}")))?;
    let scheduler_path = dir.join("scheduler/scheduler_config.json");
    let scheduler: SchedulerConfig = if scheduler_path.exists() {
        let json = read_config(&scheduler_path)?;
        if let Some(class) = json.get("_class_name").and_then(Value::as_str)
            && class != "DDIMScheduler"
        {
            notes.push(format!("scheduler is {class}; adcanvas samples with DDIM using its noise schedule"));
        }
        serde_json::from_value(json).map_err(|e| ConvertError(format!("scheduler_config.json: {e}")))?
    } else {
        notes.push("no scheduler/ folder: using Stable Diffusion 1.5's DDIM settings".into());
        SchedulerConfig::default()
    };
    let (text_encoder, tokenizer_json) = match read_text_encoder_config(dir, &unet, &mut notes)? {
        Some((config, tokenizer)) => (Some(config), Some(tokenizer)),
        None => (None, None),
    };
    let image_encoder = read_image_encoder_config(dir, &mut notes)?;
    let controlnet = read_controlnet_config(dir, &unet, &vae, &mut notes)?;
    let segmenter = read_segmenter_config(dir, &mut notes)?;
    let mut skipped = vec!["safety_checker"];
    if image_encoder.is_none() {
        skipped.push("feature_extractor");
    }
    for skipped in skipped {
        if dir.join(skipped).exists() {
            notes.push(format!("{skipped}/ is not used by adcanvas and was skipped"));
        }
    }

    std::fs::create_dir_all(out).map_err(|e| ConvertError(format!("cannot create {}: {e}", out.display())))?;
    let mut files = BTreeMap::new();
    let mut components: Vec<(&str, Vec<PathBuf>)> =
        vec![("unet", weight_files(&dir.join("unet"))?), ("vae", weight_files(&dir.join("vae"))?)];
    if text_encoder.is_some() {
        components.push(("text_encoder", transformers_weight_files(&dir.join("text_encoder"))?));
    }
    if image_encoder.is_some() {
        components.push(("image_encoder", transformers_weight_files(&dir.join("image_encoder"))?));
    }
    if controlnet.is_some() {
        components.push(("controlnet", weight_files(&dir.join("controlnet"))?));
    }
    if segmenter.is_some() {
        components.push(("segmenter", weight_files(&dir.join("segmenter"))?));
    }
    for (component, sources) in components {
        // BertModel's pooler is not part of the context the UNet attends to, nor are CLIP's pooled
        // output layers part of an image prompt; position_ids are buffers.
        let keep = |name: &str| {
            let unused = match component {
                "text_encoder" => name.starts_with("pooler.") || name.starts_with("text_projection."),
                "image_encoder" => name.contains("post_layernorm.") || name.starts_with("visual_projection."),
                _ => false,
            };
            !(unused || name.ends_with("position_ids"))
        };
        let dtype_of = |name: &str| match component == "text_encoder" && is_token_embedding(name) {
            true => embeddings,
            false => dtype,
        };
        let (bytes, count) = convert_weights(&sources, &dtype_of, &keep)?;
        let file = format!("{component}.safetensors");
        write_file(&out.join(&file), &bytes)?;
        files.insert(component.to_string(), component_file(&file, &bytes, dtype.name()));
        let as_what = match component == "text_encoder" && embeddings != dtype {
            true => format!("{} (token embeddings {})", dtype.name(), embeddings.name()),
            false => dtype.name().to_string(),
        };
        notes.push(format!("{component}: {count} tensors, {:.1} MB as {as_what}", bytes.len() as f64 / 1e6));
    }
    if text_encoder.is_some() {
        let bytes = tokenizer_json.expect("read with the text encoder's config");
        write_file(&out.join("tokenizer.json"), &bytes)?;
        files.insert("tokenizer".to_string(), component_file("tokenizer.json", &bytes, "json"));
    }

    let label = name.unwrap_or_else(|| {
        dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "converted model".into())
    });
    let manifest = Manifest {
        format: "adcanvas-pack".into(),
        format_version: FORMAT_VERSION,
        name: label.clone(),
        trained: true,
        label,
        unet,
        vae,
        scheduler,
        text_encoder,
        image_encoder,
        controlnet,
        files,
        provenance: format!(
            "adcanvas convert --diffusers {} --dtype {}{}",
            dir.display(),
            dtype.name(),
            if embeddings != dtype { format!(" --embedding-dtype {}", embeddings.name()) } else { String::new() }
        ),
        smallest_product: None,
        segmenter,
    };
    let manifest_path = out.join("manifest.json");
    std::fs::write(&manifest_path, manifest.to_json() + "\n")
        .map_err(|e| ConvertError(format!("cannot write {}: {e}", manifest_path.display())))?;

    if verify {
        let (m, f) = crate::pack::read_pack_dir(out).map_err(|e| ConvertError(e.to_string()))?;
        Model::from_pack(m, &f, &burn::tensor::Device::flex())
            .map_err(|e| ConvertError(format!("the converted pack does not load: {e}")))?;
    }
    Ok(ConvertReport { manifest, notes })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ConvertError> {
    std::fs::write(path, bytes).map_err(|e| ConvertError(format!("cannot write {}: {e}", path.display())))
}

/// The style-reference encoder's config from `image_encoder/config.json` (a CLIP vision model,
/// or a full CLIP config's `vision_config`), with the pixel normalisation from
/// `feature_extractor/preprocessor_config.json` when present (CLIP's otherwise). The prompt reads
/// the last hidden state (`hidden_layer` −1); edit the manifest for checkpoints trained on another.
fn read_image_encoder_config(dir: &Path, notes: &mut Vec<String>) -> Result<Option<ImageEncoderConfig>, ConvertError> {
    let config_path = dir.join("image_encoder/config.json");
    if !config_path.exists() {
        return Ok(None);
    }
    let mut json = read_config(&config_path)?;
    if json.get("model_type").and_then(Value::as_str) == Some("clip") {
        json = json.get("vision_config").cloned().unwrap_or(Value::Null);
    }
    if !matches!(json.get("model_type").and_then(Value::as_str), Some("clip_vision_model") | None) || !json.is_object()
    {
        notes.push("image_encoder/ is not a CLIP vision model: style references are not used by this pack".into());
        return Ok(None);
    }
    let processor = dir.join("feature_extractor/preprocessor_config.json");
    if processor.exists() {
        let p = read_config(&processor)?;
        for key in ["image_mean", "image_std"] {
            if let Some(v) = p.get(key) {
                json[key] = v.clone();
            }
        }
    }
    let config: ImageEncoderConfig =
        serde_json::from_value(json).map_err(|e| ConvertError(format!("image_encoder/config.json: {e}")))?;
    notes.push(format!(
        "image_encoder: CLIP vision, {}² input, {}-px patches, {} layers (style references enabled)",
        config.image_size, config.patch_size, config.num_hidden_layers
    ));
    Ok(Some(config))
}

/// The cut-out network's config when the folder has `segmenter/` (training/train_segmenter.py's
/// `UNet2DConditionModel`, 3 channels in, 1 out; not part of diffusers' layout, so it is copied
/// there as `controlnet/` is).
fn read_segmenter_config(dir: &Path, notes: &mut Vec<String>) -> Result<Option<UNetConfig>, ConvertError> {
    let config_path = dir.join("segmenter/config.json");
    if !config_path.exists() {
        return Ok(None);
    }
    let json = read_config(&config_path)?;
    check_unet_options(&json).map_err(|e| ConvertError(format!("segmenter/: {e}")))?;
    let config: UNetConfig =
        serde_json::from_value(json).map_err(|e| ConvertError(format!("segmenter/config.json: {e}")))?;
    crate::encoders::segmenter::Segmenter::check(&config).map_err(|e| ConvertError(format!("segmenter/: {e}")))?;
    notes.push(format!("segmenter: the cut-out network, {}² input", config.sample_size));
    Ok(Some(config))
}

/// The ControlNet's config when the folder has `controlnet/` (not part of diffusers'
/// `save_pretrained` layout for SD pipelines, so a depth ControlNet's own folder is copied
/// or linked there); it must fit the UNet, and its control images the VAE's image size.
fn read_controlnet_config(
    dir: &Path,
    unet: &UNetConfig,
    vae: &VaeModelConfig,
    notes: &mut Vec<String>,
) -> Result<Option<ControlNetConfig>, ConvertError> {
    let config_path = dir.join("controlnet/config.json");
    if !config_path.exists() {
        return Ok(None);
    }
    let config: ControlNetConfig = serde_json::from_value(read_config(&config_path)?)
        .map_err(|e| ConvertError(format!("controlnet/config.json: {e}")))?;
    config.check_fits(unet).map_err(|e| ConvertError(format!("controlnet/: {e}")))?;
    if config.downscale() != vae.downscale() {
        return err(format!(
            "controlnet/ reads control images {}× the latent size, but the VAE's images are {}× its latents",
            config.downscale(),
            vae.downscale()
        ));
    }
    notes.push(format!(
        "controlnet: {}-channel control image at {}× the latent size",
        config.conditioning_channels,
        config.downscale()
    ));
    Ok(Some(config))
}

/// The text encoder's config and the `tokenizer.json` to ship with it, when the folder has an
/// encoder adcanvas runs: BERT/MiniLM with `tokenizer/tokenizer.json`, or CLIP's text model
/// with `tokenizer/vocab.json` and `merges.txt` (SD 1.x/2.x), whose padding token and length
/// come from `special_tokens_map.json` and `tokenizer_config.json`.
fn read_text_encoder_config(
    dir: &Path,
    unet: &UNetConfig,
    notes: &mut Vec<String>,
) -> Result<Option<(TextEncoderConfig, Vec<u8>)>, ConvertError> {
    let config_path = dir.join("text_encoder/config.json");
    if !config_path.exists() {
        notes.push("no text_encoder/: prompts are not used by this pack".into());
        return Ok(None);
    }
    let json = read_config(&config_path)?;
    let model_type = json.get("model_type").and_then(Value::as_str).unwrap_or("").to_string();
    let tokenizer = dir.join("tokenizer");
    let tokenizer_json = match model_type.as_str() {
        "bert" => {
            if !tokenizer.join("tokenizer.json").exists() {
                return err(format!("{} has a BERT text encoder but no tokenizer/tokenizer.json", dir.display()));
            }
            let bytes = read(&tokenizer.join("tokenizer.json"))?;
            crate::encoders::text::PromptTokenizer::from_bytes(&bytes)
                .map_err(|e| ConvertError(format!("tokenizer/tokenizer.json: {e}")))?;
            bytes
        }
        "clip_text_model" => {
            if !tokenizer.join("vocab.json").exists() || !tokenizer.join("merges.txt").exists() {
                return err(format!(
                    "{} has a CLIP text encoder but no tokenizer/vocab.json and merges.txt",
                    dir.display()
                ));
            }
            let setting = |file: &str, key: &str| -> Result<Option<Value>, ConvertError> {
                let path = tokenizer.join(file);
                Ok(if path.exists() { read_config(&path)?.get(key).cloned() } else { None })
            };
            // A token is a string or an AddedToken object ({"content": …}).
            let pad_token = match setting("special_tokens_map.json", "pad_token")? {
                Some(Value::String(s)) => s,
                Some(Value::Object(o)) => {
                    o.get("content").and_then(Value::as_str).unwrap_or("<|endoftext|>").to_string()
                }
                _ => "<|endoftext|>".to_string(),
            };
            let positions = json.get("max_position_embeddings").and_then(Value::as_u64).unwrap_or(77);
            let length = setting("tokenizer_config.json", "model_max_length")?
                .and_then(|v| v.as_u64())
                .unwrap_or(positions)
                .min(positions);
            let merges = String::from_utf8(read(&tokenizer.join("merges.txt"))?)
                .map_err(|_| ConvertError("tokenizer/merges.txt is not UTF-8".into()))?;
            let bytes = crate::encoders::clip::clip_tokenizer_json(
                &read(&tokenizer.join("vocab.json"))?,
                &merges,
                &pad_token,
                length as usize,
            )
            .map_err(|e| ConvertError(format!("tokenizer/: {e}")))?;
            notes.push(format!(
                "tokenizer: CLIP BPE from vocab.json and merges.txt, padded with {pad_token:?} to {length} tokens"
            ));
            bytes
        }
        other => {
            notes.push(format!(
                "text_encoder/ is a {other} model, which adcanvas does not run: prompts are not used by this pack"
            ));
            return Ok(None);
        }
    };
    let config: TextEncoderConfig =
        serde_json::from_value(json).map_err(|e| ConvertError(format!("text_encoder/config.json: {e}")))?;
    if config.hidden_size() != unet.cross_attention_dim {
        return err(format!(
            "the text encoder is {} wide but the UNet's cross_attention_dim is {}",
            config.hidden_size(),
            unet.cross_attention_dim
        ));
    }
    Ok(Some((config, tokenizer_json)))
}
