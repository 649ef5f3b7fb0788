//! `adcanvas parity`: runs a converted pack's UNet and VAE decoder on inputs that PyTorch
//! ran (`scripts/sd15_parity.py`), and reports the largest difference, the timings and the
//! memory used. This is the full-size check behind the small parity fixtures in
//! `tests/parity.rs`: the same converter, loader and kernels at Stable Diffusion 1.5's
//! real shapes (512², batch 2), where buffer sizes and kernel choices differ from the
//! tiny configs CI can afford.

use std::path::Path;
use std::time::{Duration, Instant};

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use serde_json::{Value, json};

use crate::denoise::controlnet::ControlNetModel;
use crate::denoise::mepa::Conditioning;
use crate::denoise::unet::{ControlResiduals, UNet2DConditionModel};
use crate::gpu::max_buffer_bytes;
use crate::pack::Manifest;
use crate::pack::map_pack_dir;
use crate::pack::weights::{QuantizedWeights, Weights};
use crate::vae::{LatentDecoder, VaeModelConfig};

/// The inputs and PyTorch's outputs, by the names `scripts/sd15_parity.py` writes.
struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    fn values(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>), String> {
        let st = SafeTensors::deserialize(&self.bytes).map_err(|e| format!("parity inputs: {e}"))?;
        let view = st.tensor(name).map_err(|_| format!("parity inputs have no tensor `{name}`"))?;
        if view.dtype() != Dtype::F32 {
            return Err(format!("parity tensor `{name}` is {:?}, expected F32", view.dtype()));
        }
        let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        Ok((values, view.shape().to_vec()))
    }

    fn tensor<const D: usize>(&self, name: &str, device: &Device) -> Result<Tensor<D>, String> {
        let (values, shape) = self.values(name)?;
        let shape: [usize; D] =
            shape.try_into().map_err(|s: Vec<usize>| format!("`{name}` has rank {}, expected {D}", s.len()))?;
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }
}

/// Largest |got − want|, and the largest |want| for scale.
fn compare(got: &[f32], want: &[f32]) -> Result<(f32, f32), String> {
    if got.len() != want.len() {
        return Err(format!("output has {} values, PyTorch's has {}", got.len(), want.len()));
    }
    if got.iter().any(|v| !v.is_finite()) {
        return Err("the output holds NaN or infinite values".into());
    }
    let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    Ok((diff, want.iter().map(|v| v.abs()).fold(0.0, f32::max)))
}

/// One model's run against PyTorch's output.
struct Timed {
    max_abs_diff: f32,
    max_abs_reference: f32,
    first_ms: f64,
    warm_ms: Vec<f64>,
}

impl Timed {
    fn to_json(&self) -> Value {
        json!({
            "max_abs_diff": self.max_abs_diff, "max_abs_reference": self.max_abs_reference,
            "first_ms": ms(self.first_ms), "warm_ms": self.warm_ms.iter().map(|v| ms(*v)).collect::<Vec<_>>(),
        })
    }
}

/// What `adcanvas parity` runs. On a GPU the first run of each is mostly kernel compilation on
/// one CPU core, so a script can run one part per process and let them compile side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// One UNet call.
    Unet,
    /// The same batch, one call per sample at once: how the pipeline runs guidance's two halves
    /// on a CPU with threads (`pipeline::denoise`). Not in [`Part::ALL`]: asked for by name.
    UnetHalves,
    /// One call of the depth ControlNet on the UNet's inputs and `control_image`: its residuals.
    /// Not in [`Part::ALL`] (SD 1.5's parity inputs have no ControlNet): asked for by name.
    ControlNet,
    /// The ControlNet's batch as one call per sample at once, as the pipeline runs it beside
    /// each guidance half on the CPU.
    ControlNetHalves,
    /// The whole VAE decode.
    VaeDecode,
    /// The tiled VAE decode, with the tile side the reference saved.
    VaeDecodeTiled,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Unet, Part::VaeDecode, Part::VaeDecodeTiled];
}

/// How the timed runs go.
#[derive(Clone, Debug, Default)]
pub struct Timing<'a> {
    /// Timed runs after the first.
    pub repeats: usize,
    /// After each first run, create `<path>.ready` and wait until `path` exists before the
    /// timed runs: processes that compiled side by side can then be timed one at a time, so
    /// no process's GPU work lands inside another's timings.
    pub hold_until: Option<&'a Path>,
}

impl Timing<'_> {
    fn hold(&self, label: &str) -> Result<(), String> {
        let Some(path) = self.hold_until else { return Ok(()) };
        let mut ready = path.as_os_str().to_owned();
        ready.push(".ready");
        std::fs::write(&ready, label).map_err(|e| format!("cannot write {}: {e}", Path::new(&ready).display()))?;
        eprintln!("adcanvas parity: {label}: holding until {} exists", path.display());
        while !path.exists() {
            std::thread::sleep(Duration::from_millis(50));
            crate::gpu::watchdog::beat("holding for the next process");
        }
        std::fs::remove_file(&ready).map_err(|e| format!("cannot remove {}: {e}", Path::new(&ready).display()))
    }
}

/// Runs `run` `1 + repeats` times (the first pays kernel compilation and autotuning),
/// reading the output back each time so the GPU work is inside the timing, and compares
/// the first output with `want`. Each figure also goes to stderr as soon as it is known,
/// so a run cut short still says how far it got.
fn timed(label: &str, timing: &Timing, want: &[f32], run: impl Fn() -> Tensor<4>) -> Result<Timed, String> {
    let read = |started: Instant| -> Result<(Vec<f32>, f64), String> {
        let output = run().into_data().try_to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
        Ok((output, started.elapsed().as_secs_f64() * 1000.0))
    };
    let (output, first_ms) = read(Instant::now())?;
    crate::gpu::watchdog::beat("a first parity run");
    let (max_abs_diff, max_abs_reference) = compare(&output, want)?;
    eprintln!(
        "adcanvas parity: {label}: first run {first_ms:.1} ms, max abs diff {max_abs_diff:.3e} (PyTorch's max abs {max_abs_reference:.3})"
    );
    timing.hold(label)?;
    let mut warm_ms = Vec::new();
    for i in 0..timing.repeats {
        warm_ms.push(read(Instant::now())?.1);
        crate::gpu::watchdog::beat("a warm parity run");
        eprintln!("adcanvas parity: {label}: warm run {}: {:.1} ms", i + 1, warm_ms[i]);
    }
    Ok(Timed { max_abs_diff, max_abs_reference, first_ms, warm_ms })
}

/// ControlNet residuals as PyTorch's script saves them: each residual (down blocks in order,
/// then the mid block) flattened, in one row `[1, 1, 1, n]`; `parts` are the batch's pieces in
/// order, whose residuals are joined along the batch first.
fn flat_residuals(parts: Vec<ControlResiduals>) -> Tensor<4> {
    let joined = |pick: &dyn Fn(&ControlResiduals) -> Tensor<4>| Tensor::cat(parts.iter().map(pick).collect(), 0);
    let count = parts[0].down.len();
    let rows = (0..count).map(|i| joined(&|r| r.down[i].clone())).chain(std::iter::once(joined(&|r| r.mid.clone())));
    let flat: Vec<Tensor<4>> = rows
        .map(|t| {
            let n = t.shape().num_elements();
            t.reshape([1, 1, 1, n])
        })
        .collect();
    Tensor::cat(flat, 3)
}

/// Peak and current resident memory of this process in MiB, and the anonymous part of the
/// current (what the process itself holds, not file pages the kernel can drop) (Linux only).
fn host_memory_mb() -> Option<(f64, f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |key: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let kb: f64 = line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?, field("RssAnon:")?))
}

/// What burn's GPU allocator holds, in MB: live bytes and reserved (pooled) bytes.
/// Samples the process's anonymous resident memory every 20 ms until dropped, keeping the
/// peak: unlike VmHWM it leaves out the pack's memory-mapped file pages, so it shows whether
/// loading ever held two copies of the weights.
struct AnonymousPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<f64>>,
}

impl AnonymousPeak {
    fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0.0f64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some((_, _, anon)) = host_memory_mb() {
                    peak = peak.max(anon);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            peak
        });
        Self { stop, thread: Some(thread) }
    }

    fn peak_mb(mut self) -> Option<f64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take()?.join().ok().filter(|p| *p > 0.0)
    }
}

fn device_memory_mb(device: &Device) -> Value {
    match device.memory_pool_usage() {
        Some(u) => json!({ "in_use_mb": mb(u.bytes_in_use), "reserved_mb": mb(u.bytes_reserved) }),
        None => Value::Null,
    }
}

fn mb(bytes: u64) -> f64 {
    (bytes as f64 / 1048576.0 * 10.0).round() / 10.0
}

fn ms(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Loads the pack at `pack` on `device`, runs each of `parts` on the inputs PyTorch saved
/// (the UNet on `sample`/`timestep`/`context`, the VAE decoder on `latents`, each
/// `1 + timing.repeats` times), and compares with PyTorch's `unet_out`, `decoded` and
/// `decoded_tiled`. Only the models that `parts` use are loaded. `quantized` chooses, from
/// the manifest, whether a q8/q4 pack's weights stay quantised on the device. Returns the
/// report; errors say which step failed.
pub fn check_pack(
    pack: &Path,
    reference: &Path,
    device: &Device,
    parts: &[Part],
    timing: &Timing,
    quantized: impl Fn(&Manifest) -> QuantizedWeights,
) -> Result<Value, String> {
    let reference =
        Reference { bytes: std::fs::read(reference).map_err(|e| format!("cannot read {}: {e}", reference.display()))? };
    let started = Instant::now();
    let anonymous_peak = AnonymousPeak::start();
    let (manifest, files) = map_pack_dir(pack).map_err(|e| e.to_string())?;
    let read_ms = started.elapsed().as_secs_f64() * 1000.0;
    let dtype = manifest.file("unet").map_err(|e| e.to_string())?.dtype.clone();
    let pack_mb: f64 = manifest.files.values().map(|f| f.bytes as f64 / 1048576.0).sum();
    let quantized = quantized(&manifest);
    let weights = |name: &str| -> Result<Weights, String> {
        let entry = manifest.file(name).map_err(|e| e.to_string())?;
        let bytes: &[u8] = &files[name];
        manifest.verify(name, bytes).map_err(|e| e.to_string())?;
        Weights::from_safetensors(&entry.file, bytes, device)
            .map(|w| w.with_quantized(quantized))
            .map_err(|e| e.to_string())
    };
    let unet = match parts.iter().any(|p| matches!(p, Part::Unet | Part::UnetHalves)) {
        true => Some(UNet2DConditionModel::load(&weights("unet")?, &manifest.unet).map_err(|e| e.to_string())?),
        false => None,
    };
    let controlnet = match parts.iter().any(|p| matches!(p, Part::ControlNet | Part::ControlNetHalves)) {
        true => {
            let config = manifest.controlnet.as_ref().ok_or("this pack has no ControlNet")?;
            Some(ControlNetModel::load(&weights("controlnet")?, config).map_err(|e| e.to_string())?)
        }
        false => None,
    };
    let decoder = match parts.iter().any(|p| matches!(p, Part::VaeDecode | Part::VaeDecodeTiled)) {
        true => Some(LatentDecoder::load(&weights("vae")?, &manifest.vae).map_err(|e| e.to_string())?),
        false => None,
    };
    // Wait for the uploads so the load time is the load's.
    let _ = Tensor::<1>::zeros([1], device).into_data().try_to_vec::<f32>();
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    drop(files);
    let host_after_load = host_memory_mb();
    let anonymous_peak_during_load = anonymous_peak.peak_mb();
    let device_after_load = device_memory_mb(device);
    eprintln!(
        "adcanvas parity: {dtype} pack loaded in {load_ms:.0} ms (quantised weights: {quantized:?}; device memory {device_after_load}, host anonymous peak {anonymous_peak_during_load:?} MB)"
    );

    let (mut unet_run, mut halves_run) = (None, None);
    if let Some(unet) = &unet {
        let sample: Tensor<4> = reference.tensor("sample", device)?;
        let context: Tensor<3> = reference.tensor("context", device)?;
        let (t, _) = reference.values("timestep")?;
        let timestep = *t.first().ok_or("`timestep` is empty")?;
        let want = reference.values("unet_out")?.0;
        if parts.contains(&Part::Unet) {
            unet_run = Some(timed("UNet", timing, &want, || unet.forward(sample.clone(), timestep, &context))?);
        }
        if parts.contains(&Part::UnetHalves) {
            let batch = sample.dims()[0];
            if batch != 2 {
                return Err(format!("--part unet-halves needs a batch of 2, the inputs have {batch}"));
            }
            let half = |i| unet.forward(sample.clone().narrow(0, i, 1), timestep, &context.clone().narrow(0, i, 1));
            halves_run = Some(timed("UNet, halves at once", timing, &want, || {
                let (a, b) = crate::pipeline::both(|| half(0), || half(1));
                Tensor::cat(vec![a, b], 0)
            })?);
        }
    }
    let device_after_unet = device_memory_mb(device);

    let (mut control_run, mut control_halves_run) = (None, None);
    if let Some(controlnet) = &controlnet {
        let sample: Tensor<4> = reference.tensor("sample", device)?;
        let sample = sample.narrow(1, 0, controlnet.config().in_channels);
        let context: Tensor<3> = reference.tensor("context", device)?;
        let image: Tensor<4> = reference.tensor("control_image", device)?;
        let (t, _) = reference.values("timestep")?;
        let timestep = *t.first().ok_or("`timestep` is empty")?;
        let want = reference.values("control_out")?.0;
        let call = |i: usize, n: usize| {
            let context = Conditioning::text(context.clone().narrow(0, i, n));
            controlnet.forward(sample.clone().narrow(0, i, n), timestep, &context, image.clone().narrow(0, i, n), 1.0)
        };
        if parts.contains(&Part::ControlNet) {
            let batch = sample.dims()[0];
            control_run = Some(timed("ControlNet", timing, &want, || flat_residuals(vec![call(0, batch)]))?);
        }
        if parts.contains(&Part::ControlNetHalves) {
            let batch = sample.dims()[0];
            if batch != 2 {
                return Err(format!("--part controlnet-halves needs a batch of 2, the inputs have {batch}"));
            }
            control_halves_run = Some(timed("ControlNet, halves at once", timing, &want, || {
                let (a, b) = crate::pipeline::both(|| call(0, 1), || call(1, 1));
                flat_residuals(vec![a, b])
            })?);
        }
    }

    let (mut vae_run, mut tiled_run) = (None, None);
    if let Some(decoder) = &decoder {
        let latents: Tensor<4> = reference.tensor("latents", device)?;
        let [_, _, lh, lw] = latents.dims();
        let scaled = latents.mul_scalar(manifest.vae.scaling_factor());
        if parts.contains(&Part::VaeDecode) {
            // The whole decode, unless it would not fit the device's buffers (a limited adapter).
            let peak = match &manifest.vae {
                VaeModelConfig::Kl(config) => config.decoder_peak_bytes(lh, lw),
                VaeModelConfig::Tiny(_) => 0,
            };
            match max_buffer_bytes(device) {
                Some(limit) if peak > limit => {
                    eprintln!(
                        "adcanvas parity: whole VAE decode skipped: it needs {} MiB buffers, the device binds {}",
                        peak >> 20,
                        limit >> 20
                    )
                }
                _ => {
                    vae_run = Some(timed("VAE decode", timing, &reference.values("decoded")?.0, || {
                        decoder.decode(scaled.clone())
                    })?)
                }
            }
        }
        // The tiled decode (diffusers' `enable_tiling()` with the script's tile side), when saved.
        if parts.contains(&Part::VaeDecodeTiled)
            && let Ok((tile, _)) = reference.values("vae_tile")
        {
            let tile = *tile.first().ok_or("`vae_tile` is empty")? as usize;
            let run = timed("tiled VAE decode", timing, &reference.values("decoded_tiled")?.0, || {
                decoder.decode_tiled(scaled.clone(), Some(tile))
            })?;
            tiled_run = Some(json!({ "tile": tile, "run": run.to_json() }));
        }
    }

    let host = host_memory_mb();
    Ok(json!({
        "pack": pack.display().to_string(),
        "dtype": dtype,
        "quantized_weights": match quantized { QuantizedWeights::Keep => "keep", QuantizedWeights::Expand => "expand" },
        "pack_mb": mb((pack_mb * 1048576.0) as u64),
        "shapes": {
            "sample": reference.values("sample")?.1, "context": reference.values("context")?.1, "latents": reference.values("latents")?.1,
        },
        "load_ms": { "read_files": ms(read_ms), "total": ms(load_ms) },
        "unet": unet_run.map(|r| r.to_json()),
        "unet_halves": halves_run.map(|r| r.to_json()),
        "controlnet": control_run.map(|r| r.to_json()),
        "controlnet_halves": control_halves_run.map(|r| r.to_json()),
        "vae_decode": vae_run.map(|r| r.to_json()),
        "vae_decode_tiled": tiled_run,
        "device_binding_limit_mb": max_buffer_bytes(device).map(mb),
        "memory": {
            "host_peak_mb_after_load": host_after_load.map(|m| ms(m.0)),
            "host_mb_after_load": host_after_load.map(|m| ms(m.1)),
            "host_anonymous_mb_after_load": host_after_load.map(|m| ms(m.2)),
            "host_anonymous_peak_mb_during_load": anonymous_peak_during_load.map(ms),
            "host_peak_mb": host.map(|m| ms(m.0)),
            "device_after_load": device_after_load,
            "device_after_unet": device_after_unet,
            "device_at_end": device_memory_mb(device),
        },
    }))
}
