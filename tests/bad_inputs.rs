//! The bad-input suite (issue 21): every kind of photo, mask, style reference, prompt and model
//! pack a seller or a hostile file may hand the studio, each answered with a clear message (or
//! taken, where a real photo is only unusual), never a panic. The files are
//! `tests/fixtures/bad/` (`scripts/make_bad_inputs.py`); the browser walks the same photos through
//! the page in `tests/e2e/app.test.mjs`.

use std::path::Path;

use adcanvas::encoders::reference::Reference;
use adcanvas::error::ModelError;
use adcanvas::model::Model;
use adcanvas::pack::read_pack_dir;
use adcanvas::pipeline::{GenerateOptions, generate, prepare_product, prepare_product_with_mask};
use burn::tensor::Device;

fn fixture(name: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let path = if root.join("bad").join(name).exists() { root.join("bad").join(name) } else { root.join(name) };
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What the studio must say about a photo: taken (at this working size), or refused with words
/// that tell the seller what happened and what to do.
enum Expect {
    Taken { size: (u32, u32), cutout: bool },
    Refused(&'static [&'static str]),
}
use Expect::{Refused, Taken};

const PHOTOS: &[(&str, Expect)] = &[
    ("empty.jpg", Refused(&["file is empty", "PNG, JPEG or WebP"])),
    ("truncated.jpg", Refused(&["damaged or incomplete", "ends early", "exporting it again"])),
    ("text_named.jpg", Refused(&["not a PNG, JPEG or WebP image", "export the photo"])),
    // A PNG named .jpg is read by its content, not its name.
    ("png_named.jpg", Taken { size: (96, 72), cutout: false }),
    ("cmyk.jpg", Taken { size: (96, 72), cutout: false }),
    ("grey.png", Taken { size: (96, 72), cutout: false }),
    ("grey16.png", Taken { size: (96, 72), cutout: false }),
    ("grey_alpha.png", Taken { size: (96, 72), cutout: false }),
    ("palette.png", Taken { size: (96, 72), cutout: false }),
    // The transparent palette entry is the background: a cut-out.
    ("palette_transparent.png", Taken { size: (96, 72), cutout: true }),
    ("animated.gif", Refused(&["not a PNG, JPEG or WebP image"])),
    // An animated WebP gives its first frame.
    ("animated.webp", Taken { size: (96, 72), cutout: false }),
    // EXIF orientation 6: stored 96 × 72 on its side, used upright.
    ("exif_rotated_product.jpg", Taken { size: (72, 96), cutout: false }),
    ("tiny_8x8.png", Taken { size: (8, 8), cutout: false }),
    ("huge_12000x9000.jpg", Refused(&["12000×9000 pixels", "largest accepted", "Resize the photo"])),
    ("transparent.png", Refused(&["fully transparent", "nothing in it"])),
    ("busy.jpg", Refused(&["not plain enough"])),
];

#[test]
fn every_bad_photo_is_taken_or_refused_with_a_reason() {
    for (name, expect) in PHOTOS {
        let result = prepare_product(&fixture(name));
        match (expect, result) {
            (Taken { size, cutout }, Ok(product)) => {
                assert_eq!(product.image.rgba.dimensions(), *size, "{name}: working size");
                assert_eq!(product.image.has_alpha, *cutout, "{name}: cut-out or photo");
                let area = product.mask.area_fraction();
                assert!(area > 0.05 && area < 0.95, "{name}: the product covers {area} of the photo");
            }
            (Refused(words), Err(e)) => {
                let msg = e.to_string();
                for w in *words {
                    assert!(msg.contains(w), "{name}: the message lacks {w:?}: {msg}");
                }
            }
            (Taken { .. }, Err(e)) => panic!("{name} should be taken, was refused: {e}"),
            (Refused(_), Ok(_)) => panic!("{name} should be refused, was taken"),
        }
    }
}

/// A decompression bomb: a PNG or a JPEG whose header declares 9000 × 9000 pixels (within the
/// pixel limit) over a few bytes of data, refused from its length before any pixel buffer.
#[test]
fn a_decompression_bomb_is_refused_before_allocation() {
    // (The PNG form, a header declaring 9000 × 9000 over an 11-byte IDAT, is `input::image_io`'s
    // unit test `refuses_oversized_from_header`.)
    // A 3 KB photo whose frame header says 9000 × 9000 (found by fuzzing: the decoder spent
    // seconds and 324 MB filling it in).
    let mut jpeg = fixture("product_white.jpg");
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline JPEG");
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0x23, 0x28, 0x23, 0x28]); // height, width: 9000
    let msg = prepare_product(&jpeg).unwrap_err().to_string();
    assert!(msg.contains("cannot hold the 9000×9000 pixels its header declares"), "{msg}");
}

#[test]
fn every_bad_mask_is_refused_with_a_reason() {
    let photo = fixture("product_white.jpg");
    let cases: &[(&str, &[&str])] = &[
        ("mask_empty.png", &["No product found", "mask is empty"]),
        ("mask_full.png", &["fills the whole photo", "no background to replace"]),
        ("mask_wrong_size.png", &["80×120 pixels but the photo is 160×120", "photo's size"]),
        ("text_named.jpg", &["not a PNG, JPEG or WebP image"]),
        ("truncated.jpg", &["damaged or incomplete"]),
    ];
    for (name, words) in cases {
        let msg = prepare_product_with_mask(&photo, &fixture(name)).unwrap_err().to_string();
        for w in *words {
            assert!(msg.contains(w), "mask {name}: the message lacks {w:?}: {msg}");
        }
    }
    // The mask that belongs to the photo is taken.
    prepare_product_with_mask(&photo, &fixture("product_white_mask.png")).unwrap();
}

#[test]
fn every_bad_style_reference_is_refused_with_a_reason() {
    let cases: &[(&str, &[&str])] = &[
        ("empty.jpg", &["file is empty"]),
        ("truncated.jpg", &["damaged or incomplete"]),
        ("text_named.jpg", &["not a PNG, JPEG or WebP image"]),
        ("animated.gif", &["not a PNG, JPEG or WebP image"]),
        ("huge_12000x9000.jpg", &["12000×9000 pixels"]),
        ("transparent.png", &["fully transparent"]),
    ];
    for (name, words) in cases {
        let msg = match Reference::from_bytes(&fixture(name)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("style reference {name} should be refused"),
        };
        for w in *words {
            assert!(msg.contains(w), "style reference {name}: the message lacks {w:?}: {msg}");
        }
    }
    // A plain photo used whole (no foreground to hide) is taken, however unusual its format.
    for name in ["cmyk.jpg", "grey16.png", "palette.png", "animated.webp"] {
        Reference::whole(&fixture(name)).unwrap_or_else(|e| panic!("{name} as a whole reference: {e}"));
    }
}

fn default_pack() -> (adcanvas::pack::Manifest, std::collections::BTreeMap<String, Vec<u8>>) {
    read_pack_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default")).unwrap()
}

/// Prompts of 10 000 characters, of control characters only, and of mixed scripts and emoji
/// make ads (the tokenizer truncates to the model's context); the product stays exact.
#[test]
fn any_prompt_makes_an_ad() {
    let (manifest, files) = default_pack();
    let model = Model::from_pack(manifest, &files, &Device::flex()).unwrap();
    let product = prepare_product(&fixture("product_alpha_32.png")).unwrap();
    let long = "a teapot on a marble counter, ".repeat(334);
    assert!(long.chars().count() >= 10_000);
    for prompt in [long.as_str(), "\u{0}\u{7}\u{1b}[2J\r\n\t\u{7f}", "茶壶 🫖 on the beach\u{200b}\u{202e}", ""] {
        let options =
            GenerateOptions { width: 64, height: 64, steps: 2, seed: 3, prompt: prompt.into(), ..Default::default() };
        let ad = pollster::block_on(generate(&model, &product, None, &options, &mut |_, _| true))
            .unwrap_or_else(|e| panic!("prompt {:?}…: {e}", prompt.chars().take(20).collect::<String>()));
        assert_eq!(ad.image.dimensions(), (64, 64));
    }
}

/// Packs whose manifest lies about the model (shapes, sizes, block lists) are refused with a
/// message naming what does not fit, never a panic or an attempt to allocate what it claims.
#[test]
fn a_manifest_that_lies_about_the_model_is_refused() {
    let (manifest, files) = default_pack();
    use serde_json::{Value, json};
    let lies: &[(&str, &str, Value)] = &[
        ("wider UNet blocks", "/unet/block_out_channels", json!([64, 128, 256])),
        ("no UNet blocks", "/unet/block_out_channels", json!([])),
        ("no VAE encoder blocks", "/vae/encoder_block_out_channels", json!([])),
        ("no VAE decoder blocks", "/vae/num_decoder_blocks", json!([])),
        ("one VAE block", "/vae/decoder_block_out_channels", json!([32])),
        ("zero norm groups", "/unet/norm_num_groups", json!(0)),
        ("a huge sample size", "/unet/sample_size", json!(u64::MAX / 2)),
        ("a huge context width", "/unet/cross_attention_dim", json!(1u64 << 40)),
        ("more layers per block", "/unet/layers_per_block", json!(3)),
        ("no attention heads", "/unet/attention_head_dim", json!(0)),
        ("another file size", "/files/unet/bytes", json!(1)),
        ("another ControlNet width", "/controlnet/block_out_channels", json!([8, 8])),
        ("no latent channels", "/vae/latent_channels", json!(0)),
        ("ControlNet heads that do not divide", "/controlnet/attention_head_dim", json!(7)),
        ("uneven norm groups", "/unet/norm_num_groups", json!(7)),
    ];
    let original: Value = serde_json::from_str(&manifest.to_json()).unwrap();
    for (what, pointer, value) in lies {
        let mut edited = original.clone();
        *edited.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer} is not in the manifest")) = value.clone();
        let m = match adcanvas::pack::Manifest::parse(edited.to_string().as_bytes()) {
            Ok(m) => m,
            Err(e) => {
                assert!(!e.to_string().is_empty(), "{what}: an empty message");
                println!("{what}: {e}");
                continue;
            }
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Model::from_pack(m, &files, &Device::flex()).map(|_| ())
        }));
        match result {
            Ok(Err(e)) => {
                let msg = e.to_string();
                println!("{what}: {msg}");
                assert!(!msg.is_empty(), "{what}: an empty message");
                assert!(
                    !matches!(e, ModelError::Io(_)),
                    "{what}: refused as an I/O error, not as a pack that does not fit: {msg}"
                );
            }
            Ok(Ok(())) => panic!("a manifest with {what} was loaded"),
            Err(_) => panic!("a manifest with {what} made the loader panic"),
        }
    }
}

/// Generation options as a hostile page could send them (the web glue casts whatever JavaScript
/// gives it: NaN, infinities, huge counts): each refused with a sentence before any work, or, where
/// the value is harmless, an ad. Never a panic.
#[test]
fn hostile_generation_options_are_refused_or_harmless() {
    let (manifest, files) = default_pack();
    let model = Model::from_pack(manifest, &files, &Device::flex()).unwrap();
    let product = prepare_product(&fixture("product_alpha_32.png")).unwrap();
    let base = GenerateOptions { width: 64, height: 64, steps: 1, seed: 1, ..Default::default() };
    let cases: Vec<(&str, GenerateOptions)> = vec![
        ("no steps", GenerateOptions { steps: 0, ..base.clone() }),
        ("a billion steps", GenerateOptions { steps: 1_000_000_000, ..base.clone() }),
        ("a zero width", GenerateOptions { width: 0, ..base.clone() }),
        ("a 5000 px side", GenerateOptions { width: 5000, ..base.clone() }),
        ("a side off the model's multiple", GenerateOptions { width: 65, ..base.clone() }),
        ("a NaN fill", GenerateOptions { fill: f32::NAN, ..base.clone() }),
        ("an infinite position", GenerateOptions { position: f32::INFINITY, ..base.clone() }),
        ("a NaN guidance", GenerateOptions { guidance_scale: f32::NAN, ..base.clone() }),
        (
            "a NaN refining strength",
            GenerateOptions { width: 128, height: 128, refine_strength: Some(f32::NAN), ..base.clone() },
        ),
        (
            "a refining strength of 2",
            GenerateOptions { width: 128, height: 128, refine_strength: Some(2.0), ..base.clone() },
        ),
        // At twice the model's size the refining pass runs, and checks its strength.
        (
            "a NaN refining strength at 512²",
            GenerateOptions { width: 512, height: 512, refine_strength: Some(f32::NAN), ..base.clone() },
        ),
        ("a one-pixel VAE tile", GenerateOptions { vae_tile: Some(1), ..base.clone() }),
        ("a huge VAE tile", GenerateOptions { vae_tile: Some(usize::MAX), ..base.clone() }),
        ("a NaN depth scale", GenerateOptions { depth_scale: f32::NAN, ..base.clone() }),
        ("a NaN text weight", GenerateOptions { text_weight: f32::NAN, ..base.clone() }),
        ("an infinite guidance", GenerateOptions { guidance_scale: f32::INFINITY, ..base.clone() }),
        ("previews every step", GenerateOptions { preview_every: 1, ..base.clone() }),
        ("previews every 10⁹ steps", GenerateOptions { preview_every: 1_000_000_000, ..base.clone() }),
    ];
    for (what, options) in cases {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pollster::block_on(generate(&model, &product, None, &options, &mut |_, _| true))
        }));
        match run {
            Err(_) => panic!("{what}: generate panicked"),
            Ok(Err(e)) => {
                let msg = e.to_string();
                println!("{what}: {msg}");
                assert!(msg.len() > 10, "{what}: {msg:?} says nothing");
            }
            Ok(Ok(ad)) => {
                println!("{what}: an ad");
                assert!(ad.image.pixels().all(|p| p.0[3] == 255), "{what}: an ad with holes in it");
            }
        }
    }
}
