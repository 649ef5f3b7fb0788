//! The samplers against diffusers 0.42.1 (fixtures from `scripts/make_scheduler_fixtures.py`:
//! `tests/parity/schedulers.{json,safetensors}`), on SD 1.5's scheduler config.
//!
//! * Schedules: timesteps equal exactly (Euler-Karras' fractional ones within 1e-4); σ and
//!   init_noise_sigma within 1 f32 ulp, for every kind over a grid of step counts and the three
//!   spacings; where diffusers refuses, so must we.
//! * add_noise: the coefficients of the re-noised known region at each step's timestep.
//! * Traces: 10 steps (LCM also 4; Euler also 8 with linspace spacing, whose timesteps are
//!   fractional) from the same start latent [1, 4, 8, 8] with the same fake
//!   model outputs (and, for LCM, diffusers' own re-noising noise injected), for ε- and
//!   v-prediction, on burn's CPU device and on wgpu (lavapipe in CI). Errors are
//!   max |got − want| / max(1, |want|), i.e. relative for |x| > 1 and absolute below.
//!   - Per step (each step starts from diffusers' own latents, multistep history included):
//!     every scaled UNet input and prev_sample within 1e-6.
//!   - Chained (the Rust sampler runs on its own outputs, as in use): within 1e-5.
//!
//! Why not bit for bit: the Rust side takes correctly rounded f32 sqrt/ln/exp, while the
//! pinned torch CPU build's are not (±1 ulp for ~15–19% of sqrt results, ~6% of log, ~1.5% of
//! exp, whatever `ATEN_CPU_CAPABILITY`), so σ tables and step coefficients can differ by one
//! ulp, which the chain then carries through up to 10 steps.

use std::collections::BTreeMap;
use std::path::PathBuf;

use adcanvas::denoise::scheduler::{LcmScheduler, Scheduler, SchedulerConfig, SchedulerKind};
use adcanvas::gpu::{DeviceChoice, open_device};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::SafeTensors;
use serde::Deserialize;

/// Per step, relative to max(1, |x|).
const TOLERANCE: f32 = 1e-6;
/// Per step for DPM-Solver++(2M), whose step size h = λ_t − λ_s is a difference of nearby
/// logarithms: one ulp of torch's log in λ ≈ 2.4e-7 is ~1e-6 of h, and so of the step.
const DPM_TOLERANCE: f32 = 5e-6;
/// Over a whole chain, relative to max(1, |x|).
const CHAIN_TOLERANCE: f32 = 1e-5;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/parity").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run scripts/make_scheduler_fixtures.py)", path.display()))
}

struct Io(Vec<u8>);

impl Io {
    fn get(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        let view = st.tensor(name).unwrap_or_else(|_| panic!("fixture tensor {name}"));
        let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        (values, view.shape().to_vec())
    }

    fn tensor(&self, name: &str, device: &Device) -> Tensor<4> {
        let (values, shape) = self.get(name);
        let shape: [usize; 4] = shape.try_into().expect("fixture rank");
        Tensor::from_data(TensorData::new(values, shape), device)
    }
}

/// max |got − want| / max(1, |want|).
fn rel_err(got: &Tensor<4>, want: &[f32]) -> f32 {
    let got: Vec<f32> = got.clone().into_data().try_to_vec().unwrap();
    assert_eq!(got.len(), want.len(), "output size");
    got.iter().zip(want).map(|(g, w)| (g - w).abs() / w.abs().max(1.0)).fold(0.0, f32::max)
}

/// Distance in f32 units in the last place.
fn ulps(a: f32, b: f32) -> u32 {
    let key = |x: f32| {
        let bits = x.to_bits() as i32;
        if bits < 0 { i32::MIN - bits } else { bits }
    };
    key(a).abs_diff(key(b))
}

fn devices() -> Vec<(&'static str, Device)> {
    let gpu = pollster::block_on(open_device(DeviceChoice::Gpu)).expect("a wgpu adapter (lavapipe in CI)");
    vec![("cpu", Device::flex()), ("gpu", gpu)]
}

#[derive(Deserialize)]
struct Fixture {
    config: SchedulerConfig,
    steps: usize,
    /// Per kind, `add_noise`'s (a, b) at each of the 10 steps' timesteps.
    add_noise: BTreeMap<String, Vec<[f64; 2]>>,
    schedules: BTreeMap<String, Option<Schedule>>,
}

#[derive(Deserialize)]
struct Schedule {
    /// Integers, except Euler's with linspace spacing or Karras σ, which are fractional.
    timesteps: Vec<f64>,
    init_noise_sigma: f64,
    sigmas: Option<Vec<f64>>,
}

fn meta() -> Fixture {
    serde_json::from_slice(&fixture("schedulers.json")).unwrap()
}

#[test]
fn schedules_match_diffusers() {
    let meta = meta();
    assert_eq!(meta.config, SchedulerConfig::default(), "fixtures use SD 1.5's config");
    assert!(meta.schedules.len() > 100);
    let mut max_ulps = 0;
    let mut max_timestep_diff = 0f32;
    for (key, want) in &meta.schedules {
        let mut parts = key.split('/');
        let (kind, spacing, steps) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let kind: SchedulerKind = kind.parse().unwrap();
        let steps: usize = steps.parse().unwrap();
        let config = SchedulerConfig { timestep_spacing: spacing.into(), ..meta.config.clone() };
        let got = Scheduler::new(kind, &config, steps);
        let Some(want) = want else {
            assert!(got.is_err(), "{key}: diffusers refuses, we accept");
            continue;
        };
        let got = got.unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(got.kind(), kind);
        let want_timesteps: Vec<f32> = want.timesteps.iter().map(|&t| t as f32).collect();
        if kind == SchedulerKind::EulerKarras {
            // Fractional timesteps interpolated between the training steps' float32 log σ:
            // numpy's float32 log and ours differ by an ulp here and there, and dividing by
            // the small difference of neighbouring logs turns that into up to a few 1e-6 of a
            // timestep (a UNet time embedding changes by far less than f32 noise for that).
            let got = got.timesteps();
            assert_eq!(got.len(), want_timesteps.len(), "{key}: timesteps");
            for (g, w) in got.iter().zip(&want_timesteps) {
                assert!((g - w).abs() <= 1e-4, "{key}: timesteps {got:?} vs {want_timesteps:?}");
                max_timestep_diff = max_timestep_diff.max((g - w).abs());
            }
        } else {
            assert_eq!(got.timesteps(), want_timesteps, "{key}: timesteps");
        }
        let init = got.init_noise_sigma();
        // Euler's √(σ_max² + 1) goes through torch's sqrt twice: 2 ulps.
        let want_init = want.init_noise_sigma as f32;
        assert!(ulps(init, want_init) <= 2, "{key}: init_noise_sigma {init} vs {want_init}");
        let sigmas = match &got {
            Scheduler::Euler(s) => Some(s.sigmas()),
            Scheduler::DpmSolver2M(s) => Some(s.sigmas()),
            _ => None,
        };
        assert_eq!(sigmas.is_some(), want.sigmas.is_some(), "{key}: sigmas");
        if let (Some(got), Some(want)) = (sigmas, &want.sigmas) {
            assert_eq!(got.len(), want.len(), "{key}: sigmas");
            for (g, w) in got.iter().zip(want) {
                assert!(ulps(*g, *w as f32) <= 1, "{key}: sigmas {got:?} vs {want:?}");
                max_ulps = max_ulps.max(ulps(*g, *w as f32));
            }
        }
    }
    eprintln!(
        "schedules: {} checked, σ within {max_ulps} ulp, Euler-Karras timesteps within {max_timestep_diff:.1e}",
        meta.schedules.len()
    );
}

/// `noise_coefficients(i)` equals diffusers' `add_noise(x0, ε, timesteps[i])` (as its
/// inpainting pipeline re-noises the known region between steps), within 2 f32 ulps (torch's
/// sqrt is not always correctly rounded).
#[test]
fn add_noise_matches_diffusers() {
    let meta = meta();
    assert_eq!(meta.add_noise.len(), 6);
    let mut worst = 0;
    for (kind, want) in &meta.add_noise {
        let scheduler = Scheduler::new(kind.parse().unwrap(), &meta.config, meta.steps).unwrap();
        assert_eq!(want.len(), meta.steps, "{kind}");
        for (i, [a, b]) in want.iter().enumerate() {
            let (ga, gb) = scheduler.noise_coefficients(i);
            let off = ulps(ga, *a as f32).max(ulps(gb, *b as f32));
            assert!(off <= 2, "{kind} step {i}: ({ga}, {gb}) vs ({a}, {b})");
            worst = worst.max(off);
        }
    }
    eprintln!("add_noise: 6 kinds × {} steps within {worst} ulp", meta.steps);
}

/// Runs `case` (fixture prefix) through `steps` steps on `device`, each step from diffusers'
/// latents (`chained == false`) or from the previous Rust step; returns the worst error.
fn trace(
    io: &Io,
    kind: SchedulerKind,
    case: &str,
    prediction: &str,
    steps: usize,
    device: &Device,
    chained: bool,
) -> f32 {
    let spacing = if case.ends_with("-linspace") { "linspace" } else { "leading" };
    let config = SchedulerConfig {
        prediction_type: prediction.into(),
        timestep_spacing: spacing.into(),
        ..SchedulerConfig::default()
    };
    let mut scheduler = Scheduler::new(kind, &config, steps).unwrap();
    let prefix = format!("{case}.{prediction}");
    let tolerance = match (chained, kind) {
        (true, _) => CHAIN_TOLERANCE,
        (false, SchedulerKind::DpmSolver2M | SchedulerKind::DpmSolver2MKarras) => DPM_TOLERANCE,
        (false, _) => TOLERANCE,
    };
    let mut worst = 0f32;
    let mut check = |label: String, got: &Tensor<4>| {
        let (want, _) = io.get(&label);
        let err = rel_err(got, &want);
        assert!(
            err <= tolerance,
            "{label} ({}): max relative diff {err}",
            if chained { "chained" } else { "per step" }
        );
        worst = worst.max(err);
    };
    let mut x = io.tensor("x0", device).mul_scalar(scheduler.init_noise_sigma());
    check(format!("{prefix}.init"), &x);
    let timesteps = scheduler.timesteps().to_vec();
    for (i, &t) in timesteps.iter().enumerate() {
        if !chained {
            x = io.tensor(&if i == 0 { format!("{prefix}.init") } else { format!("{prefix}.x{i}") }, device);
        }
        let scaled = scheduler.scale_model_input(x.clone(), t);
        if matches!(kind, SchedulerKind::Euler | SchedulerKind::EulerKarras) {
            check(format!("{prefix}.scaled{i}"), &scaled);
        } else {
            assert_eq!(rel_err(&scaled, &x.clone().into_data().try_to_vec().unwrap()), 0.0, "identity");
        }
        let noise = (kind == SchedulerKind::Lcm && i + 1 < steps).then(|| io.tensor(&format!("noise{i}"), device));
        x = scheduler.step_with_noise(io.tensor(&format!("eps{i}"), device), t, x, noise);
        check(format!("{prefix}.x{}", i + 1), &x);
    }
    worst
}

fn trace_all(kind: SchedulerKind, case: &str, steps: usize) {
    let io = Io(fixture("schedulers.safetensors"));
    for (name, device) in devices() {
        for prediction in ["epsilon", "v_prediction"] {
            let step = trace(&io, kind, case, prediction, steps, &device, false);
            let chain = trace(&io, kind, case, prediction, steps, &device, true);
            eprintln!(
                "{case} {prediction} ({steps} steps) on {name}: max diff per step {step:.2e}, chained {chain:.2e}"
            );
        }
    }
}

#[test]
fn ddim_trace_matches_diffusers() {
    trace_all(SchedulerKind::Ddim, "ddim", meta().steps);
}

#[test]
fn euler_trace_matches_diffusers() {
    trace_all(SchedulerKind::Euler, "euler", meta().steps);
}

/// Fractional timesteps: linspace spacing over 8 steps (999/7 apart), and Karras σ.
#[test]
fn euler_fractional_traces_match_diffusers() {
    trace_all(SchedulerKind::Euler, "euler-linspace", 8);
    trace_all(SchedulerKind::EulerKarras, "euler-karras", meta().steps);
}

#[test]
fn dpm_solver_2m_trace_matches_diffusers() {
    trace_all(SchedulerKind::DpmSolver2M, "dpm++2m", meta().steps);
}

#[test]
fn dpm_solver_2m_karras_trace_matches_diffusers() {
    trace_all(SchedulerKind::DpmSolver2MKarras, "dpm++2m-karras", meta().steps);
}

#[test]
fn lcm_trace_matches_diffusers() {
    trace_all(SchedulerKind::Lcm, "lcm", meta().steps);
    trace_all(SchedulerKind::Lcm, "lcm4", 4);
}

/// Without injected noise LCM re-noises from its seed: the same seed gives the same latents on
/// every device; another seed other latents; the last step adds no noise.
#[test]
fn lcm_seeded_noise_is_deterministic() {
    let io = Io(fixture("schedulers.safetensors"));
    let config = SchedulerConfig::default();
    let run = |seed: u64, device: &Device| -> Vec<f32> {
        let mut s = Scheduler::new(SchedulerKind::Lcm, &config, 4).unwrap().with_noise_seed(seed);
        let mut x = io.tensor("x0", device);
        for (i, t) in s.timesteps().to_vec().into_iter().enumerate() {
            x = s.step(io.tensor(&format!("eps{i}"), device), t, x);
        }
        x.into_data().try_to_vec().unwrap()
    };
    let devices = devices();
    let a = run(3, &devices[0].1);
    assert!(a.iter().all(|v| v.is_finite()));
    assert_eq!(a, run(3, &devices[0].1));
    assert_ne!(a, run(4, &devices[0].1));
    let gpu = run(3, &devices[1].1);
    let diff = a.iter().zip(&gpu).map(|(x, y)| (x - y).abs() / x.abs().max(1.0)).fold(0.0, f32::max);
    assert!(diff <= CHAIN_TOLERANCE, "cpu vs gpu: {diff}");

    // Last step: the result is the denoised estimate whatever noise is offered.
    let lcm = LcmScheduler::new(&config, 4).unwrap();
    let device = &devices[0].1;
    let t = *lcm.timesteps().last().unwrap();
    let with = |noise: Tensor<4>| -> Vec<f32> {
        lcm.step_with_noise(io.tensor("eps3", device), t, io.tensor("x0", device), noise)
            .into_data()
            .try_to_vec()
            .unwrap()
    };
    assert_eq!(with(io.tensor("noise0", device)), with(io.tensor("noise1", device)));
    let seeded = lcm.step(io.tensor("eps3", device), t, io.tensor("x0", device));
    assert_eq!(with(io.tensor("noise0", device)), seeded.into_data().try_to_vec::<f32>().unwrap());
}

/// DPM-Solver++(2M) keeps state: a reset scheduler reproduces its first run.
#[test]
fn dpm_solver_reset_restarts_the_history() {
    let io = Io(fixture("schedulers.safetensors"));
    let device = Device::flex();
    let mut s = Scheduler::new(SchedulerKind::DpmSolver2M, &SchedulerConfig::default(), 10).unwrap();
    let run = |s: &mut Scheduler| -> Vec<f32> {
        let mut x = io.tensor("x0", &device);
        for (i, t) in s.timesteps().to_vec().into_iter().enumerate() {
            x = s.step(io.tensor(&format!("eps{i}"), &device), t, x);
        }
        x.into_data().try_to_vec().unwrap()
    };
    let first = run(&mut s);
    s.reset();
    assert_eq!(first, run(&mut s));
}
