//! Native device choice: which wgpu adapter, and whether it works, decided without ever hanging.
//!
//! wgpu offers every adapter it finds, software rasterizers and OpenGL included; on a machine
//! without a GPU driver its OpenGL (EGL) path can panic and deadlock. So: only the backends our
//! kernels are built for (Vulkan, Metal, DX12; `WGPU_BACKEND` overrides, `gl` included), software
//! adapters only when `--device gpu` asks for a GPU explicitly, and the chosen adapter opened and
//! given one small checked computation on a worker thread that the caller waits for with a time
//! limit. A GPU that fails or does not answer is an error under `gpu` and the CPU, with a note,
//! under `auto`.

use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use burn::tensor::wgpu::{WgpuSetup, wgpu};
use burn::tensor::{Device, Tensor, TensorData};

use super::{AdapterReport, DeviceChoice, DeviceError, OpenedDevice, set_buffer_limit, watchdog};

/// How the GPU is opened.
#[derive(Debug, Clone)]
pub struct GpuOptions {
    /// Open the GPU as if it bound at most this many bytes per storage buffer (and allocated at
    /// most twice that per buffer, as WebGPU's defaults of 128 and 256 MiB do), every other limit
    /// and feature as the adapter offers. Some browser adapters offer no more than those
    /// defaults; this is how a native build checks that SD-size models still run there.
    pub binding_limit: Option<u64>,
    /// How long opening the adapter and the self-test may take before the GPU counts as hung.
    pub self_test_timeout: Duration,
}

impl Default for GpuOptions {
    fn default() -> Self {
        let seconds = std::env::var("ADCANVAS_SELF_TEST_TIMEOUT").ok().and_then(|s| s.parse().ok()).unwrap_or(60.0);
        Self { binding_limit: None, self_test_timeout: Duration::from_secs_f64(seconds) }
    }
}

/// The GPU this process opened (or the reason it could not), with the binding limit it was
/// opened with: burn's wgpu runtime is registered once per process.
static OPENED: Mutex<Option<(Option<u64>, Result<(Device, AdapterReport), String>)>> = Mutex::new(None);

/// Opens the device `choice` names; see the module's documentation for the rules.
pub fn open(choice: DeviceChoice, options: &GpuOptions) -> Result<OpenedDevice, DeviceError> {
    if choice == DeviceChoice::Cpu {
        return Ok(OpenedDevice::cpu(None));
    }
    let allow_software = choice == DeviceChoice::Gpu;
    let mut opened = OPENED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    super::configure_kernels();
    if let Some((limit, result)) = opened.as_ref() {
        if options.binding_limit.is_some() && *limit != options.binding_limit {
            return Err(DeviceError(
                "the GPU was already opened in this process; a binding limit must be set first".into(),
            ));
        }
        return match result.clone() {
            Ok((_, adapter)) if adapter.software && !allow_software => Ok(OpenedDevice::cpu(Some(format!(
                "running on the CPU: {} is a software adapter (--device gpu uses it)",
                adapter.name
            )))),
            Ok((device, adapter)) => Ok(OpenedDevice { device, adapter: Some(adapter), note: None }),
            Err(why) => fall_back_or_fail(choice, why),
        };
    }
    match open_on_worker(allow_software, options) {
        Outcome::NoAdapter(why) => fall_back_or_fail(choice, why),
        Outcome::Opened(result) => {
            *opened = Some((options.binding_limit, result.clone()));
            match result {
                Ok((device, adapter)) => Ok(OpenedDevice { device, adapter: Some(adapter), note: None }),
                Err(why) => fall_back_or_fail(choice, why),
            }
        }
    }
}

/// Under `auto`, the CPU with a note saying why; under `gpu`, the error.
fn fall_back_or_fail(choice: DeviceChoice, why: String) -> Result<OpenedDevice, DeviceError> {
    match choice {
        DeviceChoice::Auto => Ok(OpenedDevice::cpu(Some(format!("running on the CPU: {why}")))),
        _ => Err(DeviceError(why)),
    }
}

enum Outcome {
    /// No adapter was suitable; nothing was opened, so a later call may ask again.
    NoAdapter(String),
    /// An adapter was opened (and registered with burn), and worked or failed.
    Opened(Result<(Device, AdapterReport), String>),
}

/// What the worker thread tells the caller as it goes.
enum Message {
    NoAdapter(String),
    Chosen(AdapterReport),
    Done(Result<Device, String>),
}

fn open_on_worker(allow_software: bool, options: &GpuOptions) -> Outcome {
    let (send, receive) = mpsc::channel();
    let binding_limit = options.binding_limit;
    let worker = std::thread::Builder::new().name("adcanvas-gpu-open".into()).spawn(move || {
        let (instance, adapter) = match choose_adapter(allow_software) {
            Ok(chosen) => chosen,
            Err(why) => return drop(send.send(Message::NoAdapter(why))),
        };
        let report = describe(&adapter.get_info());
        crate::kernels::set_adapter_is_swiftshader(report.name.to_lowercase().contains("swiftshader"));
        let _ = send.send(Message::Chosen(report.clone()));
        // A panic in wgpu or cubecl is this GPU failing, not the program: catch it and say so.
        let result = watchdog::quietly(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| open_and_test(instance, adapter, binding_limit)))
        })
        .unwrap_or_else(|panic| Err(format!("it panicked: {}", watchdog::panic_message(&*panic))));
        let _ = send.send(Message::Done(result));
    });
    if let Err(e) = worker {
        return Outcome::NoAdapter(format!("no thread could be started to open the GPU ({e})"));
    }
    let deadline = Instant::now() + options.self_test_timeout;
    let mut chosen: Option<AdapterReport> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match receive.recv_timeout(left) {
            Ok(Message::NoAdapter(why)) => return Outcome::NoAdapter(why),
            Ok(Message::Chosen(report)) => chosen = Some(report),
            Ok(Message::Done(result)) => {
                let report = chosen.expect("the adapter is chosen before it is opened");
                return Outcome::Opened(match result {
                    Ok(device) => Ok((device, report)),
                    Err(why) => {
                        Err(format!("the GPU {} ({}) failed its self-test: {why}", report.name, report.backend))
                    }
                });
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let what = match &chosen {
                    Some(report) => format!("the GPU {} ({})", report.name, report.backend),
                    None => "looking for a GPU adapter".to_string(),
                };
                return Outcome::Opened(Err(format!(
                    "{what} did not answer within {:.0} s",
                    options.self_test_timeout.as_secs_f64()
                )));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Outcome::Opened(Err("the thread opening the GPU ended without an answer".into()));
            }
        }
    }
}

/// The backends our kernels are built for, unless `WGPU_BACKEND` names others (`gl` included).
fn backends() -> wgpu::Backends {
    wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY)
}

/// Software rasterizers that some drivers report as an ordinary GPU.
fn is_software(info: &wgpu::AdapterInfo) -> bool {
    let name = info.name.to_lowercase();
    info.device_type == wgpu::DeviceType::Cpu
        || ["llvmpipe", "lavapipe", "swiftshader", "softpipe", "basic render driver"].iter().any(|s| name.contains(s))
}

fn describe(info: &wgpu::AdapterInfo) -> AdapterReport {
    let driver = [info.driver.as_str(), info.driver_info.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    AdapterReport {
        name: info.name.clone(),
        backend: info.backend.to_str().to_string(),
        software: is_software(info),
        driver,
    }
}

/// The best adapter of the allowed kinds: discrete, then integrated, then virtual GPUs, then
/// (when allowed) software ones. Err says what was found and why none was taken.
fn choose_adapter(allow_software: bool) -> Result<(wgpu::Instance, wgpu::Adapter), String> {
    // For the tests of the fallback path on machines whose only adapter is a software one.
    let allow_software = allow_software || std::env::var_os("ADCANVAS_TEST_SOFTWARE_AS_HARDWARE").is_some();
    let backends = backends();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    let rank = |info: &wgpu::AdapterInfo| match info.device_type {
        _ if is_software(info) => 4,
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        _ => 3,
    };
    let skipped: Vec<String> = adapters
        .iter()
        .map(|a| a.get_info())
        .filter(|info| is_software(info) && !allow_software)
        .map(|info| format!("{} ({}) is a software adapter", info.name, info.backend.to_str()))
        .collect();
    let best = adapters
        .into_iter()
        .filter(|a| allow_software || !is_software(&a.get_info()))
        .min_by_key(|a| rank(&a.get_info()));
    best.map(|adapter| (instance, adapter)).ok_or_else(|| {
        let looked = if wgpu::Backends::from_env().is_some() {
            format!("WGPU_BACKEND={}", std::env::var("WGPU_BACKEND").unwrap_or_default())
        } else {
            "Vulkan, Metal or DX12".to_string()
        };
        let kind = if allow_software { "" } else { "hardware " };
        let mut why = format!("no {kind}GPU adapter was found (looked for {looked}");
        if !skipped.is_empty() {
            why.push_str(&format!("; {}; --device gpu uses it", skipped.join(", ")));
        }
        why.push(')');
        why
    })
}

/// Opens `adapter` as burn's own device request does, registers it with burn, and runs the
/// self-test on it.
fn open_and_test(
    instance: wgpu::Instance,
    adapter: wgpu::Adapter,
    binding_limit: Option<u64>,
) -> Result<Device, String> {
    let mut limits = adapter.limits();
    if let Some(limit) = binding_limit {
        limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(limit);
        limits.max_buffer_size = limits.max_buffer_size.min(2 * limit);
    }
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("adcanvas"),
        required_features: adapter.features().difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
        required_limits: limits.clone(),
        memory_hints: wgpu::MemoryHints::MemoryUsage,
        trace: wgpu::Trace::Off,
        // The same as burn's own device request (cubecl-wgpu's `wgsl::try_request_device`).
        experimental_features: unsafe { wgpu::ExperimentalFeatures::enabled() },
    }))
    .map_err(|e| format!("the device could not be opened ({e})"))?;
    let backend = adapter.get_info().backend;
    let setup = WgpuSetup { instance, adapter, device, queue, backend };
    let device = Device::wgpu_options().setup(setup).init().map_err(|e| format!("burn refused the device ({e:?})"))?;
    set_buffer_limit(limits.max_storage_buffer_binding_size.min(limits.max_buffer_size));
    self_test(&device)?;
    Ok(device)
}

/// One small matrix product, an elementwise op and a read-back, checked against the CPU: the
/// kernels compile, run and return what they should.
pub fn self_test(device: &Device) -> Result<(), String> {
    let n = 8;
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 - 3.0).collect();
    let mut expected = vec![0.0f32; n * n];
    for i in 0..n {
        for j in 0..n {
            expected[i * n + j] = (0..n).map(|k| a[i * n + k] * a[j * n + k]).sum::<f32>() + 1.0;
        }
    }
    let forced = std::env::var("ADCANVAS_SELF_TEST").unwrap_or_default();
    match forced.as_str() {
        "hang" => loop {
            std::thread::park();
        },
        "panic" => panic!("forced self-test panic (ADCANVAS_SELF_TEST=panic)"),
        _ => {}
    }
    let x = Tensor::<2>::from_data(TensorData::new(a, [n, n]), device);
    let y = x.clone().matmul(x.transpose()).add_scalar(1.0);
    let mut got = y.into_data().try_to_vec::<f32>().map_err(|e| format!("the result could not be read ({e:?})"))?;
    if forced == "wrong" {
        got[0] += 1.0;
    }
    let worst = got.iter().zip(&expected).map(|(g, e)| (g - e).abs()).fold(0.0f32, f32::max);
    if got.len() != expected.len() || !worst.is_finite() || worst > 1e-3 {
        return Err(format!("an 8×8 matrix product came back wrong (largest error {worst})"));
    }
    Ok(())
}
