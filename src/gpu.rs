//! Choosing the burn device: WebGPU in the browser, wgpu (Vulkan, Metal, DX12) natively,
//! or burn's pure-Rust `flex` CPU device.

use burn::tensor::Device;

/// Which device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The best GPU adapter wgpu finds (WebGPU in a browser).
    Gpu,
    /// burn's `flex` backend on the CPU: slow, but needs no GPU driver at all.
    Cpu,
}

/// Why no device could be opened.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceError(pub String);

impl std::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "No GPU could be opened ({}). ", self.0)?;
        if cfg!(target_arch = "wasm32") {
            f.write_str("adcanvas needs WebGPU: use a current Chrome, Edge or Firefox with WebGPU enabled.")
        } else {
            f.write_str("Install a Vulkan driver (e.g. mesa-vulkan-drivers) or run with --device cpu.")
        }
    }
}

impl std::error::Error for DeviceError {}

/// Opens the chosen device. For the GPU this initialises wgpu and reports failure
/// instead of panicking later at the first tensor.
///
/// wgpu's runtime can be initialised once per process; later calls reuse that device, and
/// calls made while it is being opened wait for it (two threads in native tests; two
/// widgets opening at once on one page).
pub async fn open_device(choice: DeviceChoice) -> Result<Device, DeviceError> {
    static GPU: futures_util::lock::Mutex<Option<Device>> = futures_util::lock::Mutex::new(None);
    match choice {
        DeviceChoice::Cpu => Ok(Device::flex()),
        DeviceChoice::Gpu => {
            // An async lock, held across the initialisation's await: a second caller awaits
            // it (std's mutex would block a thread, and on wasm panic as a recursive lock).
            let mut cached = GPU.lock().await;
            if let Some(device) = cached.clone() {
                return Ok(device);
            }
            let (device, setup) =
                Device::wgpu_options().init_with_setup_async().await.map_err(|e| DeviceError(format!("{e:?}")))?;
            let limits = setup.device.limits();
            let _ = GPU_BUFFER_LIMIT.set(limits.max_storage_buffer_binding_size.min(limits.max_buffer_size));
            *cached = Some(device.clone());
            Ok(device)
        }
    }
}

/// Opens the GPU as if it could bind at most `limit` bytes per storage buffer (and allocate
/// at most twice that per buffer, as WebGPU's defaults of 128 and 256 MiB do), with every other
/// limit and feature the adapter offers. Why: some browser adapters offer no more than those
/// defaults, and this is how a native build checks that SD-size models still run there (the
/// VAE tiles itself, [`max_buffer_bytes`]). Like [`open_device`], once per process.
#[cfg(not(target_arch = "wasm32"))]
pub async fn open_device_with_binding_limit(limit: u64) -> Result<Device, DeviceError> {
    use burn::tensor::wgpu::{WgpuSetup, wgpu};
    let fail = |what: &str, e: &dyn std::fmt::Debug| DeviceError(format!("{what}: {e:?}"));
    let instance = wgpu::Instance::default();
    let adapter = instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .map_err(|e| fail("no adapter", &e))?;
    let mut limits = adapter.limits();
    limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(limit);
    limits.max_buffer_size = limits.max_buffer_size.min(2 * limit);
    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("adcanvas (limited bindings)"),
            required_features: adapter.features().difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
            required_limits: limits.clone(),
            memory_hints: wgpu::MemoryHints::MemoryUsage,
            trace: wgpu::Trace::Off,
            // The same as burn's own device request (cubecl-wgpu's `wgsl::try_request_device`).
            experimental_features: unsafe { wgpu::ExperimentalFeatures::enabled() },
        })
        .await
        .map_err(|e| fail("request_device", &e))?;
    let backend = adapter.get_info().backend;
    let setup = WgpuSetup { instance, adapter, device, queue, backend };
    let device =
        Device::wgpu_options().setup(setup).init().map_err(|e| fail("registering the device with burn", &e))?;
    GPU_BUFFER_LIMIT.set(limits.max_storage_buffer_binding_size.min(limits.max_buffer_size)).map_err(|_| {
        DeviceError("the GPU was already opened in this process; a binding limit must be set first".into())
    })?;
    Ok(device)
}

/// The GPU's largest storage buffer binding (and buffer), in bytes, set when it is opened.
static GPU_BUFFER_LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// The most bytes one tensor may take on `device`: the opened GPU's storage binding limit
/// (WebGPU guarantees 128 MiB; burn asks for whatever the adapter offers), `None` on the CPU
/// device. The pipeline tiles the VAE to stay under it.
pub fn max_buffer_bytes(device: &Device) -> Option<u64> {
    if *device == Device::flex() { None } else { GPU_BUFFER_LIMIT.get().copied() }
}
