//! `adcanvas`: the native command line over the same pipeline the web app runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use adcanvas::denoise::scheduler::SchedulerKind;
use adcanvas::encoders::reference::{Reference, ReferenceError, ReferenceOptions};
use adcanvas::gpu::select::{self, GpuOptions};
use adcanvas::gpu::{DeviceChoice, OpenedDevice, watchdog};
use adcanvas::input::mask::{MaskError, MaskSource};
use adcanvas::model::{Model, create_demo_pack};
use adcanvas::pack::convert::{PackDtype, convert_diffusers_with};
use adcanvas::pack::map_pack_dir;
use adcanvas::pack::weights::QuantizedWeights;
use adcanvas::parity::{Part, Timing};
use adcanvas::pfv::{PfvConfig, TokenMode};
use adcanvas::pipeline::{
    GenerateOptions, Generated, PipelineError, Product, generate, prepare_product, prepare_product_segmented,
    prepare_product_with_mask,
};

#[path = "adcanvas/batch.rs"]
mod batch;
#[path = "adcanvas/bench.rs"]
mod bench;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

#[derive(Parser)]
#[command(name = "adcanvas", version, about = "Product ad images from a product photo, on your own GPU or CPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceArg {
    /// A hardware GPU (Vulkan, Metal, DX12) that passes a self-test, else the CPU, with a note.
    Auto,
    /// Any GPU adapter, software ones (lavapipe, SwiftShader) included, or an error.
    Gpu,
    /// The CPU: no GPU driver needed.
    Cpu,
}

impl DeviceArg {
    fn choice(self) -> DeviceChoice {
        match self {
            Self::Auto => DeviceChoice::Auto,
            Self::Gpu => DeviceChoice::Gpu,
            Self::Cpu => DeviceChoice::Cpu,
        }
    }
}

/// Where to run, and the limits that keep a bad GPU from hanging the run.
#[derive(Clone, Copy, clap::Args)]
struct DeviceArgs {
    /// auto: a hardware GPU that passes a self-test, else the CPU; gpu: any GPU adapter or an
    /// error (WGPU_BACKEND=gl allows OpenGL); cpu.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Open the GPU as if it bound at most this many MiB per storage buffer (WebGPU's default,
    /// and what some browser adapters offer, is 128); the VAE then runs in tiles where needed.
    #[arg(long)]
    gpu_binding_limit_mb: Option<u64>,
    /// End the run when the GPU finishes no stage or step for this many seconds (0: never).
    #[arg(long, default_value_t = 600)]
    gpu_timeout: u64,
}

impl DeviceArgs {
    /// Opens the device, says on stderr what `auto` chose and why, and starts the watchdog
    /// when the run is on a GPU.
    fn open(self, what: &'static str) -> Result<OpenedDevice, String> {
        if self.gpu_binding_limit_mb.is_some() && matches!(self.device, DeviceArg::Cpu) {
            return Err("--gpu-binding-limit-mb applies to --device gpu or auto".into());
        }
        let options = GpuOptions { binding_limit: self.gpu_binding_limit_mb.map(|mb| mb << 20), ..Default::default() };
        let opened = select::open(self.device.choice(), &options).map_err(|e| e.to_string())?;
        if let Some(note) = &opened.note {
            eprintln!("adcanvas: note: {note}");
        }
        if let Some(adapter) = &opened.adapter {
            if adapter.software {
                eprintln!(
                    "adcanvas: note: {} is a software rasterizer on the CPU: a first run compiles kernels for minutes; --device cpu is far faster here.",
                    adapter.name
                );
            }
            watchdog::watch(self.gpu_timeout, what);
        }
        Ok(opened)
    }
}

/// The report's account of the device a run used.
fn device_report(choice: DeviceArg, opened: &OpenedDevice) -> serde_json::Value {
    json!({
        "asked": choice.choice().name(),
        "used": opened.kind(),
        "adapter": opened.adapter.as_ref().map(|a| json!({
            "name": a.name, "backend": a.backend, "software": a.software, "driver": a.driver,
        })),
        "note": opened.note,
    })
}

/// What to do with a q8/q4 pack's weights on the device.
#[derive(Clone, Copy, ValueEnum)]
enum QuantizedArg {
    /// Keep them quantised when the model would take over 1 GiB as f32, else expand.
    Auto,
    /// Expand to f32 at load (fastest).
    Expand,
    /// Keep them quantised, expanding each layer's weight as it runs (least memory).
    Keep,
}

#[derive(Clone, Copy, ValueEnum)]
enum PartArg {
    /// One UNet call (batch 2 at SD 1.5 size).
    Unet,
    /// The same batch as one call per sample, at once (as the pipeline runs guidance's halves
    /// on the CPU): its own timing; the output is checked like `unet`'s.
    UnetHalves,
    /// One call of the depth ControlNet on the UNet's batch (its residuals).
    #[value(name = "controlnet")]
    ControlNet,
    /// The ControlNet's batch as one call per sample, at once (as the pipeline runs it).
    #[value(name = "controlnet-halves")]
    ControlNetHalves,
    /// The whole VAE decode.
    VaeDecode,
    /// The tiled VAE decode.
    VaeDecodeTiled,
}

impl PartArg {
    fn part(self) -> Part {
        match self {
            Self::Unet => Part::Unet,
            Self::UnetHalves => Part::UnetHalves,
            Self::ControlNet => Part::ControlNet,
            Self::ControlNetHalves => Part::ControlNetHalves,
            Self::VaeDecode => Part::VaeDecode,
            Self::VaeDecodeTiled => Part::VaeDecodeTiled,
        }
    }
}

impl QuantizedArg {
    fn resolve(self, manifest: &adcanvas::pack::Manifest) -> QuantizedWeights {
        match self {
            Self::Auto => manifest.quantized_weights(),
            Self::Expand => QuantizedWeights::Expand,
            Self::Keep => QuantizedWeights::Keep,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum DtypeArg {
    F32,
    F16,
    Q8,
    Q4,
}

#[derive(Clone, Copy, ValueEnum)]
enum TokenModeArg {
    Drop,
    Zero,
}

/// The style reference and the PFV / MEPA ablation switches.
#[derive(clap::Args, Clone)]
struct ReferenceArgs {
    /// Style reference: a picture whose background style guides the new background. Its own
    /// foreground (found like the product's, or given by --reference-mask) is hidden by PFV.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// The reference's foreground mask (white or opaque = the object PFV hides), for references
    /// whose foreground cannot be found automatically. Same size as the reference.
    #[arg(long, requires = "reference")]
    reference_mask: Option<PathBuf>,
    /// λ, the reference's weight in MEPA (0 ignores it).
    #[arg(long, default_value_t = 1.0)]
    reference_scale: f32,
    /// Ablation: PFV off, the encoder sees the whole reference (its foreground too).
    #[arg(long)]
    no_pfv: bool,
    /// PFV threshold: a 16×16 patch is hidden when more than this fraction of it is foreground.
    #[arg(long, default_value_t = 0.0)]
    pfv_threshold: f32,
    /// What PFV does with hidden tokens: drop them (default, as trained) or zero them.
    #[arg(long, value_enum, default_value_t = TokenModeArg::Drop)]
    pfv_tokens: TokenModeArg,
    /// Ablation: MEPA region masks off, the reference acts on the whole picture, product included.
    #[arg(long)]
    no_region_masks: bool,
    /// Also write the reference as the image encoder saw it (PFV's hidden patches grey).
    #[arg(long, requires = "reference")]
    reference_seen_out: Option<PathBuf>,
}

impl ReferenceArgs {
    fn options(&self) -> ReferenceOptions {
        ReferenceOptions {
            scale: self.reference_scale,
            pfv: !self.no_pfv,
            pfv_config: PfvConfig { threshold: self.pfv_threshold, ..PfvConfig::default() },
            token_mode: match self.pfv_tokens {
                TokenModeArg::Drop => TokenMode::Drop,
                TokenModeArg::Zero => TokenMode::Zero,
            },
            region_masks: !self.no_region_masks,
        }
    }

    fn load(&self) -> Result<Option<Reference>, String> {
        let Some(path) = &self.reference else { return Ok(None) };
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let bytes = read(path)?;
        let reference = match (&self.reference_mask, self.no_pfv) {
            (_, true) => Reference::whole(&bytes),
            (Some(mask), false) => Reference::with_mask(&bytes, &read(mask)?),
            (None, false) => Reference::from_bytes(&bytes).map_err(|e| match e {
                ReferenceError::Unusable(m) => {
                    ReferenceError::Unusable(format!("{m} (--reference-mask MASK.png, or --no-pfv)"))
                }
                other => other,
            }),
        };
        reference.map(Some).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// One ad's inputs and options: a `generate` command line, or a row of a `batch` manifest.
#[derive(clap::Args, Clone)]
struct AdArgs {
    /// Product photo: PNG cut-out with transparency, or a JPEG/PNG/WebP on a plain light background.
    #[arg(long)]
    pub product: PathBuf,
    /// Scene description.
    #[arg(long, default_value = "")]
    prompt: String,
    /// Output PNG.
    #[arg(long)]
    out: PathBuf,
    /// Output size in pixels: a side (`256`, square) or `WIDTHxHEIGHT` (`384x256`), each a
    /// multiple of the model's size step; default: the square the model was trained at.
    #[arg(long, value_parser = parse_size)]
    size: Option<(u32, u32)>,
    /// How much of the ad's shorter side the product's longer side takes, in (0, 1]; a photo
    /// is never enlarged past its own pixels, so a small one may stay smaller.
    #[arg(long, default_value_t = 0.6)]
    fill: f32,
    /// Where the product stands across the ad: left, center, right, or a number from 0
    /// (flush left) to 1 (flush right). Off-centre leaves room for copy in a banner.
    #[arg(long, default_value = "center", value_parser = parse_position)]
    position: f32,
    #[arg(long, default_value_t = 20)]
    steps: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Generate this many ads, with seeds SEED, SEED+1, …, in one process; OUT gets -1,
    /// -2, … before its extension and each ad prints its own report. Only the first pays
    /// model loading and GPU kernel compilation, so the later reports show the warm speed.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,
    /// Classifier-free guidance scale (used when the model has a text encoder).
    #[arg(long, default_value_t = 7.5)]
    guidance: f32,
    /// MEPA's weight λ_t on the text prompt (1 as trained; an ablation switch).
    #[arg(long, default_value_t = 1.0)]
    text_weight: f32,
    /// The depth ControlNet's conditioning scale, for packs that have one; 0 turns depth off.
    #[arg(long, default_value_t = 1.0)]
    depth_scale: f32,
    /// Run the VAE in tiles of this many latent pixels, as diffusers' `enable_tiling()`
    /// does for KL VAEs (a multiple of 4, at least 8). Default: tiled only when the GPU's largest
    /// buffer is too small for a whole pass.
    #[arg(long)]
    vae_tile: Option<usize>,
    /// Hold the latent cells inside the product at the product's own (re-noised) latents after
    /// every step, as diffusers' inpainting pipeline does for 4-channel UNets; false is an ablation.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    anchor_product: bool,
    /// At sizes of at least twice the model's own, generate at half the size and refine the
    /// upscaled ad at this strength (the share of the steps that run again); 0 makes one pass
    /// at the full size.
    #[arg(long, default_value_t = 0.5)]
    refine_strength: f32,
    /// Sampler: ddim, euler, euler-karras, dpm++2m, dpm++2m-karras or lcm.
    #[arg(long, default_value = "ddim")]
    scheduler: SchedulerKind,
    #[command(flatten)]
    mask: MaskArgs,
    #[command(flatten)]
    reference: ReferenceArgs,
}

impl AdArgs {
    /// The pipeline's options (size 0×0 when not given: the model's own, filled in at load).
    fn options(&self) -> GenerateOptions {
        let (width, height) = self.size.unwrap_or((0, 0));
        GenerateOptions {
            prompt: self.prompt.clone(),
            width,
            height,
            fill: self.fill,
            position: self.position,
            steps: self.steps,
            seed: self.seed,
            guidance_scale: self.guidance,
            scheduler: self.scheduler,
            reference: self.reference.options(),
            text_weight: self.text_weight,
            depth_scale: self.depth_scale,
            vae_tile: self.vae_tile,
            anchor_product: self.anchor_product,
            refine_strength: (self.refine_strength != 0.0).then_some(self.refine_strength),
            ..Default::default()
        }
    }
}

/// The model and the device it runs on: one per process.
#[derive(clap::Args, Clone)]
struct ModelArgs {
    /// Model pack folder (manifest.json + weights); default: models/default.
    #[arg(long)]
    model: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    /// A q8/q4 pack's weights on the device: kept quantised or expanded to f32.
    #[arg(long, value_enum, default_value_t = QuantizedArg::Auto)]
    quantized_weights: QuantizedArg,
}

/// A model loaded on its device, ready for any number of ads.
struct Loaded {
    opened: OpenedDevice,
    model: Model,
    load_ms: f64,
}

impl ModelArgs {
    /// Opens the device (starting the watchdog on a GPU) and loads the pack onto it.
    fn load(&self, what: &'static str) -> Result<Loaded, String> {
        let opened = self.device.open(what)?;
        let dir = model_dir(self.model.clone());
        let started = web_time_now();
        let (manifest, files) = map_pack_dir(&dir).map_err(|e| e.to_string())?;
        let quantized = self.quantized_weights.resolve(&manifest);
        let model = Model::from_pack_with(manifest, &files, &opened.device, quantized).map_err(|e| e.to_string())?;
        drop(files);
        if opened.adapter.is_some() && std::env::var_os("ADCANVAS_TEST_STALL_AFTER_LOAD").is_some() {
            // A test hook: stands for a GPU that never finishes its next kernel (tests/device.rs).
            loop {
                std::thread::park();
            }
        }
        if !model.manifest.trained {
            eprintln!(
                "adcanvas: note: {} is an untrained demo model: the background is not a real scene.",
                dir.display()
            );
        }
        Ok(Loaded { opened, model, load_ms: started.elapsed().as_secs_f64() * 1000.0 })
    }
}

impl Loaded {
    /// `options` with the model's own size where none was given.
    fn sized(&self, mut options: GenerateOptions) -> GenerateOptions {
        if options.width == 0 {
            options.width = self.model.native_size() as u32;
            options.height = options.width;
        }
        options
    }
}

#[derive(Subcommand)]
enum Command {
    /// Generate an ad: the product's pixels unchanged on a generated background.
    Generate {
        #[command(flatten)]
        ad: AdArgs,
        #[command(flatten)]
        run: ModelArgs,
    },
    /// Generate the ads of a whole manifest (CSV with a header row, or JSON Lines): one row per
    /// product ad, its columns `generate`'s options (`product`, `prompt`, `size`, `seed`, `count`,
    /// `reference`, …). One model load for all rows; an ad already written is skipped, so a run
    /// started again finishes the rest; `--shard I/N` takes a stable share of the rows, so N
    /// processes (a Kubernetes Indexed Job, a Slurm array, GNU parallel) share one manifest.
    Batch {
        /// The manifest: `.csv` (header row of option names) or `.jsonl` (one JSON object a line).
        /// Relative paths in it are relative to its own folder.
        manifest: PathBuf,
        /// Output folder: each ad is named after its row's content (`STEM-HASH.png`).
        #[arg(long)]
        out: PathBuf,
        /// This process's share of the rows: I/N takes the rows whose content hash is I modulo N.
        #[arg(long, default_value = "0/1", value_parser = batch::Shard::parse)]
        shard: batch::Shard,
        /// The per-ad report (JSON Lines); default: OUT/report-I-of-N.jsonl.
        #[arg(long)]
        report: Option<PathBuf>,
        #[command(flatten)]
        run: ModelArgs,
    },
    /// Convert a diffusers pipeline folder (model_index.json, unet/, vae/, scheduler/) into a model pack.
    Convert {
        /// The diffusers folder.
        #[arg(long)]
        diffusers: PathBuf,
        /// Output pack folder.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = DtypeArg::F16)]
        dtype: DtypeArg,
        /// The text encoder's token embedding table in another dtype (default: --dtype); q4 halves
        /// a q8 MiniLM's download for a few percent of its output (docs/PACKS.md).
        #[arg(long, value_enum)]
        embedding_dtype: Option<DtypeArg>,
        /// Name shown by the app and CLI (default: the folder name).
        #[arg(long)]
        name: Option<String>,
        /// Skip loading the written pack on the CPU to check it.
        #[arg(long)]
        no_verify: bool,
    },
    /// Compare a pack's UNet and VAE decoder with PyTorch on the inputs and outputs that
    /// scripts/sd15_parity.py saved; prints errors, timings and memory as JSON.
    Parity {
        /// The pack (e.g. converted from the folder sd15_parity.py wrote).
        #[arg(long)]
        model: PathBuf,
        /// The script's io.safetensors.
        #[arg(long)]
        io: PathBuf,
        #[command(flatten)]
        device: DeviceArgs,
        /// A q8/q4 pack's weights on the device: kept quantised or expanded to f32.
        #[arg(long, value_enum, default_value_t = QuantizedArg::Auto)]
        quantized_weights: QuantizedArg,
        /// Timed runs after the first (which pays kernel compilation and autotuning).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// What to run (repeatable; default: all). One part per process lets several
        /// processes compile their GPU kernels at once.
        #[arg(long = "part", value_enum)]
        parts: Vec<PartArg>,
        /// After each first run, create FILE.ready and wait for FILE before the timed runs,
        /// so that a script can time side-by-side processes one at a time.
        #[arg(long, value_name = "FILE")]
        hold_until: Option<PathBuf>,
    },
    /// Cut the product out of its photo, as `generate` would: the mask (white = product, grey =
    /// partly, black = backdrop) and optionally the cut-out. The mask can be edited and given back
    /// to `generate --mask`.
    Mask {
        /// Product photo: PNG cut-out with transparency, or a JPEG/PNG/WebP on a plain background.
        #[arg(long)]
        product: PathBuf,
        /// Output: the mask as a greyscale PNG at the photo's size.
        #[arg(long)]
        out: PathBuf,
        /// Also write the cut-out (the product's colours, the mask as alpha) as a PNG here.
        #[arg(long)]
        cutout: Option<PathBuf>,
        /// The pack whose cut-out network finds the product when the photo's background is not
        /// plain (loaded only for such a photo), and the device it runs on.
        #[command(flatten)]
        run: ModelArgs,
    },
    /// Say which device `--device` would run on, and why (opens it and runs the self-test).
    Device {
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Time our GPU kernels beside the stock burn tensor ops they replace, at the default
    /// model's and SD 1.5's shapes (use --device gpu: `auto` skips software adapters).
    Bench {
        #[command(flatten)]
        device: DeviceArgs,
        /// Timed runs of each after the first (which compiles the kernels).
        #[arg(long, default_value_t = 10)]
        repeats: usize,
        /// Only the default model's shapes, not SD 1.5's (minutes per run on lavapipe).
        #[arg(long)]
        default_only: bool,
        /// Only these kernels (comma-separated: group_norm, conv2d, linear, matmul, attention); all when absent.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Write the untrained demo model pack (seeded random weights in the diffusers structure).
    DemoModel {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 20261126)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    watchdog::install_panic_hook();
    let result = match cli.command {
        Command::Generate { ad, run } => run_generate(&ad, &run),
        Command::Batch { manifest, out, shard, report, run } => batch::run(&manifest, &out, shard, report, &run),
        Command::Bench { device, repeats, default_only, only } => device.open("kernel benchmark").and_then(|opened| {
            let adapter =
                opened.adapter.as_ref().map_or("the CPU".to_string(), |a| format!("{} ({})", a.name, a.backend));
            bench::run(&opened.device, &adapter, repeats, !default_only, &only)
        }),
        Command::DemoModel { out, seed } => run_demo_model(&out, seed),
        Command::Mask { product, out, cutout, run } => run_mask(&product, &out, cutout.as_deref(), &run),
        Command::Device { device } => device.open("device check").map(|opened| {
            println!(
                "{}",
                serde_json::to_string_pretty(&device_report(device.device, &opened)).expect("report serialises")
            )
        }),
        Command::Parity { model, io, device, quantized_weights, repeats, parts, hold_until } => {
            let parts: Vec<Part> = match parts.is_empty() {
                true => Part::ALL.to_vec(),
                false => parts.into_iter().map(PartArg::part).collect(),
            };
            let timing = Timing { repeats, hold_until: hold_until.as_deref() };
            device
                .open("parity check")
                .and_then(|opened| {
                    let mut report =
                        adcanvas::parity::check_pack(&model, &io, &opened.device, &parts, &timing, |manifest| {
                            quantized_weights.resolve(manifest)
                        })?;
                    report["device"] = device_report(device.device, &opened);
                    Ok(report)
                })
                .map(|report| println!("{}", serde_json::to_string_pretty(&report).expect("report serialises")))
        }
        Command::Convert { diffusers, out, dtype, embedding_dtype, name, no_verify } => {
            let pack_dtype = |dtype| match dtype {
                DtypeArg::F32 => PackDtype::F32,
                DtypeArg::F16 => PackDtype::F16,
                DtypeArg::Q8 => PackDtype::Q8,
                DtypeArg::Q4 => PackDtype::Q4,
            };
            let embeddings = pack_dtype(embedding_dtype.unwrap_or(dtype));
            convert_diffusers_with(&diffusers, &out, pack_dtype(dtype), embeddings, name, !no_verify)
                .map(|report| {
                    for note in &report.notes {
                        eprintln!("adcanvas: {note}");
                    }
                    println!("wrote {} ({})", out.display(), report.manifest.name);
                })
                .map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("adcanvas: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The pack folder: `--model`, else `./models/default`, else the one beside the sources.
fn model_dir(arg: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = arg {
        return dir;
    }
    let local = PathBuf::from("models/default");
    if local.join("manifest.json").exists() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default")
    }
}

/// `--position`: a name, or the share of the free width left of the product.
fn parse_position(text: &str) -> Result<f32, String> {
    match text {
        "left" => Ok(POSITION_LEFT),
        "center" | "centre" => Ok(0.5),
        "right" => Ok(1.0 - POSITION_LEFT),
        _ => text
            .parse()
            .map_err(|_| format!("{text:?} is not a position: use left, center, right or a number from 0 to 1")),
    }
}

/// `left` keeps a margin of 15 % of the free width: the product's centre falls near the first
/// third of a banner, where layouts put it to leave the rest for copy.
const POSITION_LEFT: f32 = 0.15;

/// `--size`: `256` (a square) or `384x256` (width × height).
fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let side = |s: &str| {
        s.trim()
            .parse::<u32>()
            .map_err(|_| format!("{text:?} is not a size: use a side such as 256, or WIDTHxHEIGHT such as 384x256"))
    };
    match text.split_once(['x', 'X', '×']) {
        Some((w, h)) => Ok((side(w)?, side(h)?)),
        None => side(text).map(|s| (s, s)),
    }
}

/// `adcanvas mask`: the product's mask (and cut-out) as PNGs, and a one-line JSON report.
fn run_mask(photo_path: &Path, out: &Path, cutout: Option<&Path>, run: &ModelArgs) -> Result<(), String> {
    let args = MaskArgs { mask: None, mask_out: None };
    let product = match args.product(photo_path)? {
        Photo::Ready(product) => product,
        Photo::Busy(bytes) => segmented(&bytes, &run.load("the cut-out network")?.model)?,
    };
    let (w, h) = (product.mask.width, product.mask.height);
    let grey = image::GrayImage::from_fn(w, h, |x, y| {
        image::Luma([(product.mask.alpha[(y * w + x) as usize].clamp(0.0, 1.0) * 255.0).round() as u8])
    });
    grey.save(out).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    if let Some(path) = cutout {
        product.cutout().save(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let report = serde_json::json!({
        "width": w,
        "height": h,
        "mask_source": mask_source_name(&product.mask.source),
        "mask_area": round4(product.mask.area_fraction() as f64),
    });
    println!("{report}");
    Ok(())
}

fn mask_source_name(source: &MaskSource) -> &'static str {
    match source {
        MaskSource::Alpha => "alpha",
        MaskSource::Given => "given",
        MaskSource::Background { .. } => "background",
        MaskSource::Network { .. } => "network",
    }
}

/// The product's mask: found automatically, or given; and where to show it.
#[derive(clap::Args, Debug, Clone)]
struct MaskArgs {
    /// The product's mask instead of the automatic one: a PNG at the photo's size, white (or opaque)
    /// where the product is, black (or transparent) elsewhere. For photos whose background is not
    /// plain, or whose automatic mask is wrong.
    #[arg(long, value_name = "FILE")]
    mask: Option<PathBuf>,
    /// Also write the product mask as a PNG here.
    #[arg(long)]
    mask_out: Option<PathBuf>,
}

/// A product photo as read: masked, or waiting for the cut-out network (its background is busy).
enum Photo {
    Ready(Product),
    Busy(Vec<u8>),
}

/// A busy photo's product from `model`'s cut-out network, or the reason there is none.
fn segmented(photo: &[u8], model: &Model) -> Result<Product, String> {
    pollster::block_on(prepare_product_segmented(photo, model.segmenter.as_ref())).map_err(|e| e.to_string())
}

impl MaskArgs {
    /// The product photo, decoded and masked; one whose background is busy is handed back for
    /// the cut-out network (the model loads only for it).
    fn product(&self, photo_path: &Path) -> Result<Photo, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let photo = read(photo_path)?;
        match &self.mask {
            None => match prepare_product(&photo) {
                Ok(product) => Ok(Photo::Ready(product)),
                Err(PipelineError::Mask(MaskError::BusyBackground { .. })) => Ok(Photo::Busy(photo)),
                Err(e) => Err(e.to_string()),
            },
            Some(mask) => prepare_product_with_mask(&photo, &read(mask)?)
                .map(Photo::Ready)
                .map_err(|e| format!("{} (--mask {})", e, mask.display())),
        }
    }
}

/// `adcanvas generate`: `count` ads of one product, each with its JSON report on stdout.
fn run_generate(ad: &AdArgs, run: &ModelArgs) -> Result<(), String> {
    let started = web_time_now();
    let photo = ad.mask.product(&ad.product)?;
    let reference = ad.reference.load()?;
    let loaded = run.load("generation")?;
    let product = match photo {
        Photo::Ready(product) => product,
        Photo::Busy(bytes) => segmented(&bytes, &loaded.model)?,
    };
    if let Some(path) = &ad.mask.mask_out {
        product.mask.to_preview_rgba().save(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let options = loaded.sized(ad.options());
    if !loaded.model.prompt_used() && !options.prompt.is_empty() {
        eprintln!("adcanvas: note: this model has no text encoder yet; the prompt is not used.");
    }
    let mut progress = |step: usize, total: usize| {
        eprint!("\rdenoising {step}/{total}");
        if step == total {
            eprintln!();
        }
        true
    };
    for i in 0..ad.count {
        let out = &numbered(&ad.out, i, ad.count);
        let options = GenerateOptions { seed: options.seed + i as u64, ..options.clone() };
        let started = if i == 0 { started } else { web_time_now() };
        let generated =
            pollster::block_on(generate(&loaded.model, &product, reference.as_ref(), &options, &mut progress))
                .map_err(|e| e.to_string())?;
        generated.image.save(out).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        if let (Some(path), Some(used)) = (&ad.reference.reference_seen_out, &generated.reference) {
            used.seen.save(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        let load_ms = (i == 0).then_some(loaded.load_ms);
        let report = ad_report(out, &options, &generated, &product, &loaded, run.device.device, load_ms, started);
        for note in &generated.notes {
            eprintln!("adcanvas: {note}");
        }
        println!("{}", serde_json::to_string_pretty(&report).expect("report serialises"));
    }
    Ok(())
}

/// One ad's JSON report: what was made, how, on which device, and how long each stage took.
#[allow(clippy::too_many_arguments)] // the report's sources, each a different thing
fn ad_report(
    out: &Path,
    options: &GenerateOptions,
    generated: &Generated,
    product: &Product,
    loaded: &Loaded,
    device_asked: DeviceArg,
    load_ms: Option<f64>,
    started: std::time::Instant,
) -> serde_json::Value {
    let model = &loaded.model;
    let reference_report = generated.reference.as_ref().map(|r| {
        let o = &options.reference;
        json!({
            "scale": o.scale, "pfv": o.pfv, "pfv_threshold": o.pfv_config.threshold, "region_masks": o.region_masks,
            "patches": r.grid.visible.len(), "hidden_patches": r.hidden_patches(), "tokens": r.tokens,
        })
    });
    let mut timings = serde_json::Map::new();
    if let Some(ms) = load_ms {
        timings.insert("load_model".into(), json!(round1(ms)));
    }
    for (stage, ms) in &generated.timings.0 {
        timings.insert((*stage).into(), json!(round1(*ms)));
    }
    timings.insert("total".into(), json!(round1(started.elapsed().as_secs_f64() * 1000.0)));
    let p = &generated.placement;
    json!({
        "output": out.display().to_string(),
        "width": options.width,
        "height": options.height,
        "steps": options.steps,
        "seed": options.seed,
        "scheduler": options.scheduler.name(),
        "device": loaded.opened.kind(),
        "device_detail": device_report(device_asked, &loaded.opened),
        "model": model.manifest.name,
        "model_label": model.manifest.label,
        "quantized_weights": match model.quantized { QuantizedWeights::Keep => "keep", QuantizedWeights::Expand => "expand" },
        "device_weights_mb": (model.device_weight_bytes as f64 / 1048576.0 * 10.0).round() / 10.0,
        "trained": model.manifest.trained,
        "prompt_used": model.prompt_used(),
        "reference": reference_report,
        "depth": generated.depth_used.then(|| json!({ "scale": options.depth_scale })),
        "anchor_product": options.anchor_product,
        "refined_from_half_size": generated.timings.0.iter().any(|(stage, _)| *stage == "first pass"),
        "vae_tile": generated.vae_tile,
        "gpu_binding_limit_mb": adcanvas::gpu::max_buffer_bytes(&model.device).map(|b| b >> 20),
        "mask_source": mask_source_name(&product.mask.source),
        "mask_area": round4(product.mask.area_fraction() as f64),
        "placement": { "x": p.x, "y": p.y, "w": p.w, "h": p.h, "scale": p.scale },
        "notes": generated.notes,
        "timings_ms": timings,
    })
}

/// `out` itself for a single ad; else `out` with `-N` (from 1) before its extension.
fn numbered(out: &Path, i: u32, count: u32) -> PathBuf {
    if count == 1 {
        return out.to_path_buf();
    }
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match out.extension() {
        Some(ext) => format!("{stem}-{}.{}", i + 1, ext.to_string_lossy()),
        None => format!("{stem}-{}", i + 1),
    };
    out.with_file_name(name)
}

fn run_demo_model(out: &Path, seed: u64) -> Result<(), String> {
    let device = burn::tensor::Device::flex();
    let (manifest, files) = create_demo_pack(seed, &device).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    for (component, entry) in &manifest.files {
        let path = out.join(&entry.file);
        std::fs::write(&path, &files[component]).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let path = out.join("manifest.json");
    std::fs::write(&path, manifest.to_json() + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("wrote {} ({})", out.display(), manifest.label);
    Ok(())
}

fn web_time_now() -> std::time::Instant {
    std::time::Instant::now()
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round4(v: f64) -> f64 {
    (v * 10000.0).round() / 10000.0
}
