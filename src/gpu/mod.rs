//! Choosing the burn device: WebGPU in the browser; natively a wgpu adapter (Vulkan, Metal,
//! DX12) that passes a self-test, or burn's pure-Rust `flex` CPU device.
//!
//! Natively, [`open`] never hangs and never hands back a device that has not computed one
//! checked result: the adapter is chosen by kind ([`select`]), opened and tested on a worker
//! thread with a time limit, and under [`DeviceChoice::Auto`] anything that fails falls back to
//! the CPU with a note saying why. [`watchdog`] then ends a run whose GPU stops answering.

#[cfg(target_arch = "wasm32")]
pub mod browser;
#[cfg(not(target_arch = "wasm32"))]
pub mod kernel_cache;
#[cfg(not(target_arch = "wasm32"))]
pub mod select;
pub mod watchdog;

use burn::tensor::Device;

/// Which device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A hardware GPU that passes the self-test (natively) or has what our kernels need (in a
    /// browser, [`browser::probe`]), else the CPU, with a note saying why. Software adapters
    /// (lavapipe, SwiftShader, WARP) are skipped: our CPU path is far faster than a GPU emulated
    /// on the same cores.
    Auto,
    /// The best GPU adapter wgpu offers, software ones included (WebGPU in a browser), or an error.
    Gpu,
    /// burn's `flex` backend on the CPU: needs no GPU driver at all.
    Cpu,
}

impl DeviceChoice {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Gpu => "gpu",
            Self::Cpu => "cpu",
        }
    }
}

/// Why no device could be opened.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceError(pub String);

impl std::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "No GPU could be used ({}). ", self.0)?;
        if cfg!(target_arch = "wasm32") {
            f.write_str(
                "The GPU path needs WebGPU: use a current Chrome, Edge or Firefox with WebGPU enabled, \
                 or run on the CPU (device \"auto\" or \"cpu\").",
            )
        } else {
            f.write_str(
                "Install a Vulkan driver (e.g. mesa-vulkan-drivers), or run with --device auto or --device cpu.",
            )
        }
    }
}

impl std::error::Error for DeviceError {}

/// The adapter a GPU device runs on, as the report names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterReport {
    /// The driver's name for it, e.g. "NVIDIA H200" or "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// "vulkan", "metal", "dx12", "gl" or "webgpu".
    pub backend: String,
    /// A software rasterizer on the CPU (lavapipe, SwiftShader, WARP): slow, and said so.
    pub software: bool,
    /// The driver and its version, where the driver says.
    pub driver: String,
}

/// An opened device and how it was chosen.
#[derive(Debug, Clone)]
pub struct OpenedDevice {
    pub device: Device,
    /// The adapter, when `device` is a GPU.
    pub adapter: Option<AdapterReport>,
    /// What `auto` chose and why, when it did not simply take a hardware GPU.
    pub note: Option<String>,
}

impl OpenedDevice {
    /// "gpu" or "cpu": what the run actually used.
    pub fn kind(&self) -> &'static str {
        if self.adapter.is_some() { "gpu" } else { "cpu" }
    }

    fn cpu(note: Option<String>) -> Self {
        Self { device: Device::flex(), adapter: None, note }
    }
}

/// cubecl's autotuning effort natively, set once before the first GPU device opens: `minimal`,
/// unless `CUBECL_AUTOTUNE_LEVEL` or a `cubecl.toml` asks for another level.
///
/// A first ad pays for every kernel variant the autotuner compiles and times; at cubecl's
/// default level ("balanced") that is several per matmul and convolution shape, which is most
/// of a first ad on a software adapter and tens of seconds on a real GPU (BENCHMARKS.md).
/// The browser build has no autotuner at all (burn's `autotune` feature is native-only in
/// Cargo.toml): each op runs the kernel burn picks from the shape and the adapter's limits, so a
/// first ad compiles one kernel per shape and times none. Natively the autotuner's results are
/// kept between processes ([`kernel_cache`]).
pub fn configure_kernels() {
    use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    #[cfg(not(target_arch = "wasm32"))]
    let config = {
        use cubecl::config::autotune::AutotuneLevel;
        let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
        if std::env::var_os("CUBECL_AUTOTUNE_LEVEL").is_none()
            && matches!(config.autotune.level, AutotuneLevel::Balanced)
        {
            config.autotune.level = AutotuneLevel::Minimal;
        }
        // Our cache directory, unless a `cubecl.toml` names one (its default is the project's `target/`).
        use cubecl::config::cache::CacheConfig;
        if matches!(config.environment.path, CacheConfig::Target) {
            config.environment.path = CacheConfig::Directory(kernel_cache::open());
        }
        config
    };
    #[cfg(target_arch = "wasm32")]
    let config = CubeClRuntimeConfig::default();
    // Kept when the configuration was already read (a second device, or a test harness).
    let _ = CubeClRuntimeConfig::try_set(config);
}

/// Opens the chosen device: see [`OpenedDevice`] for what comes back. Natively the GPU is
/// opened once per process, on the first call; later calls reuse it (or its failure).
pub async fn open(choice: DeviceChoice) -> Result<OpenedDevice, DeviceError> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        select::open(choice, &select::GpuOptions::default())
    }
    #[cfg(target_arch = "wasm32")]
    {
        let gpu = |device| {
            let adapter = AdapterReport {
                name: "WebGPU".into(),
                backend: "webgpu".into(),
                software: false,
                driver: String::new(),
            };
            OpenedDevice { device, adapter: Some(adapter), note: None }
        };
        match choice {
            DeviceChoice::Cpu => Ok(OpenedDevice::cpu(None)),
            DeviceChoice::Gpu => Ok(gpu(open_browser_gpu().await?)),
            DeviceChoice::Auto => {
                let probe = browser::probe().await;
                if !probe.usable {
                    return Ok(OpenedDevice::cpu(Some(probe.message)));
                }
                Ok(match open_browser_gpu().await {
                    Ok(device) => gpu(device),
                    Err(e) => OpenedDevice::cpu(Some(format!("WebGPU did not open a device ({}).", e.0))),
                })
            }
        }
    }
}

/// Opens the chosen device and returns only the burn device (tests, the browser glue).
pub async fn open_device(choice: DeviceChoice) -> Result<Device, DeviceError> {
    open(choice).await.map(|opened| opened.device)
}

/// The browser's WebGPU device, opened once per page or worker; calls made while it is being
/// opened wait for it (two widgets opening at once on one page).
#[cfg(target_arch = "wasm32")]
async fn open_browser_gpu() -> Result<Device, DeviceError> {
    static GPU: futures_util::lock::Mutex<Option<Device>> = futures_util::lock::Mutex::new(None);
    // An async lock, held across the initialisation's await: a second caller awaits it (std's
    // mutex would panic on wasm as a recursive lock).
    let mut cached = GPU.lock().await;
    if let Some(device) = cached.clone() {
        return Ok(device);
    }
    configure_kernels();
    let (device, setup) =
        Device::wgpu_options().init_with_setup_async().await.map_err(|e| DeviceError(format!("{e:?}")))?;
    let limits = setup.device.limits();
    set_buffer_limit(limits.max_storage_buffer_binding_size.min(limits.max_buffer_size));
    crate::kernels::set_adapter_is_swiftshader(browser::adapter_is_swiftshader().await);
    *cached = Some(device.clone());
    Ok(device)
}

/// Lets the page or worker run its own events between CPU denoising steps (its Cancel button);
/// nothing natively, where the CLI's Ctrl-C and the watchdog run on threads of their own.
pub async fn let_host_run(device: &Device) {
    #[cfg(target_arch = "wasm32")]
    if *device == Device::flex() {
        browser::let_host_run().await;
    }
    #[cfg(not(target_arch = "wasm32"))]
    let _ = device;
}

/// The GPU's largest storage buffer binding (and buffer), in bytes, set when it is opened.
static GPU_BUFFER_LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

fn set_buffer_limit(bytes: u64) {
    let _ = GPU_BUFFER_LIMIT.set(bytes);
}

/// The most bytes one tensor may take on `device`: the opened GPU's storage binding limit
/// (WebGPU guarantees 128 MiB; burn asks for whatever the adapter offers), `None` on the CPU
/// device. The pipeline tiles the VAE to stay under it.
pub fn max_buffer_bytes(device: &Device) -> Option<u64> {
    if *device == Device::flex() { None } else { GPU_BUFFER_LIMIT.get().copied() }
}
