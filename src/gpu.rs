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
            let device = Device::wgpu_options().init_async().await.map_err(|e| DeviceError(format!("{e:?}")))?;
            *cached = Some(device.clone());
            Ok(device)
        }
    }
}
