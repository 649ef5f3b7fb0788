//! Numerical parity with diffusers on random weights (fixtures from
//! `scripts/make_parity_fixtures.py`, versions in `tests/parity/VERSIONS.txt`).
//! Tolerance: 1e-4 max-abs for models (f32), on burn's CPU device and on wgpu.

use burn::config::Config;
use std::path::PathBuf;

use adcanvas::denoise::scheduler::{DdimScheduler, SchedulerConfig};
use adcanvas::denoise::unet::{UNet2DConditionModel, UNetConfig};
use adcanvas::gpu::{DeviceChoice, open_device};
use adcanvas::pack::weights::Weights;
use adcanvas::vae::{VaeConfig, VaeDecoder, VaeEncoder};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::SafeTensors;

const MODEL_TOLERANCE: f32 = 1e-4;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/parity").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run scripts/make_parity_fixtures.py)", path.display()))
}

/// A case's weights: its own file, or for the models `diffusers_tiny` holds (the same
/// tensors, saved once) that folder's.
fn weights_of(case: &str) -> Vec<u8> {
    let shared = match case {
        "unet_conv_proj" => "unet",
        "vae" => "vae",
        _ => return fixture(&format!("{case}.weights.safetensors")),
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/diffusers_tiny")
        .join(shared)
        .join("diffusion_pytorch_model.safetensors");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run scripts/make_parity_fixtures.py)", path.display()))
}

struct Io(Vec<u8>);

impl Io {
    fn get(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        let view = st.tensor(name).unwrap_or_else(|_| panic!("fixture tensor {name}"));
        let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        (values, view.shape().to_vec())
    }

    fn tensor<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D> {
        let (values, shape) = self.get(name);
        let shape: [usize; D] = shape.try_into().expect("fixture rank");
        Tensor::from_data(TensorData::new(values, shape), device)
    }
}

fn max_abs_diff(got: Tensor<4>, want: &[f32]) -> f32 {
    let got: Vec<f32> = got.into_data().try_to_vec().unwrap();
    assert_eq!(got.len(), want.len(), "output size");
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

fn devices() -> Vec<(&'static str, Device)> {
    let gpu = pollster::block_on(open_device(DeviceChoice::Gpu)).expect("a wgpu adapter (lavapipe in CI)");
    vec![("cpu", Device::flex()), ("gpu", gpu)]
}

fn unet_parity(case: &str) {
    let config = UNetConfig::load_binary(&fixture(&format!("{case}.config.json"))).unwrap();
    let weights = weights_of(case);
    let io = Io(fixture(&format!("{case}.io.safetensors")));
    let (want, _) = io.get("output");
    let (t, _) = io.get("timestep");
    for (name, device) in devices() {
        let w = Weights::from_safetensors(case, &weights, &device).unwrap();
        let unet = UNet2DConditionModel::load(&w, &config).unwrap();
        let out = unet.forward(io.tensor("sample", &device), t[0], &io.tensor("context", &device));
        let diff = max_abs_diff(out, &want);
        assert!(diff <= MODEL_TOLERANCE, "{case} on {name}: max abs diff {diff}");
        eprintln!("{case} on {name}: max abs diff {diff:.2e}");
    }
}

#[test]
fn unet_with_conv_projections_matches_diffusers() {
    unet_parity("unet_conv_proj");
}

#[test]
fn unet_with_linear_projections_and_per_block_heads_matches_diffusers() {
    unet_parity("unet_linear_proj");
}

#[test]
fn vae_matches_diffusers() {
    let config = VaeConfig::load_binary(&fixture("vae.config.json")).unwrap();
    let weights = weights_of("vae");
    let io = Io(fixture("vae.io.safetensors"));
    let (mean, _) = io.get("latent_mean");
    let want_latents: Vec<f32> = mean.iter().map(|m| m * config.scaling_factor).collect();
    let (want_decoded, _) = io.get("decoded");
    for (name, device) in devices() {
        let w = Weights::from_safetensors("vae", &weights, &device).unwrap();
        let encoder = VaeEncoder::load(&w, &config).unwrap();
        let diff = max_abs_diff(encoder.encode(io.tensor("image", &device)), &want_latents);
        assert!(diff <= MODEL_TOLERANCE, "VAE encode on {name}: max abs diff {diff}");
        let decoder = VaeDecoder::load(&w, &config).unwrap();
        let latents: Tensor<4> = io.tensor("latents", &device);
        let diff = max_abs_diff(decoder.decode(latents.mul_scalar(config.scaling_factor)), &want_decoded);
        assert!(diff <= MODEL_TOLERANCE, "VAE decode on {name}: max abs diff {diff}");
    }
}

/// diffusers' `enable_tiling()` with 8-latent (32-pixel) tiles on 14 × 10 latents: 3 × 2 tiles,
/// the last row and column cut short, blended across their overlaps.
#[test]
fn tiled_vae_matches_diffusers() {
    let config = VaeConfig::load_binary(&fixture("vae.config.json")).unwrap();
    let weights = weights_of("vae");
    let io = Io(fixture("vae.io.safetensors"));
    let (mean, _) = io.get("tiled_latent_mean");
    let want_latents: Vec<f32> = mean.iter().map(|m| m * config.scaling_factor).collect();
    let (want_decoded, _) = io.get("tiled_decoded");
    for (name, device) in devices() {
        let w = Weights::from_safetensors("vae", &weights, &device).unwrap();
        let decoder = VaeDecoder::load(&w, &config).unwrap();
        let latents: Tensor<4> = io.tensor("tiled_latents", &device);
        let decoded = decoder.decode_tiled(latents.clone().mul_scalar(config.scaling_factor), 8);
        let decode_diff = max_abs_diff(decoded, &want_decoded);
        assert!(decode_diff <= MODEL_TOLERANCE, "tiled VAE decode on {name}: max abs diff {decode_diff}");
        // Tiling changes the result (each tile normalises alone), so this is not an untiled pass.
        let untiled = max_abs_diff(decoder.decode(latents.mul_scalar(config.scaling_factor)), &want_decoded);
        assert!(untiled > 100.0 * MODEL_TOLERANCE, "untiled decode is as close as the tiled one ({untiled})");
        let encoder = VaeEncoder::load(&w, &config).unwrap();
        let encode_diff = max_abs_diff(encoder.encode_tiled(io.tensor("tiled_decoded", &device), 8), &want_latents);
        assert!(encode_diff <= MODEL_TOLERANCE, "tiled VAE encode on {name}: max abs diff {encode_diff}");
        eprintln!(
            "tiled VAE on {name}: decode {decode_diff:.2e}, encode {encode_diff:.2e}; untiled decode differs by {untiled:.3}"
        );
    }
}

/// A head wider than burn's fused attention kernel takes (SD's VAE attends in one 512-wide
/// head) runs the explicit product; on every device it equals burn's fused op on the CPU.
#[test]
fn wide_head_attention_matches_the_fused_op_on_every_device() {
    use adcanvas::nn::attention::{FUSED_ATTENTION_MAX_HEAD_DIM, scaled_dot_product_attention};
    use burn::tensor::module::attention;
    let d = FUSED_ATTENTION_MAX_HEAD_DIM + 8;
    let mut state = 0x2545_f491_u32;
    let mut tensor = |tokens: usize| {
        let values: Vec<f32> = (0..2 * tokens * d)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
            })
            .collect();
        TensorData::new(values, [1, 2, tokens, d])
    };
    let (q, k, v) = (tensor(37), tensor(23), tensor(23));
    let cpu = Device::flex();
    let on = |data: &TensorData, device: &Device| Tensor::<4>::from_data(data.clone(), device);
    let fused = attention(on(&q, &cpu), on(&k, &cpu), on(&v, &cpu), None, None, Default::default());
    let want: Vec<f32> = fused.into_data().try_to_vec().unwrap();
    for (name, device) in devices() {
        let diff = max_abs_diff(scaled_dot_product_attention(on(&q, &device), on(&k, &device), on(&v, &device)), &want);
        assert!(diff <= 1e-5, "{d}-wide attention on {name}: max abs diff {diff}");
        eprintln!("{d}-wide attention on {name}: {diff:.2e}");
    }
}

#[test]
fn tiny_vae_matches_diffusers() {
    use adcanvas::vae::tiny::{TinyDecoder, TinyEncoder, TinyVaeConfig};
    let config = TinyVaeConfig::load_binary(&fixture("tiny_vae.config.json")).unwrap();
    let weights = fixture("tiny_vae.weights.safetensors");
    let io = Io(fixture("tiny_vae.io.safetensors"));
    let (raw, _) = io.get("latents_raw");
    let want_latents: Vec<f32> = raw.iter().map(|v| v * config.scaling_factor).collect();
    let (want_decoded, _) = io.get("decoded");
    for (name, device) in devices() {
        let w = Weights::from_safetensors("tiny_vae", &weights, &device).unwrap();
        let encoder = TinyEncoder::load(&w, &config).unwrap();
        let diff = max_abs_diff(encoder.encode(io.tensor("image", &device)), &want_latents);
        assert!(diff <= MODEL_TOLERANCE, "tiny VAE encode on {name}: max abs diff {diff}");
        let decoder = TinyDecoder::load(&w, &config).unwrap();
        let latents: Tensor<4> = io.tensor("latents", &device);
        let diff = max_abs_diff(decoder.decode(latents.mul_scalar(config.scaling_factor)), &want_decoded);
        assert!(diff <= MODEL_TOLERANCE, "tiny VAE decode on {name}: max abs diff {diff}");
    }
}

/// The decoder with our product-condition branch against `training/condition_decoder.py` (the
/// mask-guided blend of diffusers' `MaskConditionDecoder`, for TAESD), with a soft-edged mask;
/// with no product given it must decode exactly as the plain decoder.
#[test]
fn conditioned_tiny_decoder_matches_its_reference() {
    use adcanvas::vae::tiny::{ProductPixels, TinyDecoder, TinyVaeConfig};
    let config = TinyVaeConfig::load_binary(&fixture("tiny_vae_condition.config.json")).unwrap();
    assert!(config.mask_condition);
    let weights = fixture("tiny_vae_condition.weights.safetensors");
    let io = Io(fixture("tiny_vae_condition.io.safetensors"));
    let (want, _) = io.get("decoded");
    let (plain, _) = io.get("plain");
    for (name, device) in devices() {
        let w = Weights::from_safetensors("tiny_vae_condition", &weights, &device).unwrap();
        let decoder = TinyDecoder::load(&w, &config).unwrap();
        assert!(decoder.is_conditioned());
        let latents: Tensor<4> = io.tensor::<4>("latents", &device).mul_scalar(config.scaling_factor);
        let product = ProductPixels { image: io.tensor("image", &device), mask: io.tensor("mask", &device) };
        let diff = max_abs_diff(decoder.decode_with(latents.clone(), Some(&product)), &want);
        assert!(diff <= MODEL_TOLERANCE, "conditioned tiny decode on {name}: max abs diff {diff}");
        let diff = max_abs_diff(decoder.decode(latents.clone()), &plain);
        assert!(diff <= MODEL_TOLERANCE, "tiny decode without the product on {name}: max abs diff {diff}");
        // One tile as large as the image is no tiling; the product must still be read.
        let diff = max_abs_diff(decoder.decode_tiled_with(latents, 8, Some(&product)), &want);
        assert!(diff <= MODEL_TOLERANCE, "one-tile conditioned decode on {name}: max abs diff {diff}");
    }
}

#[test]
fn ddim_trace_matches_diffusers() {
    let config = SchedulerConfig::load_binary(&fixture("ddim.config.json")).unwrap();
    let io = Io(fixture("ddim.io.safetensors"));
    let (timesteps, _) = io.get("timesteps");
    let scheduler = DdimScheduler::new(&config, timesteps.len()).unwrap();
    let got: Vec<f32> = scheduler.timesteps().iter().map(|&t| t as f32).collect();
    assert_eq!(got, timesteps);
    let device = Device::flex();
    for (i, &t) in scheduler.timesteps().iter().enumerate() {
        // Each step starts from diffusers' own x_i, so the check is per step, not drift.
        let x = scheduler.step(io.tensor(&format!("eps{i}"), &device), t, io.tensor(&format!("x{i}"), &device));
        let (want, _) = io.get(&format!("x{}", i + 1));
        // 1e-6 relative to max(1, |x|): a few f32 ulps at the sample's magnitude.
        let got: Vec<f32> = x.into_data().try_to_vec().unwrap();
        let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs() / w.abs().max(1.0)).fold(0.0, f32::max);
        assert!(worst <= 1e-6, "DDIM step {i} (t = {t}): max relative diff {worst}");
    }
}

/// MEPA's special cases equal diffusers' processors on the same weights: one text prompt ==
/// `AttnProcessor2_0`; text + image prompt at λ = 0.7 == `IPAdapterAttnProcessor2_0`, without a
/// mask, with a full mask, and (empty mask) == the text-only output.
#[test]
fn mepa_special_cases_match_diffusers_processors() {
    use adcanvas::denoise::mepa::{MepaProcessor, region_mask};
    use adcanvas::nn::attention::{Attention, RegionPrompt};
    let weights = fixture("mepa.weights.safetensors");
    let io = Io(fixture("mepa.io.safetensors"));
    for (name, device) in devices() {
        let w = Weights::from_safetensors("mepa", &weights, &device).unwrap();
        let attn = Attention::load(&w, 32, 12, 2, 16, false)
            .unwrap()
            .with_processor(MepaProcessor::for_layer(&w, 12, 32).unwrap());
        assert!(attn.takes_image_prompt());
        let x: Tensor<3> = io.tensor("x", &device);
        let text: Tensor<3> = io.tensor("text", &device);
        let image: Tensor<3> = io.tensor("image", &device);
        let check = |label: &str, got: Tensor<3>, want: &str| {
            let (want, _) = io.get(want);
            let got: Vec<f32> = got.into_data().try_to_vec().unwrap();
            let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(diff <= MODEL_TOLERANCE, "MEPA {label} on {name}: max abs diff {diff}");
        };
        check("text only", attn.forward(x.clone(), Some(&text)), "standard");
        let with_image = |mask: Option<Tensor<3>>| {
            [RegionPrompt::everywhere(text.clone()), RegionPrompt { tokens: image.clone(), scale: 0.7, mask }]
        };
        check("text + image", attn.forward_prompts(x.clone(), &with_image(None)), "ip_scale_0_7");
        // Masks at the latent resolution (8×8) area-averaged to this layer's 4×4 queries.
        let full = region_mask(&Tensor::<4>::ones([2, 1, 8, 8], &device), 4, 4);
        check("full mask", attn.forward_prompts(x.clone(), &with_image(Some(full))), "ip_full_mask");
        let empty = region_mask(&Tensor::<4>::zeros([2, 1, 8, 8], &device), 4, 4);
        check("empty mask", attn.forward_prompts(x.clone(), &with_image(Some(empty))), "ip_empty_mask");
    }
}

#[test]
fn region_mask_is_an_area_average() {
    let device = Device::flex();
    // 4×4 mask, product in the top-left 3×3: 2×2 blocks cover 4, 2, 2, 1 product pixels.
    let mut values = vec![0f32; 16];
    for y in 0..3 {
        for x in 0..3 {
            values[y * 4 + x] = 1.0;
        }
    }
    let mask = Tensor::<4>::from_data(TensorData::new(values, [1, 1, 4, 4]), &device);
    let got: Vec<f32> = adcanvas::denoise::mepa::region_mask(&mask, 2, 2).into_data().try_to_vec().unwrap();
    assert_eq!(got, vec![1.0, 0.5, 0.5, 0.25]);
}

/// The MiniLM tokenizer (tokenizers crate on the model's tokenizer.json) gives exactly the
/// ids Python's transformers tokenizer gives.
#[test]
fn minilm_tokenizer_matches_transformers() {
    let tokenizer = adcanvas::encoders::text::PromptTokenizer::from_bytes(
        &std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_tokenizer.json")).unwrap(),
    )
    .unwrap();
    let want: std::collections::BTreeMap<String, Vec<u32>> =
        serde_json::from_slice(&fixture("minilm_tokens.json")).unwrap();
    assert_eq!(want.len(), 5);
    for (prompt, ids) in want {
        assert_eq!(tokenizer.encode(&prompt).unwrap(), ids, "prompt {prompt:?}");
    }
}

/// BertModel (the text encoder's architecture) equals transformers on random weights.
#[test]
fn bert_matches_transformers() {
    use adcanvas::encoders::text::{BertConfig, BertModel};
    let config = BertConfig::load_binary(&fixture("bert.config.json")).unwrap();
    let weights = fixture("bert.weights.safetensors");
    let io = Io(fixture("bert.io.safetensors"));
    let (ids, _) = io.get("input_ids");
    let ids: Vec<u32> = ids.iter().map(|&v| v as u32).collect();
    let (want, _) = io.get("last_hidden_state");
    for (name, device) in devices() {
        let w = Weights::from_safetensors("bert", &weights, &device).unwrap();
        let model = BertModel::load(&w, &config).unwrap();
        let got: Vec<f32> = model.forward(&ids, &device).unwrap().into_data().try_to_vec().unwrap();
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff <= MODEL_TOLERANCE, "BERT on {name}: max abs diff {diff}");
    }
}

/// The style-reference encoder equals transformers' `CLIPVisionModel` (weights saved under
/// `vision_model.` as real checkpoints spell them): last hidden state and the one before it.
#[test]
fn clip_vision_matches_transformers() {
    use adcanvas::encoders::image::{ImageEncoder, ImageEncoderConfig};
    let mut config = ImageEncoderConfig::load_binary(&fixture("clip_vision.config.json")).unwrap();
    let weights = fixture("clip_vision.weights.safetensors");
    let io = Io(fixture("clip_vision.io.safetensors"));
    for (name, device) in devices() {
        let w = Weights::from_safetensors("clip_vision", &weights, &device).unwrap();
        for (layer, want) in [(-1, "last"), (-2, "penultimate")] {
            config.hidden_layer = layer;
            let encoder = ImageEncoder::load(&w, &config).unwrap();
            let got: Vec<f32> = encoder.forward(io.tensor("pixels", &device)).into_data().try_to_vec().unwrap();
            let (want_v, shape) = io.get(want);
            assert_eq!(shape, vec![2, 17, 32]);
            let diff = got.iter().zip(&want_v).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(diff <= MODEL_TOLERANCE, "CLIP vision {want} on {name}: max abs diff {diff}");
        }
    }
}

/// The per-token projection equals diffusers' `IPAdapterFullImageProjection`.
#[test]
fn image_projection_matches_diffusers() {
    use adcanvas::denoise::mepa::ImageProjection;
    let weights = fixture("image_projection.weights.safetensors");
    let io = Io(fixture("image_projection.io.safetensors"));
    // The fixture holds the projection's own keys; the UNet stores it under this prefix.
    let prefixed = rename(&weights, "encoder_hid_proj.image_projection_layers.0.");
    for (name, device) in devices() {
        let w = Weights::from_safetensors("image_projection", &prefixed, &device).unwrap();
        let proj = ImageProjection::load(&w, 32, 24).unwrap().expect("projection present");
        let got: Vec<f32> = proj.forward(io.tensor("tokens", &device)).into_data().try_to_vec().unwrap();
        let (want, _) = io.get("output");
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff <= MODEL_TOLERANCE, "image projection on {name}: max abs diff {diff}");
    }
}

/// The UNet with MEPA in every cross-attention: text only == diffusers' standard processor;
/// text + image prompt at λ = 0.6 without region mask == diffusers' `IPAdapterAttnProcessor2_0`;
/// with a soft region mask == the MEPA processor the default model is trained with
/// (training/mepa.py); and an all-zero region mask == text only.
#[test]
fn unet_with_mepa_matches_diffusers_and_training() {
    use adcanvas::denoise::mepa::{Conditioning, ImagePrompt};
    let config = UNetConfig::load_binary(&fixture("mepa_unet.config.json")).unwrap();
    let weights = fixture("mepa_unet.weights.safetensors");
    let io = Io(fixture("mepa_unet.io.safetensors"));
    let (t, _) = io.get("timestep");
    let (scale, _) = io.get("scale");
    for (name, device) in devices() {
        let w = Weights::from_safetensors("mepa_unet", &weights, &device).unwrap();
        let unet = UNet2DConditionModel::load(&w, &config).unwrap();
        assert!(unet.takes_image_prompt());
        let run = |region: Option<Tensor<4>>, image: bool| {
            let cond = Conditioning {
                text: io.tensor("text", &device),
                text_scale: 1.0,
                image: image.then(|| ImagePrompt { tokens: io.tensor("image", &device), scale: scale[0], region }),
            };
            unet.forward_conditioned(io.tensor("sample", &device), t[0], &cond)
        };
        for (label, out, want) in [
            ("text only", run(None, false), "standard"),
            ("IP-Adapter", run(None, true), "ip_adapter"),
            ("region mask", run(Some(io.tensor("region", &device)), true), "mepa_region"),
            ("empty region", run(Some(Tensor::zeros([2, 1, 16, 16], &device)), true), "standard"),
        ] {
            let diff = max_abs_diff(out, &io.get(want).0);
            assert!(diff <= MODEL_TOLERANCE, "MEPA UNet {label} on {name}: max abs diff {diff}");
        }
    }
}

/// A safetensors file with `prefix` put before every key.
fn rename(bytes: &[u8], prefix: &str) -> Vec<u8> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> =
        st.tensors().into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)).collect();
    safetensors::serialize(views, None).unwrap()
}

/// diffusers' `ControlNetModel`: every down residual and the mid residual at scale 0.7
/// (`scripts/make_controlnet_fixtures.py`); a second config has linear projections,
/// per-block heads and BGR channel order.
#[test]
fn controlnet_matches_diffusers() {
    use adcanvas::denoise::controlnet::{ControlNetConfig, ControlNetModel};
    use adcanvas::denoise::mepa::Conditioning;
    for case in ["controlnet", "controlnet_linear_bgr"] {
        let config = ControlNetConfig::load_binary(&fixture(&format!("{case}.config.json"))).unwrap();
        let weights = fixture(&format!("{case}.weights.safetensors"));
        let io = Io(fixture(&format!("{case}.io.safetensors")));
        let (t, _) = io.get("timestep");
        let (scale, _) = io.get("scale");
        for (name, device) in devices() {
            let w = Weights::from_safetensors(case, &weights, &device).unwrap();
            let controlnet = ControlNetModel::load(&w, &config).unwrap();
            let cond = Conditioning::text(io.tensor("context", &device));
            let out =
                controlnet.forward(io.tensor("latents", &device), t[0], &cond, io.tensor("image", &device), scale[0]);
            assert_eq!(out.down.len(), 6, "{case}: one residual per skip connection");
            for (i, residual) in out.down.into_iter().enumerate() {
                let diff = max_abs_diff(residual, &io.get(&format!("down.{i}")).0);
                assert!(diff <= MODEL_TOLERANCE, "{case} down residual {i} on {name}: max abs diff {diff}");
            }
            let diff = max_abs_diff(out.mid, &io.get("mid").0);
            assert!(diff <= MODEL_TOLERANCE, "{case} mid residual on {name}: max abs diff {diff}");
        }
    }
}

/// The UNet adds the ControlNet's residuals as diffusers does (`down_block_additional_residuals`,
/// `mid_block_additional_residual`): our ControlNet's output fed to our UNet equals diffusers' chain.
#[test]
fn unet_with_controlnet_residuals_matches_diffusers() {
    use adcanvas::denoise::controlnet::{ControlNetConfig, ControlNetModel};
    use adcanvas::denoise::mepa::Conditioning;
    let cn_config = ControlNetConfig::load_binary(&fixture("controlnet.config.json")).unwrap();
    let cn_weights = fixture("controlnet.weights.safetensors");
    let cn_io = Io(fixture("controlnet.io.safetensors"));
    let config = UNetConfig::load_binary(&fixture("controlnet_unet.config.json")).unwrap();
    let weights = fixture("controlnet_unet.weights.safetensors");
    let io = Io(fixture("controlnet_unet.io.safetensors"));
    let (t, _) = io.get("timestep");
    let (scale, _) = cn_io.get("scale");
    cn_config.check_fits(&config).unwrap();
    for (name, device) in devices() {
        let controlnet =
            ControlNetModel::load(&Weights::from_safetensors("controlnet", &cn_weights, &device).unwrap(), &cn_config)
                .unwrap();
        let unet = UNet2DConditionModel::load(
            &Weights::from_safetensors("controlnet_unet", &weights, &device).unwrap(),
            &config,
        )
        .unwrap();
        let cond = Conditioning::text(io.tensor("context", &device));
        let residuals =
            controlnet.forward(cn_io.tensor("latents", &device), t[0], &cond, cn_io.tensor("image", &device), scale[0]);
        let sample: Tensor<4> = io.tensor("sample", &device);
        let diff = max_abs_diff(
            unet.forward_controlled(sample.clone(), t[0], &cond, Some(&residuals)),
            &io.get("controlled").0,
        );
        assert!(diff <= MODEL_TOLERANCE, "controlled UNet on {name}: max abs diff {diff}");
        let diff = max_abs_diff(unet.forward_controlled(sample, t[0], &cond, None), &io.get("plain").0);
        assert!(diff <= MODEL_TOLERANCE, "UNet without control on {name}: max abs diff {diff}");
    }
}

/// A ControlNet built for another UNet is refused with a reason, not a shape panic mid-run.
#[test]
fn controlnet_for_another_unet_is_refused() {
    use adcanvas::denoise::controlnet::ControlNetConfig;
    let cn_config = ControlNetConfig::load_binary(&fixture("controlnet.config.json")).unwrap();
    let other = UNetConfig::load_binary(&fixture("unet_conv_proj.config.json")).unwrap();
    let message = cn_config.check_fits(&other).unwrap_err().to_string();
    assert!(message.contains("another UNet"), "{message}");
}

fn clip_tokenizer(pad: &str) -> adcanvas::encoders::text::PromptTokenizer {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip_tokenizer");
    let vocab = std::fs::read(dir.join("vocab.json")).unwrap();
    let merges = std::fs::read_to_string(dir.join("merges.txt")).unwrap();
    let json = adcanvas::encoders::clip::clip_tokenizer_json(&vocab, &merges, pad, 77).unwrap();
    adcanvas::encoders::text::PromptTokenizer::fixed_length(&json, 77).unwrap()
}

/// The CLIP BPE tokenizer built from a `tokenizer/` folder equals transformers' `CLIPTokenizer`
/// (`scripts/make_clip_fixtures.py`): normalisation, CLIP's split, byte-level BPE, start/end
/// tokens, padding to 77 with SD 1.x's and SD 2.x's pad tokens, truncation of long prompts.
#[test]
fn clip_tokenizer_matches_transformers() {
    let cases: serde_json::Value = serde_json::from_slice(&fixture("clip_tokens.json")).unwrap();
    let prompts: Vec<String> = serde_json::from_value(cases["prompts"].clone()).unwrap();
    for (pad, key) in [("<|endoftext|>", "ids_pad_endoftext"), ("!", "ids_pad_exclamation")] {
        let tokenizer = clip_tokenizer(pad);
        let want: Vec<Vec<u32>> = serde_json::from_value(cases[key].clone()).unwrap();
        for (prompt, want) in prompts.iter().zip(want) {
            assert_eq!(tokenizer.encode(prompt).unwrap(), want, "prompt {prompt:?}, pad {pad:?}");
        }
    }
}

/// transformers' `CLIPTextModel`: causal attention, quick GELU, final layer norm.
#[test]
fn clip_text_model_matches_transformers() {
    use adcanvas::encoders::clip::{ClipTextConfig, ClipTextModel};
    let config = ClipTextConfig::load_binary(&fixture("clip_text.config.json")).unwrap();
    let weights = fixture("clip_text.weights.safetensors");
    let io = Io(fixture("clip_text.io.safetensors"));
    let (ids, shape) = io.get("input_ids");
    let (want, _) = io.get("last_hidden_state");
    let (batch, tokens) = (shape[0], shape[1]);
    let row = want.len() / batch;
    for (name, device) in devices() {
        let model =
            ClipTextModel::load(&Weights::from_safetensors("clip_text", &weights, &device).unwrap(), &config).unwrap();
        for b in 0..batch {
            let seq: Vec<u32> = ids[b * tokens..(b + 1) * tokens].iter().map(|&v| v as u32).collect();
            let got: Vec<f32> = model.forward(&seq, &device).unwrap().into_data().try_to_vec().unwrap();
            let diff = got.iter().zip(&want[b * row..(b + 1) * row]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(diff <= MODEL_TOLERANCE, "CLIP text prompt {b} on {name}: max abs diff {diff}");
        }
    }
}

/// The runtime's pseudo-depth (`src/depth.rs`) equals the training side's (`training/depth.py`,
/// SciPy's exact distance transform; `scripts/make_depth_fixture.py`) on an irregular soft mask
/// that touches the border: the depth ControlNet sees at run time the maps it was trained on.
#[test]
fn pseudo_depth_matches_the_training_pipeline() {
    let io = Io(fixture("pseudo_depth.safetensors"));
    let (alpha, shape) = io.get("alpha");
    let (want, _) = io.get("depth");
    let got = adcanvas::input::depth::pseudo_depth(&alpha, shape[1], shape[0]);
    let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(diff <= 1e-6, "pseudo-depth differs from training/depth.py by {diff}");
    assert!(want.iter().any(|&d| d > 0.99) && want.iter().filter(|&&d| d == 0.0).count() > want.len() / 4);
}
