//! What each fuzz target does with one input, shared by the fuzzer (`fuzz/fuzz_targets/*.rs`,
//! `scripts/fuzz.sh`) and by the test that replays the seed corpora and every crash ever found
//! (`tests/fuzz_corpus.rs`), so CI checks the same code paths in seconds.
//!
//! A target may return early on input the studio refuses (that is the point: a clear error), but
//! must never panic, hang or allocate without bound: those are the bugs the fuzzer hunts.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use adcanvas::input::image_io::DecodedImage;
use adcanvas::input::layout::{LayoutOptions, place_product, render_placed};
use adcanvas::input::mask::{MaskOptions, ProductMask, decontaminate_edges, given_mask, product_mask};
use adcanvas::model::{Model, create_demo_pack};
use adcanvas::pack::weights::{Init, QuantizedWeights, Weights};
use adcanvas::pack::{Manifest, component_file};
use adcanvas::pfv::{PfvConfig, TokenMode, apply_to_tokens, patch_visibility};
use adcanvas::pipeline::{prepare_product, prepare_product_with_mask};
use burn::tensor::Device;

/// Every target by name, as `scripts/fuzz.sh` and the corpus test call them.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("photo", photo),
    ("photo_with_mask", photo_with_mask),
    ("mask_layout_pfv", mask_layout_pfv),
    ("manifest", manifest),
    ("weights", weights),
    ("tokenizer", tokenizer),
    ("prompt", prompt),
];

/// A product photo as uploaded: decode (EXIF orientation, limits, downscale), automatic mask,
/// layout on a 256² canvas, the placed product, PFV on it.
pub fn photo(data: &[u8]) {
    let Ok(product) = prepare_product(data) else { return };
    let _ = product.cutout();
    place_and_hide(&product.image, &product.mask, 256, 256, 0.6, 0.5);
}

/// A photo with the user's own (or the brush's) mask: `[photo length: u32 LE][photo][mask]`.
pub fn photo_with_mask(data: &[u8]) {
    let Some((photo, mask)) = split(data) else { return };
    let Ok(product) = prepare_product_with_mask(photo, mask) else { return };
    place_and_hide(&product.image, &product.mask, 192, 128, 0.9, 0.0);
}

/// The stages after decoding, on pixels and settings the decoder would never produce:
/// `[w, h, flags, morph, tolerance, feather, canvas w (2), canvas h (2), fill (4), position (4),
/// patch, threshold, token cols, token rows][RGBA…]` (the pixels repeat to fill w × h).
pub fn mask_layout_pfv(data: &[u8]) {
    if data.len() < 20 {
        return;
    }
    let (head, pixels) = data.split_at(20);
    let (w, h) = (u32::from(head[0] % 64) + 1, u32::from(head[1] % 64) + 1);
    let n = (w * h) as usize * 4;
    let raw: Vec<u8> = if pixels.is_empty() { vec![255; n] } else { pixels.iter().copied().cycle().take(n).collect() };
    let rgba = image::RgbaImage::from_raw(w, h, raw).expect("w × h × 4 bytes");
    let img = DecodedImage { rgba, has_alpha: head[2] & 1 == 1, original_size: (w, h) };
    let opts = MaskOptions {
        tolerance: f32::from(head[4]) / 255.0,
        max_border_spread: if head[2] & 2 == 2 { 1.0 } else { 0.1 },
        morph_radius: u32::from(head[3] % 5),
        min_area_fraction: if head[2] & 4 == 4 { 0.0 } else { 0.001 },
        feather_px: f32::from(head[5]) / 16.0,
    };
    let mask = match product_mask(&img, &opts) {
        Ok(mask) => mask,
        // The same photo as its own mask: white/opaque = product.
        Err(_) => match given_mask(&img, &img) {
            Ok(mask) => mask,
            Err(_) => return,
        },
    };
    let mut decontaminated = img.rgba.clone();
    decontaminate_edges(&mut decontaminated, &mask);
    let canvas_w = u32::from(u16::from_le_bytes([head[6], head[7]]));
    let canvas_h = u32::from(u16::from_le_bytes([head[8], head[9]]));
    let fill = f32::from_le_bytes([head[10], head[11], head[12], head[13]]);
    let position = f32::from_le_bytes([head[14], head[15], head[16], head[17]]);
    // Canvases past the studio's limit are refused by the layout; keep the rest cheap to render.
    if u64::from(canvas_w) * u64::from(canvas_h) <= 1 << 18 || canvas_w > 4096 || canvas_h > 4096 {
        place_and_hide(&img, &mask, canvas_w, canvas_h, fill, position);
    }
    let cfg = PfvConfig { patch: u32::from(head[18] % 40), threshold: f32::from(head[19]) / 200.0 };
    if let Ok(grid) = patch_visibility(&mask.alpha, mask.width, mask.height, &cfg) {
        let _ = grid.pixel_mask(mask.width, mask.height);
        let mut copy = img.rgba.clone();
        grid.apply_to_image(&mut copy, [127, 127, 127, 255]);
        let (cols, rows) = (u32::from(head[0] / 16) + 1, u32::from(head[1] / 16) + 1);
        let keep = grid.token_keep(cols, rows);
        let tokens = vec![1.0f32; keep.len() * 3];
        let _ = apply_to_tokens(&tokens, 3, &keep, if head[2] & 8 == 8 { TokenMode::Drop } else { TokenMode::Zero });
    }
}

/// A model pack's `manifest.json` (its configs included) against the tiny pack's files: parsed,
/// checked, and the model built when the manifest passes, as loading a pack does.
pub fn manifest(data: &[u8]) {
    let Ok(manifest) = Manifest::parse(data) else { return };
    let _ = manifest.to_json();
    let _ = manifest.f32_weight_bytes();
    let (_, files) = tiny_pack();
    let _ = Model::from_pack(manifest, files, &Device::flex());
}

/// A pack's weight file whose manifest agrees with it (the right size and hash): the UNet's
/// safetensors replaced by the input, read f32, dequantised, and kept quantised.
pub fn weights(data: &[u8]) {
    let (tiny_manifest, files) = tiny_pack();
    let device = Device::flex();
    // Every tensor the file names, at its own shape and as the flat vector of its values.
    if let Ok(tensors) = safetensors::SafeTensors::deserialize(data) {
        let w = Weights::from_safetensors("unet.safetensors", data, &device).expect("parsed above");
        let keep = Weights::from_safetensors("unet.safetensors", data, &device)
            .expect("parsed above")
            .with_quantized(QuantizedWeights::Keep);
        for (name, view) in tensors.tensors() {
            let shape = view.shape().to_vec();
            if shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).is_none_or(|n| n > 1 << 20) {
                continue;
            }
            let _ = w.values(&name, &shape, Init::Zeros);
            let n: usize = shape.iter().product();
            let _ = w.values(&name, &[n], Init::Zeros);
            if let [a, b] = shape[..] {
                let _ = keep.param(&name, [a, b], Init::Zeros);
            }
        }
    }
    let mut manifest = tiny_manifest.clone();
    manifest.files.insert("unet".into(), component_file("unet.safetensors", data, "q8"));
    let mut files = files.clone();
    files.insert("unet".into(), data.to_vec());
    let _ = Model::from_pack(manifest, &files, &device);
}

/// A pack's `tokenizer.json`, then a prompt through it.
pub fn tokenizer(data: &[u8]) {
    use adcanvas::encoders::text::PromptTokenizer;
    if let Ok(t) = PromptTokenizer::from_bytes(data) {
        let _ = t.encode("a teapot on a marble counter, soft light");
    }
    if let Ok(t) = PromptTokenizer::fixed_length(data, 77) {
        let _ = t.encode("a teapot on a marble counter, soft light");
    }
}

/// What a seller types (any bytes, as text) through the shipped model's own tokenizer.
pub fn prompt(data: &[u8]) {
    use adcanvas::encoders::text::PromptTokenizer;
    static SHIPPED: OnceLock<PromptTokenizer> = OnceLock::new();
    let t = SHIPPED.get_or_init(|| {
        PromptTokenizer::from_bytes(include_bytes!("../models/default/tokenizer.json")).expect("the shipped tokenizer")
    });
    let text = String::from_utf8_lossy(data);
    if let Ok(ids) = t.encode(&text) {
        assert!(ids.len() <= 128, "prompts are truncated to 128 tokens, got {}", ids.len());
    }
}

fn place_and_hide(img: &DecodedImage, mask: &ProductMask, canvas_w: u32, canvas_h: u32, fill: f32, position: f32) {
    let layout = LayoutOptions { canvas_w, canvas_h, fill, allow_upscale: false, position };
    let Ok(p) = place_product(mask, &layout) else { return };
    let _ = p.halved();
    let placed = render_placed(img, mask, &p);
    let _ = patch_visibility(&placed.mask, p.canvas_w, p.canvas_h, &PfvConfig::default());
}

fn split(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = data.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// A pack as small as the pipeline allows (seeded random weights, the demo model's topology at
/// 8 and 16 channels), made once: loading it takes a millisecond, so the fuzzer spends its time on
/// what the manifest and files say rather than on hashing and building a large model.
pub fn tiny_pack() -> &'static (Manifest, BTreeMap<String, Vec<u8>>) {
    use adcanvas::denoise::unet::{UNet2DConditionModel, UNetConfig};
    use adcanvas::vae::{VaeConfig, VaeDecoder, VaeEncoder};
    static PACK: OnceLock<(Manifest, BTreeMap<String, Vec<u8>>)> = OnceLock::new();
    PACK.get_or_init(|| {
        let device = Device::flex();
        let (mut manifest, _) = create_demo_pack(20261206, &device).expect("the demo pack");
        let unet_cfg = UNetConfig {
            sample_size: 8,
            block_out_channels: vec![8, 16],
            cross_attention_dim: 8,
            norm_num_groups: 4,
            ..UNetConfig::demo()
        };
        let vae_cfg = VaeConfig { block_out_channels: vec![4, 8], norm_num_groups: 4, ..VaeConfig::demo() };
        let vae_cfg = VaeConfig {
            down_block_types: vae_cfg.down_block_types[..2].to_vec(),
            up_block_types: vae_cfg.up_block_types[..2].to_vec(),
            ..vae_cfg
        };
        let (unet_w, unet_made) = Weights::random(1, &device);
        UNet2DConditionModel::load(&unet_w, &unet_cfg).expect("tiny UNet");
        let (vae_w, vae_made) = Weights::random(2, &device);
        VaeEncoder::load(&vae_w, &vae_cfg).expect("tiny VAE encoder");
        VaeDecoder::load(&vae_w, &vae_cfg).expect("tiny VAE decoder");
        let unet = unet_made.lock().unwrap().to_safetensors();
        let vae = vae_made.lock().unwrap().to_safetensors();
        manifest.unet = unet_cfg;
        manifest.vae = vae_cfg.into();
        manifest.files.insert("unet".into(), component_file("unet.safetensors", &unet, "f32"));
        manifest.files.insert("vae".into(), component_file("vae.safetensors", &vae, "f32"));
        let files = BTreeMap::from([("unet".to_string(), unet), ("vae".to_string(), vae)]);
        Model::from_pack(manifest.clone(), &files, &device).expect("the tiny pack loads");
        (manifest, files)
    })
}
