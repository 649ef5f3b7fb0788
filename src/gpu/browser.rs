//! What the browser's WebGPU offers, asked before a device is chosen: under
//! [`DeviceChoice::Auto`](super::DeviceChoice::Auto) a browser without a usable hardware GPU
//! runs on the CPU (wasm SIMD128), as the native build does, and the page says why.
//!
//! A WebGPU adapter is usable when it exists, has the "subgroups" feature our GPU kernels
//! need, and is not a fallback (software) adapter: SwiftShader computes on the same CPU cores
//! as our CPU path, many times slower (BENCHMARKS.md: 518 s for a first ad against seconds).

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// The answer to "can adcanvas use this browser's WebGPU?".
#[derive(Debug, Clone, PartialEq)]
pub struct WebGpuProbe {
    /// A hardware adapter with subgroups: the GPU path will run.
    pub usable: bool,
    /// The adapter is there but is a fallback (software) one.
    pub software: bool,
    /// What was found, and when unusable, what the user can do to get a GPU.
    pub message: String,
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// Asks `navigator.gpu` for an adapter and checks it, without opening a device.
pub async fn probe() -> WebGpuProbe {
    let unusable = |message: &str| WebGpuProbe { usable: false, software: false, message: message.to_string() };
    let navigator = get(&js_sys::global(), "navigator");
    let gpu = get(&navigator, "gpu");
    if gpu.is_undefined() || gpu.is_null() {
        return unusable(
            "This browser does not offer WebGPU. Use a current Chrome or Edge (version 113 or later), Safari 26, \
             or Firefox with WebGPU enabled; on Linux Chrome, enable it at chrome://flags/#enable-unsafe-webgpu. \
             Also check that hardware acceleration is on.",
        );
    }
    let adapter = match request_adapter(&gpu).await {
        Ok(Some(adapter)) => adapter,
        Ok(None) => {
            return unusable(
                "WebGPU is present but found no usable GPU adapter (the GPU may be blocklisted or hardware \
                 acceleration turned off). Turn on hardware acceleration in the browser settings, update the \
                 graphics driver, or try another browser.",
            );
        }
        Err(e) => return unusable(&format!("WebGPU failed to start: {e}. Reload the page or try another browser.")),
    };
    if is_fallback(&adapter) {
        let info = get(&adapter, "info");
        let name = [get(&info, "vendor"), get(&info, "architecture")]
            .iter()
            .filter_map(JsValue::as_string)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let name = if name.is_empty() { "a software renderer".to_string() } else { name };
        return WebGpuProbe {
            usable: false,
            software: true,
            message: format!(
                "This browser's WebGPU runs on {name}, a software adapter: no GPU is being used. \
                 Turn on hardware acceleration in the browser settings or update the graphics driver for GPU speed."
            ),
        };
    }
    if !has_feature(&adapter, "subgroups") {
        return unusable(
            "This browser's WebGPU lacks the \"subgroups\" feature that adcanvas's GPU kernels need. \
             Use a current Chrome or Edge (version 134 or later), or update this browser.",
        );
    }
    WebGpuProbe { usable: true, software: false, message: "WebGPU is available.".to_string() }
}

/// Whether the browser's default adapter is SwiftShader: named so in its info, or flagged as a
/// fallback adapter (Chromium's fallback is SwiftShader). The page runs there only when asked
/// (`?device=gpu`), and the launch choices measured for it apply ([`crate::kernels::matmul`]).
pub async fn adapter_is_swiftshader() -> bool {
    let gpu = get(&get(&js_sys::global(), "navigator"), "gpu");
    if gpu.is_undefined() || gpu.is_null() {
        return false;
    }
    match request_adapter(&gpu).await {
        Ok(Some(adapter)) => {
            let info = get(&adapter, "info");
            let named = ["architecture", "description", "device"]
                .iter()
                .filter_map(|key| get(&info, key).as_string())
                .any(|s| s.to_lowercase().contains("swiftshader"));
            is_fallback(&adapter) || named
        }
        _ => false,
    }
}

/// `adapter.info.isFallbackAdapter` (the older `adapter.isFallbackAdapter` where `info` lacks it).
fn is_fallback(adapter: &JsValue) -> bool {
    let from_info = get(&get(adapter, "info"), "isFallbackAdapter");
    let flag = if from_info.is_undefined() { get(adapter, "isFallbackAdapter") } else { from_info };
    flag.is_truthy()
}

fn has_feature(adapter: &JsValue, feature: &str) -> bool {
    let features = get(adapter, "features");
    let has: Result<Function, _> = get(&features, "has").dyn_into();
    has.ok().and_then(|f| f.call1(&features, &JsValue::from_str(feature)).ok()).map(|v| v.is_truthy()).unwrap_or(false)
}

async fn request_adapter(gpu: &JsValue) -> Result<Option<JsValue>, String> {
    let f: Function =
        get(gpu, "requestAdapter").dyn_into().map_err(|_| "navigator.gpu.requestAdapter is missing".to_string())?;
    let promise: Promise = f
        .call0(gpu)
        .map_err(|e| format!("{e:?}"))?
        .dyn_into()
        .map_err(|_| "requestAdapter did not return a promise".to_string())?;
    let adapter = JsFuture::from(promise).await.map_err(|e| format!("{e:?}"))?;
    Ok(if adapter.is_null() || adapter.is_undefined() { None } else { Some(adapter) })
}

/// Lets the page or worker's event loop run: a CPU step never awaits anything that does, so
/// without this a worker would see the user's Cancel only after the whole ad.
pub async fn let_host_run() {
    let promise = Promise::new(&mut |resolve, _reject| {
        let global = js_sys::global();
        let set_timeout: Result<Function, _> = get(&global, "setTimeout").dyn_into();
        let queued = set_timeout.ok().map(|f| f.call2(&global, &resolve, &JsValue::from(0)).is_ok());
        if queued != Some(true) {
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    let _ = JsFuture::from(promise).await;
}
