//! The loaded foundation model: UNet, VAE encoder and decoder, scheduler config.

use burn::module::Module;
use std::collections::BTreeMap;

use burn::tensor::Device;

use crate::denoise::controlnet::ControlNetModel;
use crate::denoise::mepa::ImageProjection;
use crate::denoise::unet::{UNet2DConditionModel, UNetConfig};
use crate::encoders::image::ImageEncoder;
use crate::encoders::reference::ReferenceEncoder;
use crate::encoders::segmenter::Segmenter;
use crate::encoders::text::TextEncoder;
use crate::error::ModelError;
use crate::input::layout::MAX_CANVAS_SIDE;
use crate::pack::weights::{QuantizedWeights, Weights};
use crate::pack::{Manifest, component_file};
use crate::vae::preview::SharedPreview;
use crate::vae::{LatentDecoder, LatentEncoder, VaeConfig, VaeDecoder, VaeEncoder, VaeModelConfig};

/// Everything the denoising pipeline runs, on one burn device.
#[derive(Module, Debug)]
pub struct Model {
    #[module(skip)]
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
    /// The cut-out network for photos on busy backgrounds; `None` for packs without one.
    pub segmenter: Option<Segmenter>,
    /// What loading did with the pack's quantised weights.
    #[module(skip)]
    pub quantized: QuantizedWeights,
    /// Bytes of weights the device holds (token embedding tables, kept on the CPU, excluded).
    pub device_weight_bytes: u64,
    #[module(skip)]
    pub device: Device,
    /// The step previews' latent-to-colour fit, learnt from this model's own ads.
    #[module(skip)]
    pub preview: SharedPreview,
}

impl Model {
    /// Builds the model from a manifest and its component files' bytes (read, fetched or
    /// memory-mapped), verifying each file's size and SHA-256 first. Quantised weights are
    /// kept quantised when the pack would be large in f32 ([`crate::pack::Manifest::quantized_weights`]).
    pub fn from_pack<B: AsRef<[u8]>>(
        manifest: Manifest,
        files: &BTreeMap<String, B>,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let quantized = manifest.quantized_weights();
        Self::from_pack_with(manifest, files, device, quantized)
    }

    /// [`Model::from_pack`] with the choice of what to do with quantised weights.
    pub fn from_pack_with<B: AsRef<[u8]>>(
        manifest: Manifest,
        files: &BTreeMap<String, B>,
        device: &Device,
        quantized: QuantizedWeights,
    ) -> Result<Self, ModelError> {
        fn component_weights<'b>(
            manifest: &Manifest,
            component: &str,
            bytes: &'b [u8],
            device: &Device,
            quantized: QuantizedWeights,
        ) -> Result<Weights<'b>, ModelError> {
            Ok(Weights::from_safetensors(&manifest.file(component)?.file, bytes, device)?.with_quantized(quantized))
        }
        let weights = |component: &str, bytes| component_weights(&manifest, component, bytes, device, quantized);
        let get = |component: &str| -> Result<&[u8], ModelError> {
            let entry = manifest.file(component)?;
            let bytes =
                files.get(component).ok_or_else(|| ModelError::Io(format!("{} was not read", entry.file)))?.as_ref();
            manifest.verify(component, bytes)?;
            Ok(bytes)
        };
        let unet_bytes = get("unet")?;
        let vae_bytes = get("vae")?;
        let unet_w = weights("unet", unet_bytes)?;
        let vae_w = weights("vae", vae_bytes)?;
        // Device bytes of the components loaded in their own scope (unet_w's and vae_w's are
        // added at the end).
        let mut other_bytes = 0;
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
                let w = weights("text_encoder", text_bytes)?;
                let encoder = TextEncoder::load(config, &w, tokenizer)?;
                other_bytes += w.device_bytes();
                Some(encoder)
            }
            None => None,
        };
        let unet = UNet2DConditionModel::load(&unet_w, &manifest.unet)?;
        let reference_encoder = match &manifest.image_encoder {
            Some(config) => {
                let w = weights("image_encoder", get("image_encoder")?)?;
                let encoder = ImageEncoder::load(&w, config)?;
                other_bytes += w.device_bytes();
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
                let w = weights("controlnet", get("controlnet")?)?;
                let controlnet = ControlNetModel::load(&w, config)?;
                other_bytes += w.device_bytes();
                Some(controlnet)
            }
            None => None,
        };
        // The cut-out network may be left out of `files`: the browser fetches it for the first
        // busy photo instead of on every first visit ([`Model::load_segmenter`]).
        let segmenter = match files.contains_key("segmenter") {
            true => Self::segmenter_from(&manifest, get("segmenter")?)?,
            false => None,
        };
        let vae_encoder = LatentEncoder::load(&vae_w, &manifest.vae)?;
        let vae_decoder = LatentDecoder::load(&vae_w, &manifest.vae)?;
        Ok(Self {
            text_encoder,
            reference_encoder,
            controlnet,
            segmenter,
            unet,
            vae_encoder,
            vae_decoder,
            manifest,
            quantized,
            device_weight_bytes: unet_w.device_bytes() + vae_w.device_bytes() + other_bytes,
            device: device.clone(),
            preview: SharedPreview::default(),
        })
    }

    /// The pack's cut-out network from its file's bytes (checked against the manifest), for a
    /// model loaded without it; `None` when the pack has none.
    pub fn load_segmenter(&self, bytes: &[u8]) -> Result<Option<Segmenter>, ModelError> {
        self.manifest.verify("segmenter", bytes)?;
        Self::segmenter_from(&self.manifest, bytes)
    }

    fn segmenter_from(manifest: &Manifest, bytes: &[u8]) -> Result<Option<Segmenter>, ModelError> {
        let Some(config) = &manifest.segmenter else { return Ok(None) };
        // On the CPU, expanded, whatever the model's device (encoders::segmenter says why); its
        // bytes are not the device's.
        let cpu = Device::flex();
        let w = Weights::from_safetensors(&manifest.file("segmenter")?.file, bytes, &cpu)?;
        Ok(Some(Segmenter::load(&w, config)?))
    }

    fn check_compatible(unet: &UNetConfig, vae: &VaeModelConfig) -> Result<(), ModelError> {
        // The side the model makes by default (its sample size in pixels) must be one the studio
        // can lay out; a manifest claiming more describes a model that is not in the file.
        let native = unet.sample_size.checked_mul(vae.downscale()).filter(|&s| s <= MAX_CANVAS_SIDE as usize);
        if native.is_none() || unet.sample_size == 0 {
            return Err(ModelError::Unsupported(format!(
                "the UNet's sample_size {} (× {} pixels a latent) is not an image side the studio makes (at most {MAX_CANVAS_SIDE} px)",
                unet.sample_size,
                vae.downscale()
            )));
        }
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
        provenance: format!(
            "adcanvas demo-model --seed {seed}: seeded uniform init with PyTorch's default bounds; no training"
        ),
        smallest_product: None,
        segmenter: None,
    };
    Ok((manifest, files))
}

impl Model {
    /// Whether prompts influence this model's output (packs without a text encoder ignore them).
    pub fn prompt_used(&self) -> bool {
        self.text_encoder.is_some()
    }
}
