//! `adcanvas convert` on a diffusers folder written by `save_pretrained`
//! (tests/fixtures/diffusers_tiny, the parity UNet and VAE): the pack reproduces diffusers.

use std::path::{Path, PathBuf};

use adcanvas::gpu::{DeviceChoice, open_device};
use adcanvas::model::Model;
use adcanvas::pack::convert::{PackDtype, convert_diffusers, convert_diffusers_with, is_token_embedding};
use adcanvas::pack::read_pack_dir;
use adcanvas::pack::weights::QuantizedWeights;
use adcanvas::pipeline::{GenerateOptions, generate, prepare_product};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::SafeTensors;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adcanvas-convert-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn io(name: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(root().join("tests/parity/unet_conv_proj.io.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor(name).unwrap();
    (v.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(), v.shape().to_vec())
}

/// The pack's UNet output on the parity fixture's inputs.
fn unet_output(pack: &Path, device: &Device, quantized: QuantizedWeights) -> Vec<f32> {
    let (manifest, files) = read_pack_dir(pack).unwrap();
    let model = Model::from_pack_with(manifest, &files, device, quantized).unwrap();
    let (sample, s) = io("sample");
    let (context, c) = io("context");
    let (t, _) = io("timestep");
    let sample = Tensor::<4>::from_data(TensorData::new(sample, [s[0], s[1], s[2], s[3]]), device);
    let context = Tensor::<3>::from_data(TensorData::new(context, [c[0], c[1], c[2]]), device);
    model.unet.forward(sample, t[0], &context).into_data().try_to_vec().unwrap()
}

fn unet_max_diff(pack: &Path) -> f32 {
    let (want, _) = io("output");
    let got = unet_output(pack, &Device::flex(), QuantizedWeights::Expand);
    got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

#[test]
fn f32_pack_reproduces_diffusers_and_generates() {
    let out = out_dir("f32");
    let report = convert_diffusers(
        &root().join("tests/fixtures/diffusers_tiny"),
        &out,
        PackDtype::F32,
        Some("tiny".into()),
        true,
    )
    .unwrap();
    assert!(report.manifest.trained);
    assert_eq!(report.manifest.files["unet"].dtype, "f32");
    let diff = unet_max_diff(&out);
    assert!(diff <= 1e-4, "converted f32 UNet differs from diffusers by {diff}");

    // The converted pack drives the whole pipeline (VAE factor 4 × UNet factor 2 → 8 px steps).
    let (manifest, files) = read_pack_dir(&out).unwrap();
    let model = Model::from_pack(manifest, &files, &Device::flex()).unwrap();
    let product = prepare_product(include_bytes!("fixtures/product_alpha_32.png")).unwrap();
    let options = GenerateOptions { width: 48, height: 48, steps: 1, ..Default::default() };
    let g = pollster::block_on(generate(&model, &product, None, &options, &mut |_, _| true)).unwrap();
    assert_eq!((g.image.width(), g.image.height()), (48, 48));
}

#[test]
fn f16_pack_is_half_the_size_and_close() {
    let f32_out = out_dir("f32b");
    let f16_out = out_dir("f16");
    let src = root().join("tests/fixtures/diffusers_tiny");
    convert_diffusers(&src, &f32_out, PackDtype::F32, None, false).unwrap();
    let report = convert_diffusers(&src, &f16_out, PackDtype::F16, None, true).unwrap();
    let size = |dir: &Path| std::fs::metadata(dir.join("unet.safetensors")).unwrap().len() as f64;
    let ratio = size(&f16_out) / size(&f32_out);
    assert!((0.45..0.55).contains(&ratio), "f16/f32 size ratio {ratio}");
    assert_eq!(report.manifest.files["unet"].dtype, "f16");
    // Stated tolerance for f16 weights on this small random UNet: 1e-2 max-abs.
    let diff = unet_max_diff(&f16_out);
    assert!(diff <= 1e-2, "f16 UNet differs from diffusers by {diff}");
}

#[test]
fn quantised_packs_are_smaller_and_close() {
    let src = root().join("tests/fixtures/diffusers_tiny");
    let f32_out = out_dir("f32q");
    convert_diffusers(&src, &f32_out, PackDtype::F32, None, false).unwrap();
    let size = |dir: &Path| std::fs::metadata(dir.join("unet.safetensors")).unwrap().len() as f64;
    // Stated tolerances on this small random UNet (outputs of magnitude ~1): q8 3e-2, q4 3e-1
    // max-abs. Sizes include the f16 scales and the many tensors of this tiny model that are
    // too small to quantise (f16), so the ratios are above the ideal 0.27 and 0.14.
    for (dtype, name, max_ratio, tol) in [(PackDtype::Q8, "q8", 0.4, 3e-2), (PackDtype::Q4, "q4", 0.3, 3e-1)] {
        let out = out_dir(name);
        let report = convert_diffusers(&src, &out, dtype, None, true).unwrap();
        assert_eq!(report.manifest.files["unet"].dtype, name);
        let ratio = size(&out) / size(&f32_out);
        eprintln!("{name}: size ratio to f32 {ratio:.3}");
        assert!(ratio < max_ratio, "{name}/f32 size ratio {ratio}");
        let diff = unet_max_diff(&out);
        assert!(diff <= tol, "{name} UNet differs from diffusers by {diff}");
        assert!(diff > 0.0, "{name} should not be lossless");
    }
}

/// Weights kept quantised on the device (expanded layer by layer) are the pack's own values:
/// the UNet gives what the load-time expansion gives, on the CPU and on wgpu.
#[test]
fn quantised_weights_kept_on_the_device_give_the_same_output() {
    let src = root().join("tests/fixtures/diffusers_tiny");
    let gpu = pollster::block_on(open_device(DeviceChoice::Gpu)).expect("a wgpu adapter (lavapipe in CI)");
    for (dtype, name) in [(PackDtype::Q8, "q8k"), (PackDtype::Q4, "q4k")] {
        let out = out_dir(name);
        convert_diffusers(&src, &out, dtype, None, false).unwrap();
        let (manifest, files) = read_pack_dir(&out).unwrap();
        let kept = Model::from_pack_with(manifest.clone(), &files, &Device::flex(), QuantizedWeights::Keep).unwrap();
        let expanded = Model::from_pack_with(manifest, &files, &Device::flex(), QuantizedWeights::Expand).unwrap();
        assert_eq!((kept.quantized, expanded.quantized), (QuantizedWeights::Keep, QuantizedWeights::Expand));
        // This tiny model keeps many small tensors in f16 (expanded either way), so the
        // device saving is below the ideal 1/4 (q8) and 1/8 (q4) of f32.
        let ratio = kept.device_weight_bytes as f64 / expanded.device_weight_bytes as f64;
        eprintln!(
            "{name}: device weights kept {} B, expanded {} B ({ratio:.3})",
            kept.device_weight_bytes, expanded.device_weight_bytes
        );
        assert!(ratio < 0.65, "{name}: keeping quantised weights should shrink the device weights, ratio {ratio}");
        for (device_name, device) in [("cpu", Device::flex()), ("gpu", gpu.clone())] {
            let expanded = unet_output(&out, &device, QuantizedWeights::Expand);
            let kept = unet_output(&out, &device, QuantizedWeights::Keep);
            let diff = kept.iter().zip(&expanded).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            eprintln!("{name} on {device_name}: kept vs expanded max diff {diff:e}");
            assert!(
                diff <= 1e-5,
                "{name} on {device_name}: kept quantised weights differ from expanded ones by {diff}"
            );
        }
    }
}

#[test]
fn text_encoder_must_fit_the_unet() {
    // The parity BERT (24 wide) beside the tiny UNet (cross_attention_dim 12).
    let (src, te) = tiny_with("te-src", "text_encoder");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("tests/parity/bert.config.json")).unwrap()).unwrap();
    cfg["model_type"] = "bert".into();
    std::fs::write(te.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    std::fs::copy(root().join("tests/parity/bert.weights.safetensors"), te.join("model.safetensors")).unwrap();
    let err = convert_diffusers(&src, &out_dir("te1"), PackDtype::F32, None, false).unwrap_err();
    assert!(err.to_string().contains("no tokenizer/tokenizer.json"), "{err}");
    std::fs::create_dir_all(src.join("tokenizer")).unwrap();
    std::fs::copy(root().join("tests/fixtures/minilm_tokenizer.json"), src.join("tokenizer/tokenizer.json")).unwrap();
    let err = convert_diffusers(&src, &out_dir("te2"), PackDtype::F32, None, false).unwrap_err();
    assert!(err.to_string().contains("24 wide but the UNet's cross_attention_dim is 12"), "{err}");
}

#[test]
fn refuses_what_it_cannot_convert() {
    let err =
        convert_diffusers(&root().join("tests/fixtures"), &out_dir("x"), PackDtype::F32, None, false).unwrap_err();
    assert!(err.to_string().contains("no model_index.json"), "{err}");

    // A copy of the fixture whose UNet asks for an unsupported option.
    let src = out_dir("src");
    copy_dir(&root().join("tests/fixtures/diffusers_tiny"), &src);
    let cfg_path = src.join("unet/config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["addition_embed_type"] = "text_time".into();
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let err = convert_diffusers(&src, &out_dir("y"), PackDtype::F32, None, false).unwrap_err();
    assert!(err.to_string().contains("addition_embed_type"), "{err}");

    // Pickled weights are refused with advice.
    let vae = src.join("vae");
    std::fs::rename(vae.join("diffusion_pytorch_model.safetensors"), vae.join("diffusion_pytorch_model.bin")).unwrap();
    cfg["addition_embed_type"] = serde_json::Value::Null;
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let err = convert_diffusers(&src, &out_dir("z"), PackDtype::F32, None, false).unwrap_err();
    assert!(err.to_string().contains("safe_serialization=True"), "{err}");
}

/// A diffusers folder with a `controlnet/` beside the UNet it was built for converts into a pack
/// whose ControlNet reproduces diffusers; a ControlNet for another UNet is refused by name.
#[test]
fn controlnet_converts_and_must_fit_the_unet() {
    use adcanvas::denoise::mepa::Conditioning;
    let parity = root().join("tests/parity");
    let (src, cn) = tiny_with("cn-src", "controlnet");
    std::fs::copy(parity.join("controlnet.config.json"), cn.join("config.json")).unwrap();
    std::fs::copy(parity.join("controlnet.weights.safetensors"), cn.join("diffusion_pytorch_model.safetensors"))
        .unwrap();
    // diffusers_tiny's UNet is 16/32 wide; this ControlNet copies an 8/16 one.
    let err = convert_diffusers(&src, &out_dir("cn1"), PackDtype::F32, None, false).unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("controlnet/:") && message.contains("built for another UNet"), "{message}");

    std::fs::copy(parity.join("controlnet_unet.config.json"), src.join("unet/config.json")).unwrap();
    std::fs::copy(
        parity.join("controlnet_unet.weights.safetensors"),
        src.join("unet/diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    // A control image 8× the latents does not fit this VAE (4×).
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(cn.join("config.json")).unwrap()).unwrap();
    let good = cfg.clone();
    cfg["conditioning_embedding_out_channels"] = serde_json::json!([4, 8, 8, 8]);
    std::fs::write(cn.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let err = convert_diffusers(&src, &out_dir("cn3"), PackDtype::F32, None, false).unwrap_err();
    assert!(err.to_string().contains("8× the latent size, but the VAE's images are 4× its latents"), "{err}");
    std::fs::write(cn.join("config.json"), serde_json::to_vec(&good).unwrap()).unwrap();
    let out = out_dir("cn2");
    let report = convert_diffusers(&src, &out, PackDtype::F32, None, true).unwrap();
    assert!(report.manifest.controlnet.is_some() && report.manifest.files.contains_key("controlnet"));
    let device = Device::flex();
    let (manifest, files) = read_pack_dir(&out).unwrap();
    let model = Model::from_pack(manifest, &files, &device).unwrap();
    let controlnet = model.controlnet.as_ref().expect("the pack's ControlNet loads");
    let io_bytes = std::fs::read(parity.join("controlnet.io.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&io_bytes).unwrap();
    let get = |name: &str| -> (Vec<f32>, Vec<usize>) {
        let v = st.tensor(name).unwrap();
        (v.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(), v.shape().to_vec())
    };
    let t4 = |name: &str| {
        let (v, s) = get(name);
        Tensor::<4>::from_data(TensorData::new(v, [s[0], s[1], s[2], s[3]]), &device)
    };
    let (context, c) = get("context");
    let cond = Conditioning::text(Tensor::<3>::from_data(TensorData::new(context, [c[0], c[1], c[2]]), &device));
    let out = controlnet.forward(t4("latents"), get("timestep").0[0], &cond, t4("image"), get("scale").0[0]);
    let got: Vec<f32> = out.mid.into_data().try_to_vec().unwrap();
    let diff = got.iter().zip(&get("mid").0).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(diff <= 1e-4, "converted ControlNet's mid residual differs from diffusers by {diff}");
}

/// An SD-style folder (CLIP text encoder, `tokenizer/vocab.json` + `merges.txt`) converts into
/// a pack whose prompt context equals transformers' CLIP; missing tokenizer files are named.
#[test]
fn clip_text_encoder_converts_with_its_bpe_tokenizer() {
    let parity = root().join("tests/parity");
    let (src, te) = tiny_with("clip-src", "text_encoder");
    std::fs::copy(parity.join("clip_text.config.json"), te.join("config.json")).unwrap();
    std::fs::copy(parity.join("clip_text.weights.safetensors"), te.join("model.safetensors")).unwrap();
    let err = convert_diffusers(&src, &out_dir("clip1"), PackDtype::F32, None, false).unwrap_err();
    assert!(err.to_string().contains("CLIP text encoder but no tokenizer/vocab.json and merges.txt"), "{err}");

    copy_dir(&root().join("tests/fixtures/clip_tokenizer"), &src.join("tokenizer"));
    let out = out_dir("clip2");
    let report = convert_diffusers(&src, &out, PackDtype::F32, None, true).unwrap();
    assert!(report.notes.iter().any(|n| n.contains("CLIP BPE") && n.contains("77 tokens")), "{:?}", report.notes);
    let device = Device::flex();
    let (manifest, files) = read_pack_dir(&out).unwrap();
    let model = Model::from_pack(manifest, &files, &device).unwrap();
    let encoder = model.text_encoder.as_ref().expect("the pack's CLIP text encoder loads");
    let (prompt, want) = clip_context();
    let prompt = prompt.as_str();
    let got: Vec<f32> = encoder.encode(prompt, &device).unwrap().into_data().try_to_vec().unwrap();
    assert_eq!(got.len(), 77 * 12, "a CLIP context is 77 tokens");
    let diff = got.iter().zip(&want[..got.len()]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(diff <= 1e-4, "converted CLIP context differs from transformers by {diff}");

    // The pipeline runs with CLIP's 77-token contexts, and the prompt changes the picture.
    let product = prepare_product(include_bytes!("fixtures/product_alpha_32.png")).unwrap();
    let run = |prompt: &str| {
        let options = GenerateOptions { width: 48, height: 48, steps: 2, prompt: prompt.into(), ..Default::default() };
        pollster::block_on(generate(&model, &product, None, &options, &mut |_, _| true)).unwrap().image
    };
    assert!(model.prompt_used());
    assert_ne!(run(prompt).as_raw(), run("").as_raw(), "the prompt must reach the UNet");
}

/// `--embedding-dtype`: a q8 pack whose text encoder's token table is q4 (as the default model's):
/// the table is stored q4, no other tensor is, and the prompt context stays close to transformers'.
#[test]
fn token_embeddings_take_their_own_dtype() {
    let parity = root().join("tests/parity");
    let (src, te) = tiny_with("clip-emb-src", "text_encoder");
    copy_dir(&root().join("tests/fixtures/clip_tokenizer"), &src.join("tokenizer"));
    // The parity CLIP's table (2562 × 12) padded with 6 rows no token reaches, so that it comes in
    // whole blocks of 32 and is quantised (its layers are too small to be).
    let table = "text_model.embeddings.token_embedding.weight";
    let bytes = std::fs::read(parity.join("clip_text.weights.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut padded = st.tensor(table).unwrap().data().to_vec();
    assert_eq!(st.tensor(table).unwrap().dtype(), safetensors::Dtype::F32);
    padded.resize(padded.len() + 6 * 12 * 4, 0);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| match name == table {
            true => (name, safetensors::tensor::TensorView::new(view.dtype(), vec![2568, 12], &padded).unwrap()),
            false => (name, view),
        })
        .collect();
    std::fs::write(te.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(parity.join("clip_text.config.json")).unwrap()).unwrap();
    cfg["vocab_size"] = 2568.into();
    std::fs::write(te.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();

    let (prompt, want) = clip_context();
    let context_error = |out: &Path| -> f32 {
        let device = Device::flex();
        let (manifest, files) = read_pack_dir(out).unwrap();
        let model = Model::from_pack(manifest, &files, &device).unwrap();
        let got: Vec<f32> =
            model.text_encoder.unwrap().encode(&prompt, &device).unwrap().into_data().try_to_vec().unwrap();
        got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
    };

    let mixed = out_dir("clip-emb-q4");
    let report = convert_diffusers_with(&src, &mixed, PackDtype::Q8, PackDtype::Q4, None, true).unwrap();
    assert!(report.notes.iter().any(|n| n.contains("q8 (token embeddings q4)")), "{:?}", report.notes);
    assert!(report.manifest.provenance.ends_with("--dtype q8 --embedding-dtype q4"), "{}", report.manifest.provenance);
    let dtypes = |file: &str| -> Vec<(String, safetensors::Dtype)> {
        let bytes = std::fs::read(mixed.join(file)).unwrap();
        SafeTensors::deserialize(&bytes).unwrap().tensors().into_iter().map(|(n, v)| (n, v.dtype())).collect()
    };
    let q4: Vec<String> = dtypes("text_encoder.safetensors")
        .into_iter()
        .filter(|(_, d)| *d == safetensors::Dtype::U8)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(q4, [table], "only the token table is q4");
    assert!(is_token_embedding(table) && is_token_embedding("embeddings.word_embeddings.weight"));
    // The UNet is not the text encoder: q8 (and f16) as --dtype says.
    let unet = dtypes("unet.safetensors");
    assert!(unet.iter().any(|(_, d)| *d == safetensors::Dtype::I8));
    assert!(unet.iter().all(|(_, d)| *d != safetensors::Dtype::U8));

    let q8 = out_dir("clip-emb-q8");
    convert_diffusers(&src, &q8, PackDtype::Q8, None, false).unwrap();
    let (e8, e4) = (context_error(&q8), context_error(&mixed));
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    eprintln!("context max error: q8 {e8:.5}, q4 table {e4:.5} (outputs up to {scale:.2})");
    assert!(e8 < e4 && e4 <= 0.05 * scale, "q8 {e8}, q4 table {e4}, outputs up to {scale}");
}

/// A copy of tests/fixtures/diffusers_tiny named `name`, with an empty `component/` folder to fill:
/// (the copy, the component's folder).
fn tiny_with(name: &str, component: &str) -> (PathBuf, PathBuf) {
    let src = out_dir(name);
    copy_dir(&root().join("tests/fixtures/diffusers_tiny"), &src);
    let dir = src.join(component);
    std::fs::create_dir_all(&dir).unwrap();
    (src, dir)
}

/// The parity CLIP's context for `clip_tokens.json`'s second prompt, as transformers computed it.
fn clip_context() -> (String, Vec<f32>) {
    let parity = root().join("tests/parity");
    let cases: serde_json::Value =
        serde_json::from_slice(&std::fs::read(parity.join("clip_tokens.json")).unwrap()).unwrap();
    let bytes = std::fs::read(parity.join("clip_text.io.safetensors")).unwrap();
    let want = SafeTensors::deserialize(&bytes)
        .unwrap()
        .tensor("last_hidden_state")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (cases["prompts"][1].as_str().unwrap().to_string(), want)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
