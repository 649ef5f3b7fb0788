//! End to end at a tiny size: the committed demo pack, on burn's CPU device and on
//! wgpu (Mesa lavapipe in CI), through layout → encode → denoise → decode → composite.

use std::collections::BTreeMap;
use std::path::Path;

use adcanvas::gpu::{DeviceChoice, open_device};
use adcanvas::model::{Model, create_demo_pack};
use adcanvas::pack::{Manifest, read_pack_dir};
use adcanvas::pipeline::{GenerateOptions, Generated, PipelineError, generate, prepare_product};
use adcanvas::weights::ModelError;
use burn::tensor::Device;

const PRODUCT_32: &[u8] = include_bytes!("fixtures/product_alpha_32.png");
const PRODUCT_WHITE: &[u8] = include_bytes!("fixtures/product_white.jpg");

fn pack_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/default"))
}

fn load_default(device: &Device) -> Model {
    let (manifest, files) = read_pack_dir(pack_dir()).expect("models/default is readable");
    Model::from_pack(manifest, &files, device).expect("models/default loads")
}

fn tiny_options(seed: u64) -> GenerateOptions {
    GenerateOptions { prompt: "a jar on a marble table".into(), width: 64, height: 64, steps: 2, seed, ..Default::default() }
}

fn run(model: &Model, photo: &[u8], options: &GenerateOptions) -> Generated {
    let product = prepare_product(photo).expect("fixture prepares");
    pollster::block_on(generate(model, &product, options, &mut |_, _| true)).expect("generation succeeds")
}

fn gpu_device() -> Device {
    pollster::block_on(open_device(DeviceChoice::Gpu))
        .expect("a wgpu adapter (in CI: Mesa lavapipe from mesa-vulkan-drivers; scripts/setup.sh installs it)")
}

/// Product pixels (mask == 1) are bit-identical to the placed product; the rest is generated.
fn assert_composite_exact(g: &Generated) {
    let mut solid = 0;
    for (i, (out, placed)) in g.image.pixels().zip(g.placed.rgba.pixels()).enumerate() {
        if g.placed.mask[i] == 1.0 {
            assert_eq!(out.0[..3], placed.0[..3], "product pixel {i} changed");
            solid += 1;
        } else if g.placed.mask[i] == 0.0 {
            assert_eq!(out.0, g.background.get_pixel(i as u32 % g.image.width(), i as u32 / g.image.width()).0, "background pixel {i}");
        }
    }
    assert!(solid > 100, "the fixture should place many solid product pixels, got {solid}");
}

fn assert_background_not_constant(g: &Generated) {
    let mut colours = std::collections::HashSet::new();
    for (i, px) in g.image.pixels().enumerate() {
        if g.placed.mask[i] == 0.0 {
            colours.insert(px.0);
        }
    }
    assert!(colours.len() > 8, "background has only {} distinct colours", colours.len());
}

#[test]
fn committed_demo_pack_is_what_the_script_makes() {
    let (made, files) = create_demo_pack(20261126, &Device::flex()).unwrap();
    let committed = Manifest::parse(&std::fs::read(pack_dir().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(made, committed, "models/default differs from `adcanvas demo-model --seed 20261126`");
    for (component, bytes) in files {
        committed.verify(&component, &bytes).unwrap();
    }
}

#[test]
fn cpu_end_to_end_is_exact_and_deterministic() {
    let model = load_default(&Device::flex());
    assert!(!model.manifest.trained);
    assert_eq!(model.manifest.label, "untrained demo model");
    let a = run(&model, PRODUCT_32, &tiny_options(7));
    assert_eq!((a.image.width(), a.image.height()), (64, 64));
    assert_eq!((a.placement.x, a.placement.y, a.placement.w, a.placement.h), (16, 16, 32, 32));
    assert_composite_exact(&a);
    assert_background_not_constant(&a);
    let b = run(&model, PRODUCT_32, &tiny_options(7));
    assert_eq!(a.image.as_raw(), b.image.as_raw(), "same seed and inputs must give the same image");
    let c = run(&model, PRODUCT_32, &tiny_options(8));
    assert_ne!(a.image.as_raw(), c.image.as_raw(), "another seed should give another background");
}

#[test]
fn cpu_end_to_end_with_automatic_mask() {
    let model = load_default(&Device::flex());
    let g = run(&model, PRODUCT_WHITE, &tiny_options(3));
    assert_composite_exact(&g);
}

#[test]
fn gpu_matches_cpu_within_tolerance() {
    let cpu = run(&load_default(&Device::flex()), PRODUCT_32, &tiny_options(11));
    let gpu_model = load_default(&gpu_device());
    let gpu = run(&gpu_model, PRODUCT_32, &tiny_options(11));
    assert_composite_exact(&gpu);
    // Stated tolerance: the decoded backgrounds agree to within 2/255 per channel
    // (f32 reductions run in another order on the GPU).
    let max_diff = cpu
        .background
        .as_raw()
        .iter()
        .zip(gpu.background.as_raw())
        .map(|(a, b)| (*a as i16 - *b as i16).unsigned_abs())
        .max()
        .unwrap();
    assert!(max_diff <= 2, "CPU and GPU backgrounds differ by {max_diff}/255");
    let again = run(&gpu_model, PRODUCT_32, &tiny_options(11));
    assert_eq!(gpu.image.as_raw(), again.image.as_raw(), "GPU run is deterministic for a seed");
}

#[test]
fn cancel_stops_after_the_current_step() {
    let model = load_default(&Device::flex());
    let product = prepare_product(PRODUCT_32).unwrap();
    let mut calls = 0;
    let options = GenerateOptions { steps: 5, ..tiny_options(1) };
    let result = pollster::block_on(generate(&model, &product, &options, &mut |step, total| {
        calls += 1;
        assert_eq!(total, 5);
        step < 2
    }));
    assert_eq!(result.unwrap_err(), PipelineError::Cancelled);
    assert_eq!(calls, 2);
}

#[test]
fn size_must_fit_the_model() {
    let model = load_default(&Device::flex());
    let product = prepare_product(PRODUCT_32).unwrap();
    let options = GenerateOptions { width: 72, height: 72, ..tiny_options(1) };
    let err = pollster::block_on(generate(&model, &product, &options, &mut |_, _| true)).unwrap_err();
    assert!(err.to_string().contains("multiple of 16"), "{err}");
}

fn files_with(component: &str, bytes: Vec<u8>) -> (Manifest, BTreeMap<String, Vec<u8>>) {
    let (manifest, mut files) = read_pack_dir(pack_dir()).unwrap();
    files.insert(component.to_string(), bytes);
    (manifest, files)
}

#[test]
fn truncated_model_file_is_refused_clearly() {
    let (manifest, files) = read_pack_dir(pack_dir()).unwrap();
    let truncated = files["unet"][..files["unet"].len() / 2].to_vec();
    let (manifest2, files2) = files_with("unet", truncated);
    let err = Model::from_pack(manifest2, &files2, &Device::flex()).err().unwrap();
    assert!(matches!(err, ModelError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("damaged or truncated"), "{err}");
    drop((manifest, files));
}

#[test]
fn wrong_model_file_is_refused_by_checksum() {
    let (_, files) = read_pack_dir(pack_dir()).unwrap();
    let mut wrong = files["vae"].clone();
    let last = wrong.len() - 1;
    wrong[last] ^= 0x55;
    let (manifest, files) = files_with("vae", wrong);
    let err = Model::from_pack(manifest, &files, &Device::flex()).err().unwrap();
    assert!(matches!(err, ModelError::Checksum { .. }), "{err:?}");
}

#[test]
fn swapped_model_files_are_refused_by_name_or_shape() {
    // A file that passes the checksum but belongs to another component: rewrite the
    // manifest so the VAE entry points at the UNet's bytes.
    let (mut manifest, files) = read_pack_dir(pack_dir()).unwrap();
    let unet_entry = manifest.files["unet"].clone();
    manifest.files.insert("vae".into(), unet_entry);
    let mut files = files;
    files.insert("vae".into(), files["unet"].clone());
    let err = Model::from_pack(manifest, &files, &Device::flex()).err().unwrap();
    assert!(matches!(err, ModelError::Missing { .. } | ModelError::Shape { .. }), "{err:?}");
}

#[test]
fn bad_manifest_is_refused() {
    assert!(Manifest::parse(b"{").is_err());
    let err = Manifest::parse(br#"{"format":"adcanvas-pack","format_version":99}"#).unwrap_err();
    assert!(err.to_string().contains("format_version 99 is not supported"), "{err}");
}
