//! Model packs: a folder with `manifest.json` and one safetensors file per component.
//!
//! The manifest carries each component's diffusers config, its file, byte size and
//! SHA-256, so a wrong or damaged download is refused with a clear message before any
//! tensor reaches the GPU. The web app fetches the same files the CLI reads from disk.
//! [`weights`] reads tensors by diffusers name, [`quant`] holds q8/q4 blocks, and `convert`
//! writes packs from diffusers folders.

#[cfg(not(target_arch = "wasm32"))]
pub mod convert;
pub mod quant;
pub mod snapshot;
pub mod weights;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::denoise::config::UNetConfig;
use crate::denoise::controlnet::ControlNetConfig;
use crate::denoise::scheduler::SchedulerConfig;
use crate::encoders::image::ImageEncoderConfig;
use crate::encoders::text::TextEncoderConfig;
use crate::error::ModelError;
use crate::vae::VaeModelConfig;
use weights::QuantizedWeights;

/// The manifest format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// One weight file of a pack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentFile {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    /// `"f32"`, `"f16"`, `"q8"`, `"q4"` (see `quant`; q8/q4 weights stay quantised on the
    /// device or become f32 at load: `weights::QuantizedWeights`), or `"json"` for the tokenizer.
    pub dtype: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub name: String,
    /// False for the randomly initialised demo model: the app and CLI then say so plainly.
    pub trained: bool,
    /// What the UI shows next to the model ("untrained demo model").
    pub label: String,
    pub unet: UNetConfig,
    pub vae: VaeModelConfig,
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// The prompt encoder; its weights are the `text_encoder` file and its vocabulary the
    /// `tokenizer` file (`tokenizer.json`). Without it prompts are not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_encoder: Option<TextEncoderConfig>,
    /// The style-reference encoder (`image_encoder` file); the UNet then carries MEPA's image-prompt
    /// projections and the token projection. Without it the pack takes no style reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_encoder: Option<ImageEncoderConfig>,
    /// The depth ControlNet (`controlnet` file), steering the UNet with the product's depth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlnet: Option<ControlNetConfig>,
    /// The cut-out network (`segmenter` file, `encoders::segmenter`): a `UNet2DConditionModel` with
    /// 3 channels in and 1 out that finds the product in a photo whose background is not plain.
    /// Without it such photos need a mask (the brush, `--mask`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segmenter: Option<UNetConfig>,
    /// Component name (`unet`, `vae`, …) → file.
    pub files: BTreeMap<String, ComponentFile>,
    /// How the pack was made (script and arguments), for reproducibility.
    #[serde(default)]
    pub provenance: String,
    /// The smallest product the model was trained on; the pipeline notes when a layout puts a
    /// product below it. Absent where a pack declares no such limit (Stable Diffusion's weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smallest_product: Option<ProductShare>,
}

/// A product's size as shares of the ad: `height` of the ad's height or, for wide products that
/// training capped by their width, `width` of its width. A product under both is smaller than
/// any the model saw.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProductShare {
    pub height: f32,
    pub width: f32,
}

impl Manifest {
    /// How to hold this pack's weights on the device: kept quantised when they would take more
    /// than [`QuantizedWeights::KEEP_ABOVE_BYTES`] as f32 (SD 1.5 at q8: 3.4 GiB), where memory
    /// decides; expanded to f32 at load otherwise, the fastest.
    pub fn quantized_weights(&self) -> QuantizedWeights {
        if self.f32_weight_bytes() > QuantizedWeights::KEEP_ABOVE_BYTES {
            QuantizedWeights::Keep
        } else {
            QuantizedWeights::Expand
        }
    }

    /// About how many bytes the pack's weights take as f32: each file's size times the
    /// expansion of its dtype (a q8/q4 file is almost all quantised values).
    pub fn f32_weight_bytes(&self) -> u64 {
        self.files
            .values()
            .map(|f| match f.dtype.as_str() {
                "f16" => f.bytes * 2,
                "q8" => f.bytes * 4,
                "q4" => f.bytes * 8,
                "json" => 0,
                _ => f.bytes,
            })
            .sum()
    }

    /// Parses and checks a manifest.
    pub fn parse(bytes: &[u8]) -> Result<Self, ModelError> {
        // Format and version first, so a newer pack says so instead of failing on a field.
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ModelError::Manifest(format!("not valid JSON: {e}")))?;
        if value.get("format").and_then(|v| v.as_str()) != Some("adcanvas-pack") {
            return Err(ModelError::Manifest(
                "it is not an adcanvas pack manifest (format != \"adcanvas-pack\")".into(),
            ));
        }
        let version = value.get("format_version").and_then(|v| v.as_u64()).unwrap_or(0);
        if version != FORMAT_VERSION as u64 {
            return Err(ModelError::Manifest(format!(
                "format_version {version} is not supported by this build (it reads {FORMAT_VERSION})"
            )));
        }
        let m: Manifest = serde_json::from_value(value).map_err(|e| ModelError::Manifest(e.to_string()))?;
        let mut needed = vec!["unet", "vae"];
        if m.text_encoder.is_some() {
            needed.extend(["text_encoder", "tokenizer"]);
        }
        if m.image_encoder.is_some() {
            needed.push("image_encoder");
        }
        if m.segmenter.is_some() {
            needed.push("segmenter");
        }
        for needed in needed {
            if !m.files.contains_key(needed) {
                return Err(ModelError::Manifest(format!("no {needed} file listed")));
            }
        }
        Ok(m)
    }

    /// The file entry for `component`.
    pub fn file(&self, component: &str) -> Result<&ComponentFile, ModelError> {
        self.files.get(component).ok_or_else(|| ModelError::Manifest(format!("no {component} file listed")))
    }

    /// Checks a component file's size and SHA-256 against the manifest.
    pub fn verify(&self, component: &str, bytes: &[u8]) -> Result<(), ModelError> {
        let entry = self.file(component)?;
        if bytes.len() as u64 != entry.bytes {
            return Err(ModelError::Corrupt {
                file: entry.file.clone(),
                reason: format!("{} bytes, the manifest says {}", bytes.len(), entry.bytes),
            });
        }
        let got = sha256_hex(bytes);
        if got != entry.sha256 {
            return Err(ModelError::Checksum { file: entry.file.clone(), expected: entry.sha256.clone(), got });
        }
        Ok(())
    }

    /// Serialises with stable key order (pretty, for diffs).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifest serialises")
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file entry for freshly written bytes.
pub fn component_file(file: &str, bytes: &[u8], dtype: &str) -> ComponentFile {
    ComponentFile {
        file: file.to_string(),
        bytes: bytes.len() as u64,
        sha256: sha256_hex(bytes),
        dtype: dtype.to_string(),
    }
}

/// Maps a pack folder's files into memory instead of reading them: the weights are then read
/// from the page cache as each tensor is built, so loading never holds the pack's bytes and the
/// built model as two full copies in process memory (SD 1.5's f32 pack is 3.6 GB). For the
/// CLI and benchmarks; the files must not change while the model loads.
#[cfg(not(target_arch = "wasm32"))]
pub fn map_pack_dir(dir: &std::path::Path) -> Result<(Manifest, BTreeMap<String, memmap2::Mmap>), ModelError> {
    let manifest = read_manifest(dir)?;
    let mut files = BTreeMap::new();
    for (component, entry) in &manifest.files {
        let path = dir.join(&entry.file);
        let file = std::fs::File::open(&path).map_err(|e| ModelError::Io(format!("{}: {e}", path.display())))?;
        // SAFETY: the pack is opened read-only; the documented contract is that it does not
        // change while the model loads (as with any file a program reads).
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::Io(format!("{}: {e}", path.display())))?;
        files.insert(component.clone(), map);
    }
    Ok((manifest, files))
}

/// Reads a pack folder from disk: the manifest, then every file it lists.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_pack_dir(dir: &std::path::Path) -> Result<(Manifest, BTreeMap<String, Vec<u8>>), ModelError> {
    let manifest = read_manifest(dir)?;
    let mut files = BTreeMap::new();
    for (component, entry) in &manifest.files {
        let path = dir.join(&entry.file);
        let data = std::fs::read(&path).map_err(|e| ModelError::Io(format!("{}: {e}", path.display())))?;
        files.insert(component.clone(), data);
    }
    Ok((manifest, files))
}

/// A pack folder's `manifest.json`, parsed and checked.
#[cfg(not(target_arch = "wasm32"))]
fn read_manifest(dir: &std::path::Path) -> Result<Manifest, ModelError> {
    let path = dir.join("manifest.json");
    let bytes = std::fs::read(&path).map_err(|e| ModelError::Io(format!("{}: {e}", path.display())))?;
    Manifest::parse(&bytes)
}
