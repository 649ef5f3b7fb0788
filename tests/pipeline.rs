//! End to end: the committed default model (trained, q8, MiniLM text encoder), on burn's
//! CPU device and on wgpu (Mesa lavapipe in CI), through text → layout → encode → denoise →
//! decode → composite; mostly at a tiny size, and once at the model's own size to check
//! that it follows the prompt.

use std::collections::BTreeMap;
use std::path::Path;

use adcanvas::denoise::scheduler::SchedulerKind;
use adcanvas::encoders::reference::{Reference, ReferenceOptions};
use adcanvas::error::ModelError;
use adcanvas::gpu::{DeviceChoice, open_device};
use adcanvas::model::{Model, create_demo_pack};
use adcanvas::pack::{Manifest, read_pack_dir};
use adcanvas::pipeline::{
    GenerateOptions, Generated, GuidancePartner, Half, InitImage, PipelineError, Product, SwapFuture, generate,
    generate_in_lockstep, prepare_product,
};
use adcanvas::vae::VaeModelConfig;
use burn::tensor::Device;

const PRODUCT_32: &[u8] = include_bytes!("fixtures/product_alpha_32.png");
const PRODUCT_WHITE: &[u8] = include_bytes!("fixtures/product_white.jpg");
const PRODUCT_128: &[u8] = include_bytes!("fixtures/product_alpha_128.png");
const REFERENCE_BEACH: &[u8] = include_bytes!("fixtures/reference_beach.png");
const REFERENCE_BEACH_MASK: &[u8] = include_bytes!("fixtures/reference_beach_mask.png");
const REFERENCE_STUDIO: &[u8] = include_bytes!("fixtures/reference_studio.png");
const REFERENCE_STUDIO_MASK: &[u8] = include_bytes!("fixtures/reference_studio_mask.png");

fn pack_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/default"))
}

fn load_default(device: &Device) -> Model {
    let (manifest, files) = read_pack_dir(pack_dir()).expect("models/default is readable");
    Model::from_pack(manifest, &files, device).expect("models/default loads")
}

/// The default model with its decoder's product-condition branch left out: it decodes from the
/// latents alone, so what the latents hold of the product shows.
fn load_default_latents_only(device: &Device) -> Model {
    let (mut manifest, files) = read_pack_dir(pack_dir()).expect("models/default is readable");
    match &mut manifest.vae {
        VaeModelConfig::Tiny(c) => c.mask_condition = false,
        VaeModelConfig::Kl(_) => panic!("the default model's VAE is an AutoencoderTiny"),
    }
    Model::from_pack(manifest, &files, device).expect("models/default loads")
}

fn tiny_options(seed: u64) -> GenerateOptions {
    GenerateOptions {
        prompt: "a jar on a marble table".into(),
        width: 64,
        height: 64,
        steps: 2,
        seed,
        ..Default::default()
    }
}

fn run(model: &Model, photo: &[u8], options: &GenerateOptions) -> Generated {
    run_with(model, photo, None, options)
}

fn run_with(model: &Model, photo: &[u8], reference: Option<&Reference>, options: &GenerateOptions) -> Generated {
    let product = prepare_product(photo).expect("fixture prepares");
    pollster::block_on(generate(model, &product, reference, options, &mut |_, _| true)).expect("generation succeeds")
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
            assert_eq!(
                out.0,
                g.background.get_pixel(i as u32 % g.image.width(), i as u32 / g.image.width()).0,
                "background pixel {i}"
            );
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
fn demo_pack_script_is_deterministic_and_loads() {
    let (made, files) = create_demo_pack(20261126, &Device::flex()).unwrap();
    let (again, files_again) = create_demo_pack(20261126, &Device::flex()).unwrap();
    assert_eq!(made, again);
    assert_eq!(files, files_again, "same seed, same bytes");
    assert!(!made.trained && made.text_encoder.is_none());
    let model = Model::from_pack(made, &files, &Device::flex()).unwrap();
    assert!(!model.prompt_used());
    let g = run(&model, PRODUCT_32, &tiny_options(7));
    assert_composite_exact(&g);
}

/// The whole model is one burn module: every weight of the pack is one of its parameters
/// (the token-embedding table aside: host memory, looked up row by row), all on the device it
/// was loaded on, and a copy of it moves to another device by burn's own `to_device`.
#[test]
fn the_default_model_is_one_burn_module_holding_every_pack_weight() {
    use burn::module::Module;
    let device = Device::flex();
    let model = load_default(&device);
    let (_, files) = read_pack_dir(pack_dir()).unwrap();
    let mut expected = 0;
    for (component, bytes) in files.iter().filter(|(c, _)| c.as_str() != "tokenizer") {
        let tensors = safetensors::SafeTensors::deserialize(bytes).unwrap_or_else(|e| panic!("{component}: {e}"));
        for (name, view) in tensors.tensors() {
            let host_table = name.ends_with("word_embeddings.weight") || name.ends_with("token_embedding.weight");
            if name.ends_with(adcanvas::pack::quant::SCALE_SUFFIX) || host_table {
                continue;
            }
            let n: usize = view.shape().iter().product();
            // q4 packs two values a byte.
            expected += if view.dtype() == safetensors::Dtype::U8 { 2 * n } else { n };
        }
    }
    assert_eq!(model.num_params(), expected, "burn's parameter count is not the pack's");
    assert_eq!(model.devices(), vec![device.clone()]);
    let moved = model.clone().to_device(&device);
    assert_eq!(moved.num_params(), expected);
    // burn's display of the module tree: every component, readable (shapes, not values).
    let shown = model.to_string();
    for part in ["UNet2DConditionModel", "ControlNetModel", "TextEncoder", "ImageEncoder", "Segmenter", "MepaProcessor"]
    {
        assert!(shown.contains(part), "burn's display of the model lacks {part}");
    }
    assert!(shown.len() < 1_000_000, "the model's display is {} bytes: some field prints its values", shown.len());
}

#[test]
fn default_pack_is_the_trained_model_within_budget() {
    let model = load_default(&Device::flex());
    let m = &model.manifest;
    assert!(m.trained, "models/default must be the trained model");
    assert!(model.prompt_used(), "the default model has a text encoder");
    assert_eq!(model.native_size(), 256);
    let total: u64 = m.files.values().map(|f| f.bytes).sum();
    assert!(total <= 50_000_000, "the default pack is {total} bytes; the budget is 50 MB");
    assert!(model.reference_encoder.is_some(), "the default model takes a style reference");
    assert!(model.controlnet.is_some(), "the default model carries a depth ControlNet");
    for (component, dtype) in
        [("unet", "q8"), ("vae", "q8"), ("image_encoder", "q8"), ("text_encoder", "q4"), ("controlnet", "q4")]
    {
        assert_eq!(m.files[component].dtype, dtype, "{component}");
    }
}

#[test]
fn cpu_end_to_end_is_exact_and_deterministic() {
    let model = load_default(&Device::flex());
    let a = run(&model, PRODUCT_32, &tiny_options(7));
    assert_eq!((a.image.width(), a.image.height()), (64, 64));
    assert_eq!((a.placement.x, a.placement.y, a.placement.w, a.placement.h), (16, 19, 32, 32));
    assert_composite_exact(&a);
    assert_background_not_constant(&a);
    let b = run(&model, PRODUCT_32, &tiny_options(7));
    assert_eq!(a.image.as_raw(), b.image.as_raw(), "same seed and inputs must give the same image");
    let c = run(&model, PRODUCT_32, &tiny_options(8));
    assert_ne!(a.image.as_raw(), c.image.as_raw(), "another seed should give another background");
    let d =
        run(&model, PRODUCT_32, &GenerateOptions { prompt: "on a sunny beach by the sea".into(), ..tiny_options(7) });
    assert_ne!(a.background.as_raw(), d.background.as_raw(), "another prompt should give another background");
}

/// Natively with two or more threads, the CPU runs guidance's two halves at once, one UNet call
/// each (pipeline/denoise.rs); on one thread they run one after the other, or as one batch of 2
/// when their token counts allow it (no prompt, a style reference). The same ads either way.
#[test]
fn cpu_guidance_halves_on_two_threads_give_the_one_thread_ads() {
    let model = load_default(&Device::flex());
    let beach = Reference::with_mask(REFERENCE_BEACH, REFERENCE_BEACH_MASK).unwrap();
    let referenced = GenerateOptions { prompt: String::new(), guidance_scale: 4.0, ..tiny_options(7) };
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
        pool.install(|| {
            (run(&model, PRODUCT_32, &tiny_options(7)), run_with(&model, PRODUCT_32, Some(&beach), &referenced))
        })
    };
    let (one, two) = (on(1), on(2));
    for (what, a, b) in [("a prompt", &one.0, &two.0), ("a style reference, no prompt", &one.1, &two.1)] {
        assert!(a.depth_used, "{what}: the ControlNet runs");
        let diff = a.image.as_raw().iter().zip(b.image.as_raw()).map(|(x, y)| x.abs_diff(*y)).max();
        assert!(diff <= Some(1), "{what}: two threads vs one, max channel difference {diff:?}");
    }
}

/// A posted half: its input's fingerprint and its values.
type Swap = (u32, Vec<f32>);

/// Two instances of the pipeline in one process, as the browser's two workers run it: each
/// guidance half's instance posts its half of a step and waits for the other's.
#[derive(Default)]
struct Mailbox {
    /// What each half's instance posted and the other has not taken yet, in order (a two-pass
    /// ad repeats step numbers).
    posted: std::cell::RefCell<[std::collections::VecDeque<Swap>; 2]>,
    waiting: std::cell::RefCell<Vec<std::task::Waker>>,
    /// One side's run has finished (the browser's workers then end their channel): the other's
    /// waiting swap fails instead of waiting for ever.
    ended: std::cell::Cell<bool>,
}

impl Mailbox {
    fn end(&self) {
        self.ended.set(true);
        self.waiting.borrow_mut().drain(..).for_each(|w| w.wake());
    }
}

struct Twin<'a> {
    half: Half,
    mailbox: &'a Mailbox,
    /// Corrupts the fingerprint sent (a partner on another photo or seed).
    diverged: bool,
    swaps: std::cell::Cell<usize>,
}

impl<'a> Twin<'a> {
    fn new(half: Half, mailbox: &'a Mailbox) -> Self {
        Twin { half, mailbox, diverged: false, swaps: Default::default() }
    }
}

impl GuidancePartner for Twin<'_> {
    fn half(&self) -> Half {
        self.half
    }

    fn exchange(&self, _step: usize, fingerprint: u32, mine: Vec<f32>) -> SwapFuture<'_> {
        let (own, other) = if self.half == Half::Conditional { (1, 0) } else { (0, 1) };
        let fingerprint = if self.diverged { !fingerprint } else { fingerprint };
        self.mailbox.posted.borrow_mut()[own].push_back((fingerprint, mine));
        self.mailbox.waiting.borrow_mut().drain(..).for_each(|w| w.wake());
        self.swaps.set(self.swaps.get() + 1);
        Box::pin(std::future::poll_fn(move |cx| match self.mailbox.posted.borrow_mut()[other].pop_front() {
            Some(theirs) => std::task::Poll::Ready(Ok(theirs)),
            None if self.mailbox.ended.get() => std::task::Poll::Ready(Err("the other side finished".into())),
            None => {
                self.mailbox.waiting.borrow_mut().push(cx.waker().clone());
                std::task::Poll::Pending
            }
        }))
    }
}

/// A partner that has stopped (its worker crashed or was closed).
struct Gone;

impl GuidancePartner for Gone {
    fn half(&self) -> Half {
        Half::Conditional
    }

    fn exchange(&self, _: usize, _: u32, _: Vec<f32>) -> SwapFuture<'_> {
        Box::pin(async { Err("the helper worker stopped".to_string()) })
    }
}

/// Both instances' runs in this thread, each polled until it waits for the other's half.
fn pair(
    model: &Model,
    product: &Product,
    options: &GenerateOptions,
    leader: &Twin,
    helper: &Twin,
) -> (Result<Generated, PipelineError>, Result<Generated, PipelineError>) {
    async fn run(
        model: &Model,
        product: &Product,
        options: &GenerateOptions,
        twin: &Twin<'_>,
    ) -> Result<Generated, PipelineError> {
        let out = generate_in_lockstep(model, product, None, options, Some(twin), &mut |_, _| true).await;
        twin.mailbox.end();
        out
    }
    pollster::block_on(futures_util::future::join(
        run(model, product, options, leader),
        run(model, product, options, helper),
    ))
}

/// The browser's two workers on the CPU (pipeline/partner.rs): each computes one guidance half
/// per step and they swap halves, so the ad is exactly the one instance's, in one and in two
/// passes; the helper's run ends once its share is done. A partner that began from other values
/// (another seed) or has stopped leaves the ad exactly as one instance makes it.
#[test]
fn lockstep_pair_makes_exactly_the_ad_one_instance_makes() {
    let model = load_default(&Device::flex());
    let product = prepare_product(PRODUCT_32).unwrap();
    let two_pass = GenerateOptions { width: 512, height: 512, steps: 2, ..tiny_options(5) };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a thread pool");
    pool.install(|| {
        let alone = |options: &GenerateOptions, partner: Option<&dyn GuidancePartner>| {
            pollster::block_on(generate_in_lockstep(&model, &product, None, options, partner, &mut |_, _| true))
        };
        for (what, options) in [("one pass", tiny_options(5)), ("two passes", two_pass)] {
            let one = alone(&options, None).expect("one instance");
            let mailbox = Mailbox::default();
            let (leader, helper) = (Twin::new(Half::Conditional, &mailbox), Twin::new(Half::Unconditional, &mailbox));
            let (ad, helped) = pair(&model, &product, &options, &leader, &helper);
            assert_eq!(helped.err(), Some(PipelineError::ShareDone), "{what}: the helper stops after its share");
            let ad = ad.expect("the pair's ad");
            let steps = if what == "two passes" { options.steps + 1 } else { options.steps };
            assert_eq!((leader.swaps.get(), helper.swaps.get()), (steps, steps), "{what}: one swap per step");
            assert!(ad.image == one.image, "{what}: the pair's ad is not one instance's");
            assert_composite_exact(&ad);
        }

        let options = tiny_options(5);
        let one = alone(&options, None).expect("one instance");
        let mailbox = Mailbox::default();
        let leader = Twin::new(Half::Conditional, &mailbox);
        let helper = Twin { diverged: true, ..Twin::new(Half::Unconditional, &mailbox) };
        let (ad, helped) = pair(&model, &product, &options, &leader, &helper);
        assert_eq!(helped.err(), Some(PipelineError::ShareDone), "a diverged helper stops once the ad is done");
        assert_eq!(leader.swaps.get(), 1, "the leader goes on alone after the first mismatch");
        assert!(ad.expect("the leader's ad").image == one.image, "a diverged helper changed the ad");
        let ad = alone(&options, Some(&Gone)).expect("an ad without the stopped helper");
        assert!(ad.image == one.image, "a stopped helper changed the ad");
    });
}

/// Every sampler runs the whole pipeline, Euler-Karras with its fractional timesteps included:
/// the product stays exact, and each sampler draws its own background from the same seed.
#[test]
fn every_sampler_generates_an_exact_composite() {
    let model = load_default(&Device::flex());
    let mut backgrounds = Vec::new();
    for kind in SchedulerKind::ALL {
        let g = run(&model, PRODUCT_32, &GenerateOptions { scheduler: kind, steps: 3, ..tiny_options(7) });
        assert_composite_exact(&g);
        assert_background_not_constant(&g);
        assert!(
            !backgrounds.iter().any(|(_, b)| b == g.background.as_raw()),
            "{kind} repeats another sampler's background"
        );
        backgrounds.push((kind, g.background.into_raw()));
    }
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
    let result = pollster::block_on(generate(&model, &product, None, &options, &mut |step, total| {
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
    let err = pollster::block_on(generate(&model, &product, None, &options, &mut |_, _| true)).unwrap_err();
    assert!(err.to_string().contains("multiple of 32"), "{err}");
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

/// Mean (r, g, b) of the generated background in rows `y0..y1`, product excluded.
fn band_mean(g: &Generated, y0: u32, y1: u32) -> [f64; 3] {
    let mut sum = [0f64; 3];
    let mut n = 0.0;
    let w = g.background.width();
    for y in y0..y1 {
        for x in 0..w {
            if g.placed.mask[(y * w + x) as usize] == 0.0 {
                let px = g.background.get_pixel(x, y);
                for (s, &v) in sum.iter_mut().zip(&px.0) {
                    *s += f64::from(v);
                }
                n += 1.0;
            }
        }
    }
    sum.map(|s| s / n)
}

#[test]
fn trained_model_follows_the_scene_in_the_prompt() {
    // At the model's own size and step count, the same seed for both prompts. A beach at
    // sunset has sea (blue) across the middle and sand (warm) at the bottom; a blue studio
    // has neither. Measured on 2026-11-26: beach bottom R−B = 55, middle B−R = 77;
    // studio bottom R−B = −6. The thresholds leave a margin of about 25 either way.
    let model = load_default(&Device::flex());
    let options = |prompt: &str| GenerateOptions {
        prompt: prompt.into(),
        width: 256,
        height: 256,
        steps: 20,
        seed: 5,
        guidance_scale: 4.0,
        ..Default::default()
    };
    let beach = run(&model, PRODUCT_WHITE, &options("a jar on the beach at sunset"));
    let studio = run(&model, PRODUCT_WHITE, &options("a jar in a blue photo studio"));
    assert_composite_exact(&beach);
    let (sand, sea) = (band_mean(&beach, 192, 256), band_mean(&beach, 96, 128));
    let floor = band_mean(&studio, 192, 256);
    assert!(sand[0] - sand[2] > 30.0, "beach bottom should be sand: {sand:?}");
    assert!(sea[2] - sea[0] > 30.0, "beach middle should be sea: {sea:?}");
    assert!((floor[0] - floor[2]).abs() < 30.0, "studio floor should not be sand: {floor:?}");
}

/// The default pack's text encoder (GPTQ q4 layers, q4 token table) against the real
/// all-MiniLM-L6-v2 in f32 (transformers; tests/parity/minilm_hidden.safetensors from
/// scripts/make_minilm_fixture.py). Stated bounds: cosine similarity ≥ 0.95 per token and max-abs
/// ≤ 0.5 (hidden values are O(1); these prompts come to 0.963 and 0.41, with q8 layers they came
/// to 0.996 and 0.15; ads stay within 35–45 dB PSNR of an f32 text encoder's, the same pictures:
/// BENCHMARKS.md 2026-12-07 13:00); and for the empty prompt, the unconditional half of every
/// ad's guidance that training/quantize_gptq.py weights for that reason, ≥ 0.99 and ≤ 0.25
/// (0.996 and 0.16).
#[test]
fn default_text_encoder_stays_close_to_minilm() {
    let model = load_default(&Device::flex());
    let encoder = model.text_encoder.as_ref().expect("the default pack has a text encoder");
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/parity/minilm_hidden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let prompts = [
        "a teapot on a marble counter, soft morning light",
        "Studio shot: perfume bottle on a PODIUM, pastel gradient background!",
        "Café table by the sea — summer vibes, 50% off",
        "",
        "dried leaves, linen fabric & concrete; golden-hour",
    ];
    let f32s = |name: &str| -> Vec<f32> {
        st.tensor(name).unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    };
    let (mut worst_cos, mut worst_abs) = (1f32, 0f32);
    let (mut empty_cos, mut empty_abs) = (1f32, 0f32);
    for (k, prompt) in prompts.iter().enumerate() {
        let want = f32s(&format!("hidden_{k}"));
        let got: Vec<f32> = encoder.encode(prompt, &model.device).unwrap().into_data().try_to_vec().unwrap();
        assert_eq!(got.len(), want.len(), "token count for {prompt:?}");
        for (g, w) in got.chunks(384).zip(want.chunks(384)) {
            let dot: f32 = g.iter().zip(w).map(|(a, b)| a * b).sum();
            let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
            let (cos, abs) =
                (dot / (norm(g) * norm(w)), g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max));
            (worst_cos, worst_abs) = (worst_cos.min(cos), worst_abs.max(abs));
            if prompt.is_empty() {
                (empty_cos, empty_abs) = (empty_cos.min(cos), empty_abs.max(abs));
            }
        }
    }
    eprintln!(
        "the pack's MiniLM vs f32: worst token cosine {worst_cos}, max abs {worst_abs}; empty prompt {empty_cos}, {empty_abs}"
    );
    assert!(worst_cos >= 0.95 && worst_abs <= 0.5, "cosine {worst_cos}, max abs {worst_abs}");
    assert!(empty_cos >= 0.99 && empty_abs <= 0.25, "empty prompt: cosine {empty_cos}, max abs {empty_abs}");
}

/// Mean RGB of the generated background (pixels with no product at all).
fn background_mean(g: &Generated) -> [f32; 3] {
    let mut sum = [0f64; 3];
    let mut n = 0f64;
    for (i, px) in g.image.pixels().enumerate() {
        if g.placed.mask[i] == 0.0 {
            for (s, &v) in sum.iter_mut().zip(&px.0) {
                *s += f64::from(v);
            }
            n += 1.0;
        }
    }
    sum.map(|s| (s / n) as f32)
}

/// Mean RGB of a reference's background (mask < 128).
fn reference_background_mean(image: &[u8], mask: &[u8]) -> [f32; 3] {
    let image = image::load_from_memory(image).unwrap().to_rgb8();
    let mask = image::load_from_memory(mask).unwrap().to_luma8();
    let mut sum = [0f64; 3];
    let mut n = 0f64;
    for (px, m) in image.pixels().zip(mask.pixels()) {
        if m.0[0] < 128 {
            for (s, &v) in sum.iter_mut().zip(&px.0) {
                *s += f64::from(v);
            }
            n += 1.0;
        }
    }
    sum.map(|s| (s / n) as f32)
}

#[test]
fn style_reference_steers_the_background_and_pfv_hides_its_product() {
    let model = load_default(&Device::flex());
    assert!(model.reference_encoder.is_some(), "the default pack takes a style reference");
    let beach = Reference::with_mask(REFERENCE_BEACH, REFERENCE_BEACH_MASK).unwrap();
    let studio = Reference::with_mask(REFERENCE_STUDIO, REFERENCE_STUDIO_MASK).unwrap();
    // No prompt: the reference alone says what the scene is.
    let options = |reference: ReferenceOptions| GenerateOptions {
        width: 256,
        height: 256,
        steps: 20,
        seed: 5,
        guidance_scale: 4.0,
        reference,
        ..Default::default()
    };
    let on = ReferenceOptions::default();
    let with_beach = run_with(&model, PRODUCT_128, Some(&beach), &options(on.clone()));
    let with_studio = run_with(&model, PRODUCT_128, Some(&studio), &options(on.clone()));
    assert_composite_exact(&with_beach);

    // PFV hid the beach reference's football: every hidden patch holds foreground, every token
    // the model saw is CLS or a visible patch.
    let report = with_beach.reference.as_ref().expect("reference report");
    assert_eq!(report.grid.visible.len(), 64);
    let hidden = report.hidden_patches();
    assert!((10..64).contains(&hidden), "{hidden} of 64 patches hidden");
    assert_eq!(report.tokens, 1 + 64 - hidden);

    // The two backgrounds differ the way the two references do. The model paints darker than
    // its references, so absolute colours are not compared; the difference vectors are. Measured
    // on 2026-11-26 (step 5382): cosine 0.82, and the beach one is warmer by 33 in R − B.
    let beach_ref = reference_background_mean(REFERENCE_BEACH, REFERENCE_BEACH_MASK);
    let studio_ref = reference_background_mean(REFERENCE_STUDIO, REFERENCE_STUDIO_MASK);
    let (b, s) = (background_mean(&with_beach), background_mean(&with_studio));
    let generated: Vec<f32> = (0..3).map(|c| b[c] - s[c]).collect();
    let wanted: Vec<f32> = (0..3).map(|c| beach_ref[c] - studio_ref[c]).collect();
    let dot: f32 = generated.iter().zip(&wanted).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let cosine = dot / (norm(&generated) * norm(&wanted));
    eprintln!(
        "backgrounds: beach-ref {b:?} (ref {beach_ref:?}), studio-ref {s:?} (ref {studio_ref:?}), cosine {cosine}"
    );
    assert!(cosine > 0.5, "the backgrounds' difference should follow the references' difference: cosine {cosine}");
    assert!(
        (b[0] - b[2]) - (s[0] - s[2]) > 15.0,
        "the sunset-beach reference should give a warmer background: {b:?} vs {s:?}"
    );

    // λ = 0 is exactly no reference; the ablation switches change the result.
    let none = run(&model, PRODUCT_128, &options(on.clone()));
    let zero = run_with(&model, PRODUCT_128, Some(&beach), &options(ReferenceOptions { scale: 0.0, ..on.clone() }));
    assert_eq!(none.image.as_raw(), zero.image.as_raw(), "λ = 0 must equal no reference");
    assert!(zero.reference.is_none());
    let no_pfv = run_with(&model, PRODUCT_128, Some(&beach), &options(ReferenceOptions { pfv: false, ..on.clone() }));
    assert_eq!(no_pfv.reference.as_ref().unwrap().hidden_patches(), 0);
    assert_ne!(no_pfv.background.as_raw(), with_beach.background.as_raw(), "PFV off changes the result");
    let no_masks =
        run_with(&model, PRODUCT_128, Some(&beach), &options(ReferenceOptions { region_masks: false, ..on }));
    assert_ne!(no_masks.background.as_raw(), with_beach.background.as_raw(), "region masks off change the result");
}

#[test]
fn style_reference_errors_are_clear() {
    // A busy scene: its foreground cannot be found automatically, and the message says what to do.
    let err = Reference::from_bytes(REFERENCE_BEACH).unwrap_err().to_string();
    assert!(err.contains("could not be found automatically") && err.contains("mask"), "{err}");
    // A cut-out reference: the alpha channel is its foreground.
    let cutout = Reference::from_bytes(PRODUCT_128).unwrap();
    assert!(cutout.foreground.iter().any(|&v| v > 0.5) && cutout.foreground.contains(&0.0));
    // A mask of another size is refused.
    let err = Reference::with_mask(REFERENCE_BEACH, PRODUCT_32).unwrap_err().to_string();
    assert!(err.contains("must match"), "{err}");
    // A corrupt reference is an image error, like a corrupt product.
    assert!(Reference::from_bytes(b"not an image").is_err());
    // A model without an image encoder says it takes no reference.
    let (manifest, files) = create_demo_pack(20261126, &Device::flex()).unwrap();
    let model = Model::from_pack(manifest, &files, &Device::flex()).unwrap();
    let product = prepare_product(PRODUCT_32).unwrap();
    let reference = Reference::whole(REFERENCE_BEACH).unwrap();
    let err = pollster::block_on(generate(&model, &product, Some(&reference), &tiny_options(1), &mut |_, _| true))
        .unwrap_err();
    assert!(err.to_string().contains("takes no style reference"), "{err}");
}

/// The depth path end to end: the default model's trained ControlNet reads the placed
/// product's pseudo-depth; scale 0 is exactly the model without it; the product stays exact.
/// A seeded random ControlNet (as `ControlNetModel.from_unet` would shape it) shows the
/// residuals really steer the background.
#[test]
fn depth_controlnet_steers_the_background_and_scale_zero_turns_it_off() {
    use adcanvas::denoise::controlnet::{ControlNetConfig, ControlNetModel};
    use adcanvas::pack::weights::Weights;
    let device = Device::flex();
    let options = GenerateOptions { width: 64, height: 64, steps: 2, seed: 5, ..tiny_options(5) };
    let shipped = load_default(&device);
    assert!(shipped.controlnet.is_some(), "the default model carries its depth ControlNet");
    let with_depth = run(&shipped, PRODUCT_32, &options);
    assert!(with_depth.depth_used);
    assert_composite_exact(&with_depth);
    let off = run(&shipped, PRODUCT_32, &GenerateOptions { depth_scale: 0.0, ..options.clone() });
    assert!(!off.depth_used);

    let mut model = load_default(&device);
    model.controlnet = None;
    let without = run(&model, PRODUCT_32, &options);
    assert!(!without.depth_used);
    assert_eq!(off.image.as_raw(), without.image.as_raw(), "depth scale 0 must be the model without depth");
    assert_ne!(
        with_depth.background.as_raw(),
        without.background.as_raw(),
        "the trained ControlNet changes the background"
    );

    let config = ControlNetConfig::for_unet(&model.manifest.unet);
    config.check_fits(&model.manifest.unet).unwrap();
    let (weights, _) = Weights::random(11, &device);
    model.controlnet = Some(ControlNetModel::load(&weights, &config).unwrap());
    let on = run(&model, PRODUCT_32, &options);
    assert!(on.depth_used);
    assert_composite_exact(&on);
    let changed = on.background.as_raw().iter().zip(without.background.as_raw()).filter(|(a, b)| a != b).count();
    assert!(changed > on.background.as_raw().len() / 4, "depth changed only {changed} background bytes");
}

/// An SD-style KL VAE run in tiles (as diffusers' `enable_tiling()`, pinned in tests/parity.rs)
/// inside the pipeline: the product stays exact, the tile side is reported, and only the
/// tiles' seams and normalisation change the background. Bad tile sides are refused with a
/// message; AutoencoderTiny (the default model's) tiles too.
#[test]
fn vae_runs_in_tiles_when_asked() {
    let (manifest, files) = create_demo_pack(20261126, &Device::flex()).unwrap();
    let model = Model::from_pack(manifest, &files, &Device::flex()).unwrap();
    let options = GenerateOptions { width: 128, height: 128, ..tiny_options(3) };
    let whole = run(&model, PRODUCT_128, &options);
    assert_eq!(whole.vae_tile, None, "the CPU device has no buffer limit, so nothing is tiled unasked");
    let tiled = run(&model, PRODUCT_128, &GenerateOptions { vae_tile: Some(8), ..options.clone() });
    assert_eq!(tiled.vae_tile, Some(8));
    assert_composite_exact(&tiled);
    assert_background_not_constant(&tiled);
    assert_ne!(tiled.background.as_raw(), whole.background.as_raw(), "16² latents in 8-latent tiles change the decode");

    let product = prepare_product(PRODUCT_128).unwrap();
    let refuse = |model: &Model, tile| {
        let options = GenerateOptions { vae_tile: Some(tile), ..options.clone() };
        pollster::block_on(generate(model, &product, None, &options, &mut |_, _| true)).unwrap_err().to_string()
    };
    let err = refuse(&model, 6);
    assert!(err.contains("multiple of 4"), "{err}");

    let tiny = load_default(&Device::flex());
    let whole = run(&tiny, PRODUCT_128, &options);
    let tiled = run(&tiny, PRODUCT_128, &GenerateOptions { vae_tile: Some(8), ..options.clone() });
    assert_eq!(tiled.vae_tile, Some(8));
    assert_composite_exact(&tiled);
    // Tiles of AutoencoderTiny blend at their seams only: the decode stays close to the whole one.
    let diff: Vec<f64> = tiled
        .background
        .as_raw()
        .iter()
        .zip(whole.background.as_raw())
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .collect();
    let mean = diff.iter().sum::<f64>() / diff.len() as f64;
    assert!(
        mean > 0.0 && mean < 3.0,
        "tiled AutoencoderTiny decode differs from the whole one by {mean} levels on average"
    );
}

/// PSNR (dB) of the decoder's output before paste-back against the placed product, over the
/// pixels of the 8×8 cells whose 3×3 cell neighbourhood is all solid product (the interior the
/// decoder sees only product latents around).
fn psnr_in_product(g: &Generated) -> f64 {
    psnr_inside(g, &g.background)
}

fn psnr_inside(g: &Generated, image: &image::RgbaImage) -> f64 {
    let w = g.image.width() as usize;
    let h = g.image.height() as usize;
    let solid =
        |x: usize, y: usize| (0..8).all(|dy| (0..8).all(|dx| g.placed.mask[(y * 8 + dy) * w + x * 8 + dx] == 1.0));
    let interior = |x: usize, y: usize| {
        (x > 0 && y > 0 && x + 1 < w / 8 && y + 1 < h / 8)
            && (y - 1..=y + 1).all(|cy| (x - 1..=x + 1).all(|cx| solid(cx, cy)))
    };
    let (mut se, mut n) = (0.0, 0usize);
    for (i, (bg, placed)) in image.pixels().zip(g.placed.rgba.pixels()).enumerate() {
        if interior(i % w / 8, i / w / 8) {
            for c in 0..3 {
                se += (bg.0[c] as f64 - placed.0[c] as f64).powi(2);
            }
            n += 3;
        }
    }
    10.0 * (255.0f64.powi(2) / (se / n as f64)).log10()
}

/// Product anchoring (the default): the latent cells inside the product are held at the
/// product's own latents, so before paste-back the product's interior decodes much closer to
/// the product than when the UNet regenerates it (at the model's own size, 20 DDIM steps).
/// Measured on the latents, without the decoder's product branch, which would hide it.
#[test]
fn anchoring_keeps_the_product_region_close_to_the_product() {
    let model = load_default_latents_only(&Device::flex());
    let size = model.native_size() as u32;
    let options = GenerateOptions { width: size, height: size, steps: 20, guidance_scale: 4.0, ..tiny_options(5) };
    let anchored = run(&model, PRODUCT_128, &options);
    let free = run(&model, PRODUCT_128, &GenerateOptions { anchor_product: false, ..options.clone() });
    assert_composite_exact(&anchored);
    // The VAE's own round trip of the masked product: what holding its latents can reach.
    let (w, h) = (size as usize, size as usize);
    let mut chw = vec![0f32; 3 * w * h];
    for (i, px) in anchored.placed.rgba.pixels().enumerate() {
        if anchored.placed.mask[i] >= 0.5 {
            for c in 0..3 {
                chw[c * w * h + i] = px.0[c] as f32 / 127.5 - 1.0;
            }
        }
    }
    let masked = burn::tensor::Tensor::<4>::from_data(burn::tensor::TensorData::new(chw, [1, 3, h, w]), &model.device);
    let decoded: Vec<f32> =
        model.vae_decoder.decode(model.vae_encoder.encode(masked)).into_data().try_to_vec::<f32>().unwrap();
    let round_trip = image::RgbaImage::from_fn(size, size, |x, y| {
        let i = y as usize * w + x as usize;
        let level = |c: usize| ((decoded[c * w * h + i] / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;
        image::Rgba([level(0), level(1), level(2), 255])
    });
    let (on, off, vae) = (psnr_in_product(&anchored), psnr_in_product(&free), psnr_inside(&anchored, &round_trip));
    eprintln!(
        "PSNR inside the product before paste-back: anchored {on:.2} dB, free {off:.2} dB, VAE round trip {vae:.2} dB"
    );
    assert!(on > off + 0.5, "anchored {on:.2} dB vs free {off:.2} dB");
    assert!(on > vae - 0.25, "anchored {on:.2} dB vs the VAE round trip's {vae:.2} dB");
}

/// The default decoder reads the placed product (its condition branch, docs/METHOD.md §4):
/// before paste-back the product's interior reaches the 30 dB the model is held to, above what
/// the same run's latents decode to alone.
#[test]
fn the_decoder_keeps_the_product_it_is_given() {
    let device = Device::flex();
    let with_branch = load_default(&device);
    assert!(with_branch.vae_decoder.is_conditioned(), "the default decoder has the product branch");
    let size = with_branch.native_size() as u32;
    let options = GenerateOptions { width: size, height: size, steps: 20, guidance_scale: 4.0, ..tiny_options(5) };
    let kept = run(&with_branch, PRODUCT_128, &options);
    let latents_only = run(&load_default_latents_only(&device), PRODUCT_128, &options);
    assert_composite_exact(&kept);
    let (on, off) = (psnr_in_product(&kept), psnr_in_product(&latents_only));
    eprintln!(
        "PSNR inside the product before paste-back: {on:.2} dB with the product branch, {off:.2} dB from the latents alone"
    );
    assert!(on >= 30.0 && on > off + 1.0, "{on:.2} dB with the product branch, {off:.2} dB without");
}

/// Mean absolute difference (levels) between two images over the pixels the product does not cover.
fn background_distance(g: &Generated, other: &image::RgbaImage) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for ((a, b), &m) in g.image.pixels().zip(other.pixels()).zip(&g.placed.mask) {
        if m == 0.0 {
            sum += (0..3).map(|c| (a.0[c] as f64 - b.0[c] as f64).abs()).sum::<f64>();
            n += 3;
        }
    }
    sum / n as f64
}

/// Refining an image (diffusers' img2img `strength`): at a low strength only the last steps run,
/// from the image noised to their level, so the background stays near it; at full strength it
/// moves far away. Bad images and strengths are refused before anything runs.
#[test]
fn refining_starts_from_the_image_given() {
    let model = load_default(&Device::flex());
    let options = GenerateOptions { width: 64, height: 64, steps: 8, ..tiny_options(3) };
    let start = run(&model, PRODUCT_128, &options);
    let refine = |strength: f32| GenerateOptions {
        seed: 99,
        init: Some(InitImage { image: start.image.clone(), strength }),
        ..options.clone()
    };
    let (mut low_steps, mut full_steps) = (0, 0);
    let product = prepare_product(PRODUCT_128).unwrap();
    let low = pollster::block_on(generate(&model, &product, None, &refine(0.25), &mut |_, total| {
        low_steps = total;
        true
    }))
    .unwrap();
    let full = pollster::block_on(generate(&model, &product, None, &refine(1.0), &mut |_, total| {
        full_steps = total;
        true
    }))
    .unwrap();
    assert_eq!((low_steps, full_steps), (2, 8), "strength 0.25 runs 2 of 8 steps");
    assert_composite_exact(&low);
    let (near, far) = (background_distance(&low, &start.image), background_distance(&full, &start.image));
    eprintln!("background distance from the image refined: {near:.1} levels at strength 0.25, {far:.1} at 1");
    assert!(near < 0.5 * far, "strength 0.25: {near:.1} levels from the image; strength 1: {far:.1}");

    for (options, message) in [
        (
            GenerateOptions {
                init: Some(InitImage { image: image::RgbaImage::new(32, 32), strength: 0.5 }),
                ..options.clone()
            },
            "is 32×32",
        ),
        (refine(0.0), "Strength must be in (0, 1]"),
        (refine(0.1), "runs none of the 8 steps"),
    ] {
        let err = pollster::block_on(generate(&model, &product, None, &options, &mut |_, _| true)).unwrap_err();
        assert!(matches!(err, PipelineError::Options(_)) && err.to_string().contains(message), "{err}");
    }
}

/// At twice the model's size the ad is made at its size, upscaled and refined (the default
/// strength 0.5 reruns half the steps), in one call with one progress count; with no refining
/// strength it is one pass at the full size.
#[test]
fn twice_the_model_size_is_refined_from_its_own_size() {
    let model = load_default(&Device::flex());
    let size = 2 * model.native_size() as u32;
    let options = GenerateOptions { width: size, height: size, steps: 2, ..tiny_options(4) };
    assert_eq!(options.refine_strength, Some(0.5));
    let product = prepare_product(PRODUCT_128).unwrap();
    let mut seen = Vec::new();
    let refined = pollster::block_on(generate(&model, &product, None, &options, &mut |step, total| {
        seen.push((step, total));
        true
    }))
    .unwrap();
    assert_eq!(seen, vec![(1, 3), (2, 3), (3, 3)], "2 steps at half the size, then 1 refining");
    assert_eq!(refined.image.dimensions(), (size, size));
    assert!(refined.timings.0.iter().any(|(stage, _)| *stage == "first pass"));
    assert_composite_exact(&refined);
    let bad = GenerateOptions { refine_strength: Some(1.5), ..options.clone() };
    let err =
        pollster::block_on(generate(&model, &product, None, &bad, &mut |_, _| panic!("no step may run"))).unwrap_err();
    assert!(err.to_string().contains("Strength must be in (0, 1]"), "{err}");
    let single = run(&model, PRODUCT_128, &GenerateOptions { refine_strength: None, ..options.clone() });
    assert!(!single.timings.0.iter().any(|(stage, _)| *stage == "first pass"));
    assert_eq!(single.image.dimensions(), (size, size));
}

/// Banners and portraits: width ≠ height runs through every stage (layout, depth, the style
/// reference's region masks, anchoring, the conditioned decoder) with the product exact and
/// inside the frame, in both orientations.
#[test]
fn wide_and_tall_ads_keep_the_product_exact() {
    let device = Device::flex();
    let model = load_default(&device);
    let reference = Reference::with_mask(REFERENCE_BEACH, REFERENCE_BEACH_MASK).unwrap();
    for (width, height) in [(96u32, 64u32), (64, 128)] {
        let options = GenerateOptions { width, height, ..tiny_options(2) };
        let g = run_with(&model, PRODUCT_32, Some(&reference), &options);
        assert_eq!((g.image.width(), g.image.height()), (width, height));
        assert_eq!((g.background.width(), g.background.height()), (width, height));
        assert!(g.depth_used && g.reference.is_some());
        let p = &g.placement;
        let inside = p.x >= 0 && p.y >= 0 && p.x as u32 + p.w <= width && p.y as u32 + p.h <= height;
        assert!(inside, "{width}×{height}: placement {p:?} leaves the frame");
        assert_composite_exact(&g);
    }
}

/// A placement given in the options is where the product goes (two-pass ads give both passes
/// the full-size layout this way); one made for another canvas size is refused.
#[test]
fn a_given_placement_is_used_and_a_mismatched_one_refused() {
    use adcanvas::input::layout::{LayoutOptions, place_product};
    let device = Device::flex();
    let model = load_default(&device);
    let product = prepare_product(PRODUCT_32).unwrap();
    let layout = LayoutOptions { canvas_w: 64, canvas_h: 64, ..LayoutOptions::default() };
    let corner = adcanvas::input::layout::Placement { x: 0, y: 32, ..place_product(&product.mask, &layout).unwrap() };
    let g = run(&model, PRODUCT_32, &GenerateOptions { placement: Some(corner.clone()), ..tiny_options(3) });
    assert_eq!(g.placement, corner);
    assert_composite_exact(&g);

    let half = corner.halved();
    let options = GenerateOptions { placement: Some(half), ..tiny_options(3) };
    let err = pollster::block_on(generate(&model, &product, None, &options, &mut |_, _| true)).unwrap_err();
    assert!(err.to_string().contains("The placement is for a 32×32 canvas, but the ad is 64×64."), "{err}");
}
