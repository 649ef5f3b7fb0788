//! The loaded foundation model: UNet, VAE encoder and decoder, scheduler config.

use std::collections::BTreeMap;

use burn::tensor::Device;

use crate::denoise::controlnet::ControlNetModel;
use crate::denoise::unet::{UNet2DConditionModel, UNetConfig};
use crate::denoise::mepa::ImageProjection;
use crate::encoders::image::ImageEncoder;
use crate::encoders::text::TextEncoder;
use crate::reference::ReferenceEncoder;
use crate::pack::{Manifest, component_file};
use crate::vae::{LatentDecoder, LatentEncoder, VaeConfig, VaeDecoder, VaeEncoder, VaeModelConfig};
use crate::weights::{ModelError, Weights};

/// Everything the denoising pipeline runs, on one burn device.
pub struct Model {
    pub manifest: Manifest,
    pub unet: UNet2DConditionModel,
    pub vae_encoder: LatentEncoder,
    pub vae_decoder: LatentDecoder,
    /// The prompt encoder; `None` for packs without one (prompts are then not used).
    pub text_encoder: Option<TextEncoder>,
    /// The style-reference encoder; `None` for packs that take no reference.
    pub reference_encoder: Option<ReferenceEncoder>,
    /// The depth ControlNet; `None` for packs without one.
    pub controlnet: Option<ControlNetModel>,
    pub device: Device,
}

impl Model {
    /// Builds the model from a manifest and its component files' bytes (read, fetched or
    /// memory-mapped), verifying each file's size and SHA-256 first.
    pub fn from_pack<B: AsRef<[u8]>>(manifest: Manifest, files: &BTreeMap<String, B>, device: &Device) -> Result<Self, ModelError> {
        let get = |component: &str| -> Result<&[u8], ModelError> {
            let entry = manifest.file(component)?;
            let bytes = files.get(component).ok_or_else(|| ModelError::Io(format!("{} was not read", entry.file)))?.as_ref();
            manifest.verify(component, bytes)?;
            Ok(bytes)
        };
        let unet_bytes = get("unet")?;
        let vae_bytes = get("vae")?;
        let unet_w = Weights::from_safetensors(&manifest.file("unet")?.file, unet_bytes, device)?;
        let vae_w = Weights::from_safetensors(&manifest.file("vae")?.file, vae_bytes, device)?;
        Self::check_compatible(&manifest.unet, &manifest.vae)?;
        let text_encoder = match &manifest.text_encoder {
            Some(config) => {
                if config.hidden_size() != manifest.unet.cross_attention_dim {
                    return Err(ModelError::Unsupported(format!(
                        "the text encoder is {} wide but the UNet attends to {}-wide context",
                        config.hidden_size(),
                        manifest.unet.cross_attention_dim
                    )));
                }
                let text_bytes = get("text_encoder")?;
                let tokenizer = get("tokenizer")?;
                let w = Weights::from_safetensors(&manifest.file("text_encoder")?.file, text_bytes, device)?;
                Some(TextEncoder::load(config, &w, tokenizer)?)
            }
            None => None,
        };
        let unet = UNet2DConditionModel::load(&unet_w, &manifest.unet)?;
        let reference_encoder = match &manifest.image_encoder {
            Some(config) => {
                let w = Weights::from_safetensors(&manifest.file("image_encoder")?.file, get("image_encoder")?, device)?;
                let encoder = ImageEncoder::load(&w, config)?;
                let projection = ImageProjection::load(&unet_w, config.hidden_size, manifest.unet.cross_attention_dim)?;
                match projection {
                    Some(projection) if unet.takes_image_prompt() => Some(ReferenceEncoder { encoder, projection }),
                    _ => {
                        return Err(ModelError::Unsupported(
                            "the pack has an image encoder but its UNet lacks MEPA's image-prompt weights (encoder_hid_proj, to_k_ip, to_v_ip)".into(),
                        ));
                    }
                }
            }
            None => None,
        };
        let controlnet = match &manifest.controlnet {
            Some(config) => {
                config.check_fits(&manifest.unet)?;
                if config.downscale() != manifest.vae.downscale() {
                    return Err(ModelError::Unsupported(format!(
                        "the ControlNet reads control images {}× the latent size, but this VAE's images are {}× its latents",
                        config.downscale(),
                        manifest.vae.downscale()
                    )));
                }
                let w = Weights::from_safetensors(&manifest.file("controlnet")?.file, get("controlnet")?, device)?;
                Some(ControlNetModel::load(&w, config)?)
            }
            None => None,
        };
        Ok(Self {
            text_encoder,
            reference_encoder,
            controlnet,
            unet,
            vae_encoder: LatentEncoder::load(&vae_w, &manifest.vae)?,
            vae_decoder: LatentDecoder::load(&vae_w, &manifest.vae)?,
            manifest,
            device: device.clone(),
        })
    }

    fn check_compatible(unet: &UNetConfig, vae: &VaeModelConfig) -> Result<(), ModelError> {
        let lat = vae.latent_channels();
        if unet.in_channels != 2 * lat + 1 || unet.out_channels != lat {
            return Err(ModelError::Unsupported(format!(
                "the pipeline needs an inpainting UNet ({} input channels = latents + mask + masked-image latents, {} output); this one has {} in, {} out",
                2 * lat + 1,
                lat,
                unet.in_channels,
                unet.out_channels
            )));
        }
        Ok(())
    }

    /// The output side the model was trained at (`sample_size` latents × the VAE's
    /// downscale): the size that looks best, and the default in the app and CLI.
    pub fn native_size(&self) -> usize {
        self.manifest.unet.sample_size * self.manifest.vae.downscale()
    }

    /// Output sides must be a multiple of this many pixels.
    pub fn size_multiple(&self) -> usize {
        self.manifest.vae.downscale() * self.manifest.unet.latent_multiple()
    }
}

/// Creates the untrained demo model pack: seeded random weights in the diffusers
/// structure (see `adcanvas demo-model`). Returns the manifest and file bytes by name.
pub fn create_demo_pack(seed: u64, device: &Device) -> Result<(Manifest, BTreeMap<String, Vec<u8>>), ModelError> {
    let unet_cfg = UNetConfig::demo();
    let vae_cfg = VaeConfig::demo();
    let (unet_w, unet_created) = Weights::random(seed, device);
    UNet2DConditionModel::load(&unet_w, &unet_cfg)?;
    let (vae_w, vae_created) = Weights::random(seed.wrapping_add(1), device);
    VaeEncoder::load(&vae_w, &vae_cfg)?;
    VaeDecoder::load(&vae_w, &vae_cfg)?;
    let unet_bytes = unet_created.lock().expect("creator").to_safetensors();
    let vae_bytes = vae_created.lock().expect("creator").to_safetensors();
    let mut files = BTreeMap::new();
    let mut entries = BTreeMap::new();
    entries.insert("unet".to_string(), component_file("unet.safetensors", &unet_bytes, "f32"));
    entries.insert("vae".to_string(), component_file("vae.safetensors", &vae_bytes, "f32"));
    files.insert("unet".to_string(), unet_bytes);
    files.insert("vae".to_string(), vae_bytes);
    let manifest = Manifest {
        format: "adcanvas-pack".into(),
        format_version: crate::pack::FORMAT_VERSION,
        name: "adcanvas demo (random weights)".into(),
        trained: false,
        label: "untrained demo model".into(),
        unet: unet_cfg,
        vae: vae_cfg.into(),
        scheduler: Default::default(),
        text_encoder: None,
        image_encoder: None,
        controlnet: None,
        files: entries,
        provenance: format!("adcanvas demo-model --seed {seed}: seeded uniform init with PyTorch's default bounds; no training"),
    };
    Ok((manifest, files))
}
