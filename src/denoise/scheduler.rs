//! Samplers, each mirroring a diffusers scheduler (0.42.1, `schedulers/scheduling_*.py`) for
//! the configs Stable Diffusion 1.x ships:
//!
//! * [`DdimScheduler`]: `DDIMScheduler` with η = 0.
//! * [`EulerDiscreteScheduler`]: `EulerDiscreteScheduler` (no churn, linear σ interpolation,
//!   optionally Karras σ).
//! * [`DpmSolverMultistepScheduler`]: `DPMSolverMultistepScheduler` as DPM-Solver++(2M):
//!   `algorithm_type="dpmsolver++"`, `solver_order=2`, midpoint, `lower_order_final=True`,
//!   `final_sigmas_type="zero"`.
//! * [`LcmScheduler`]: `LCMScheduler` (latent consistency models).
//!
//! [`Scheduler`] wraps them behind one interface, picked by [`SchedulerKind`] (parsed from
//! `"ddim"`, `"euler"`, `"euler-karras"`, `"dpm++2m"`, `"dpm++2m-karras"`, `"lcm"`). A sampling
//! loop is, as in diffusers' pipelines:
//!
//! ```text
//! latents = noise * init_noise_sigma()
//! for t in timesteps(): eps = unet(scale_model_input(latents, t), t); latents = step(eps, t, latents)
//! ```
//!
//! Timesteps are `f32`, as diffusers' `timesteps` tensors are: integers for every sampler except
//! Euler with linspace spacing or Karras σ, whose timesteps are fractional (the UNet's sinusoidal
//! time embedding takes any real t). Scalars are computed in f32 in the order torch computes
//! diffusers' 0-d tensors, so the traces match diffusers to a few f32 ulps (tests/schedulers.rs).

use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// diffusers' scheduler config fields the schedulers read (`scheduler/scheduler_config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    #[serde(default = "train_steps")]
    pub num_train_timesteps: usize,
    #[serde(default = "beta_start")]
    pub beta_start: f64,
    #[serde(default = "beta_end")]
    pub beta_end: f64,
    /// `"scaled_linear"` (SD) or `"linear"`.
    #[serde(default = "scaled_linear")]
    pub beta_schedule: String,
    #[serde(default)]
    pub set_alpha_to_one: bool,
    #[serde(default = "one")]
    pub steps_offset: usize,
    /// `"epsilon"` or `"v_prediction"`.
    #[serde(default = "epsilon")]
    pub prediction_type: String,
    /// `"leading"` (SD 1.x default), `"trailing"` or `"linspace"`. LCM ignores it (as diffusers does).
    #[serde(default = "leading")]
    pub timestep_spacing: String,
    /// Euler and DPM-Solver: σ spaced as Karras et al. (2022), ρ = 7, with timesteps mapped back
    /// from σ (diffusers' `use_karras_sigmas`): fractional for Euler, rounded for DPM-Solver.
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_karras_sigmas: bool,
    /// LCM only: the distillation schedule's length its timesteps are taken from.
    #[serde(default = "lcm_original_steps", skip_serializing_if = "is_lcm_original_steps")]
    pub original_inference_steps: usize,
    /// LCM only: timestep multiplier in the consistency boundary scalings.
    #[serde(default = "lcm_timestep_scaling", skip_serializing_if = "is_lcm_timestep_scaling")]
    pub timestep_scaling: f64,
}

/// burn's `Config` (JSON save and load) over the serde mapping of diffusers' `config.json`.
impl burn::config::Config for SchedulerConfig {}

fn train_steps() -> usize {
    1000
}
fn beta_start() -> f64 {
    0.00085
}
fn beta_end() -> f64 {
    0.012
}
fn scaled_linear() -> String {
    "scaled_linear".into()
}
fn one() -> usize {
    1
}
fn epsilon() -> String {
    "epsilon".into()
}
fn leading() -> String {
    "leading".into()
}
fn is_false(v: &bool) -> bool {
    !*v
}
fn lcm_original_steps() -> usize {
    50
}
fn is_lcm_original_steps(v: &usize) -> bool {
    *v == lcm_original_steps()
}
fn lcm_timestep_scaling() -> f64 {
    10.0
}
fn is_lcm_timestep_scaling(v: &f64) -> bool {
    *v == lcm_timestep_scaling()
}

impl Default for SchedulerConfig {
    /// Stable Diffusion 1.5's scheduler settings.
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: scaled_linear(),
            set_alpha_to_one: false,
            steps_offset: 1,
            prediction_type: epsilon(),
            timestep_spacing: leading(),
            use_karras_sigmas: false,
            original_inference_steps: lcm_original_steps(),
            timestep_scaling: lcm_timestep_scaling(),
        }
    }
}

/// Why a scheduler cannot be built (or a scheduler name not parsed).
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerError(pub String);

impl std::fmt::Display for SchedulerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "scheduler: {}", self.0)
    }
}

impl std::error::Error for SchedulerError {}

// ---------------------------------------------------------------------------------------
// The common interface.

/// Which sampler to use; parsed from (and printed as) its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SchedulerKind {
    /// `"ddim"`
    #[default]
    Ddim,
    /// `"euler"`
    Euler,
    /// `"euler-karras"`: Euler with Karras σ, whatever the pack's config says.
    EulerKarras,
    /// `"dpm++2m"` (also `"dpmpp2m"`, which survives URL query strings where `+` is a space)
    DpmSolver2M,
    /// `"dpm++2m-karras"` (also `"dpmpp2m-karras"`): DPM-Solver++(2M) with Karras σ, whatever
    /// the pack's config says.
    DpmSolver2MKarras,
    /// `"lcm"`
    Lcm,
}

impl SchedulerKind {
    /// Every kind, in the order the UI lists them.
    pub const ALL: [SchedulerKind; 6] =
        [Self::Ddim, Self::Euler, Self::EulerKarras, Self::DpmSolver2M, Self::DpmSolver2MKarras, Self::Lcm];

    /// The canonical name, as parsed by `str::parse`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::Euler => "euler",
            Self::EulerKarras => "euler-karras",
            Self::DpmSolver2M => "dpm++2m",
            Self::DpmSolver2MKarras => "dpm++2m-karras",
            Self::Lcm => "lcm",
        }
    }
}

impl std::fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SchedulerKind {
    type Err = SchedulerError;

    /// Case-insensitive, surrounding whitespace ignored.
    fn from_str(s: &str) -> Result<Self, SchedulerError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ddim" => Ok(Self::Ddim),
            "euler" => Ok(Self::Euler),
            "euler-karras" => Ok(Self::EulerKarras),
            "dpm++2m" | "dpmpp2m" => Ok(Self::DpmSolver2M),
            "dpm++2m-karras" | "dpmpp2m-karras" => Ok(Self::DpmSolver2MKarras),
            "lcm" => Ok(Self::Lcm),
            _ => Err(SchedulerError(format!(
                "unknown scheduler {s:?}: expected one of ddim, euler, euler-karras, dpm++2m, dpm++2m-karras, lcm"
            ))),
        }
    }
}

impl TryFrom<String> for SchedulerKind {
    type Error = SchedulerError;
    fn try_from(s: String) -> Result<Self, SchedulerError> {
        s.parse()
    }
}

impl From<SchedulerKind> for String {
    fn from(kind: SchedulerKind) -> String {
        kind.name().into()
    }
}

/// Any of the samplers, with one interface. `step` takes `&mut self` because DPM-Solver++(2M)
/// keeps the previous model output; build a fresh scheduler (or call [`Scheduler::reset`])
/// for each image.
#[derive(Debug, Clone)]
pub enum Scheduler {
    Ddim(DdimScheduler),
    Euler(EulerDiscreteScheduler),
    DpmSolver2M(DpmSolverMultistepScheduler),
    Lcm(LcmScheduler),
}

impl Scheduler {
    /// Builds `kind` from a diffusers scheduler config for `steps` inference steps.
    pub fn new(kind: SchedulerKind, config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        Ok(match kind {
            SchedulerKind::Ddim => Self::Ddim(DdimScheduler::new(config, steps)?),
            SchedulerKind::Euler => Self::Euler(EulerDiscreteScheduler::new(config, steps)?),
            SchedulerKind::EulerKarras => {
                let config = SchedulerConfig { use_karras_sigmas: true, ..config.clone() };
                Self::Euler(EulerDiscreteScheduler::new(&config, steps)?)
            }
            SchedulerKind::DpmSolver2M => Self::DpmSolver2M(DpmSolverMultistepScheduler::new(config, steps)?),
            SchedulerKind::DpmSolver2MKarras => {
                let config = SchedulerConfig { use_karras_sigmas: true, ..config.clone() };
                Self::DpmSolver2M(DpmSolverMultistepScheduler::new(&config, steps)?)
            }
            SchedulerKind::Lcm => Self::Lcm(LcmScheduler::new(config, steps)?),
        })
    }

    /// Seeds the noise LCM adds between steps (see [`LcmScheduler`]); the other samplers are
    /// deterministic and ignore it. Pass the image's seed: LCM draws from streams other than
    /// the one the initial latents come from.
    pub fn with_noise_seed(self, seed: u64) -> Self {
        match self {
            Self::Lcm(s) => Self::Lcm(s.with_noise_seed(seed)),
            other => other,
        }
    }

    pub fn kind(&self) -> SchedulerKind {
        match self {
            Self::Ddim(_) => SchedulerKind::Ddim,
            Self::Euler(s) if s.karras => SchedulerKind::EulerKarras,
            Self::Euler(_) => SchedulerKind::Euler,
            Self::DpmSolver2M(s) if s.karras => SchedulerKind::DpmSolver2MKarras,
            Self::DpmSolver2M(_) => SchedulerKind::DpmSolver2M,
            Self::Lcm(_) => SchedulerKind::Lcm,
        }
    }

    /// Timesteps from noisiest to cleanest, one per UNet call: the values to give the UNet
    /// and then to [`scale_model_input`](Self::scale_model_input) and [`step`](Self::step).
    pub fn timesteps(&self) -> Vec<f32> {
        let integral = |ts: &[usize]| ts.iter().map(|&t| t as f32).collect();
        match self {
            Self::Ddim(s) => integral(s.timesteps()),
            Self::Euler(s) => s.timesteps().to_vec(),
            Self::DpmSolver2M(s) => integral(s.timesteps()),
            Self::Lcm(s) => integral(s.timesteps()),
        }
    }

    /// Factor for unit Gaussian noise to become the first latents.
    pub fn init_noise_sigma(&self) -> f32 {
        match self {
            Self::Ddim(s) => s.init_noise_sigma(),
            Self::Euler(s) => s.init_noise_sigma(),
            Self::DpmSolver2M(s) => s.init_noise_sigma(),
            Self::Lcm(s) => s.init_noise_sigma(),
        }
    }

    /// The UNet's input at `t` for `latents` (only Euler scales; the others return `latents`).
    /// Scale only the noisy latents, not channels concatenated to them (inpainting's mask and
    /// masked image), as diffusers' inpainting pipeline does.
    pub fn scale_model_input(&self, latents: Tensor<4>, t: f32) -> Tensor<4> {
        match self {
            Self::Euler(s) => s.scale_model_input(latents, t),
            _ => latents,
        }
    }

    /// One step from the model output at `t` to the next (less noisy) latents.
    pub fn step(&mut self, model_output: Tensor<4>, t: f32, latents: Tensor<4>) -> Tensor<4> {
        self.step_with_noise(model_output, t, latents, None)
    }

    /// [`Scheduler::step`], with LCM's intermediate noise given instead of drawn from the
    /// seed (ignored by the deterministic samplers and on LCM's last step).
    pub fn step_with_noise(
        &mut self,
        model_output: Tensor<4>,
        t: f32,
        latents: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Tensor<4> {
        match self {
            Self::Ddim(s) => s.step(model_output, integral(t), latents),
            Self::Euler(s) => s.step(model_output, t, latents),
            Self::DpmSolver2M(s) => s.step(model_output, integral(t), latents),
            Self::Lcm(s) => {
                let t = integral(t);
                match noise {
                    Some(noise) => s.step_with_noise(model_output, t, latents, noise),
                    None => s.step(model_output, t, latents),
                }
            }
        }
    }

    /// `(a, b)` with `a·x_0 + b·ε` the latents at the noise level of timestep `index` of
    /// [`timesteps`](Self::timesteps): diffusers' `add_noise(x_0, ε, timesteps[index])` as its
    /// inpainting pipeline calls it between steps. DDIM and LCM: `(√ᾱ_t, √(1 − ᾱ_t))`; Euler:
    /// `(1, σ_index)`; DPM-Solver++: `(α, σ α)` with `α = 1/√(σ_index² + 1)`.
    pub fn noise_coefficients(&self, index: usize) -> (f32, f32) {
        let vp = |alphas_cumprod: &[f32], t: usize| {
            let a = alphas_cumprod[t];
            (a.sqrt(), (1.0 - a).sqrt())
        };
        match self {
            Self::Ddim(s) => vp(s.alphas_cumprod(), s.timesteps()[index]),
            Self::Lcm(s) => vp(&s.alphas_cumprod, s.timesteps()[index]),
            Self::Euler(s) => (1.0, s.sigmas()[index]),
            Self::DpmSolver2M(s) => DpmSolverMultistepScheduler::alpha_sigma(s.sigmas()[index]),
        }
    }

    /// Forgets multistep history, to sample again with the same timesteps.
    pub fn reset(&mut self) {
        if let Self::DpmSolver2M(s) = self {
            s.reset();
        }
    }
}

/// A timestep of an integer schedule (DDIM, DPM-Solver, LCM) as given back by
/// [`Scheduler::timesteps`]. Panics on a fractional or negative value, which none of their
/// schedules contains (as diffusers fails on a timestep not in its schedule).
fn integral(t: f32) -> usize {
    assert!(t >= 0.0 && t.fract() == 0.0, "timestep {t} is not in this scheduler's (integer) timesteps");
    t as usize
}

// ---------------------------------------------------------------------------------------
// Shared schedule arithmetic.

/// ᾱ_t for t = 0..num_train_timesteps as torch computes them: betas in float32
/// (`linspace(..., dtype=float32) ** 2`), alphas = 1 − β in float32, and `cumprod`
/// accumulating in double (CPU `acc_type`), stored as float32.
fn alphas_cumprod(config: &SchedulerConfig) -> Result<Vec<f32>, SchedulerError> {
    let n = config.num_train_timesteps;
    if n == 0 {
        return Err(SchedulerError("num_train_timesteps must be positive".into()));
    }
    let betas: Vec<f32> = match config.beta_schedule.as_str() {
        "scaled_linear" => linspace_f32(config.beta_start.sqrt() as f32, config.beta_end.sqrt() as f32, n)
            .into_iter()
            .map(|b| b * b)
            .collect(),
        "linear" => linspace_f32(config.beta_start as f32, config.beta_end as f32, n),
        other => return Err(SchedulerError(format!("beta_schedule {other} is not supported"))),
    };
    let mut out = Vec::with_capacity(n);
    let mut acc = 1f64;
    for b in betas {
        acc *= (1.0f32 - b) as f64;
        out.push(acc as f32);
    }
    Ok(out)
}

fn check_steps(config: &SchedulerConfig, steps: usize) -> Result<(), SchedulerError> {
    let n = config.num_train_timesteps;
    if steps == 0 || steps > n {
        return Err(SchedulerError(format!("steps must be between 1 and {n}, got {steps}")));
    }
    Ok(())
}

fn check_prediction(config: &SchedulerConfig) -> Result<(), SchedulerError> {
    if !matches!(config.prediction_type.as_str(), "epsilon" | "v_prediction") {
        return Err(SchedulerError(format!("prediction_type {} is not supported", config.prediction_type)));
    }
    Ok(())
}

fn is_v_prediction(config: &SchedulerConfig) -> bool {
    config.prediction_type == "v_prediction"
}

/// DDIM's `set_timesteps`, and Euler's for the integer spacings: "leading" is
/// `arange(steps) * (n // steps)` reversed plus `steps_offset`; "trailing" as
/// [`trailing_timesteps`]; "linspace" `linspace(0, n − 1, steps).round()` reversed (Euler does
/// not round: [`linspace`]).
fn spaced_timesteps(config: &SchedulerConfig, steps: usize) -> Result<Vec<usize>, SchedulerError> {
    let n = config.num_train_timesteps;
    match config.timestep_spacing.as_str() {
        "leading" => {
            let ratio = n / steps;
            Ok((0..steps).rev().map(|i| i * ratio + config.steps_offset).collect())
        }
        "trailing" => trailing_timesteps(n, steps),
        "linspace" => Ok(linspace_rounded((n - 1) as f64, steps).into_iter().rev().collect()),
        other => Err(unsupported_spacing(other)),
    }
}

fn unsupported_spacing(spacing: &str) -> SchedulerError {
    SchedulerError(format!("timestep_spacing {spacing} is not supported (use leading, trailing or linspace)"))
}

/// `np.linspace(0, stop, num)` in f64: element i = i · (stop / (num − 1)), the last exactly
/// `stop`; one element is 0.
fn linspace(stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![0.0];
    }
    let step = stop / (num - 1) as f64;
    (0..num).map(|i| if i == num - 1 { stop } else { i as f64 * step }).collect()
}

/// `np.linspace(0, stop, num).round()` as integers, rounded half to even.
fn linspace_rounded(stop: f64, num: usize) -> Vec<usize> {
    linspace(stop, num).into_iter().map(|v| v.round_ties_even() as usize).collect()
}

/// Karras et al. (2022) σ, ρ = 7, from `sigma_max` down to `sigma_min` (diffusers'
/// `_convert_to_karras`, in f64).
fn karras_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    let rho = 7.0;
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    linspace(1.0, steps).iter().map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho)).collect()
}

/// diffusers' `_sigma_to_t`: the (fractional) timestep whose log σ interpolates to `sigma`'s,
/// between the last training timestep with log σ ≤ it and the next.
fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let last_below = log_sigmas.iter().rposition(|&l| log_sigma - l as f64 >= 0.0).unwrap_or(0);
    let low_idx = last_below.min(log_sigmas.len() - 2);
    let (low, high) = (log_sigmas[low_idx], log_sigmas[low_idx + 1]);
    let w = ((low as f64 - log_sigma) / (low - high) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * (low_idx + 1) as f64
}

/// `np.arange(n, 0, -n / steps).round() - 1` exactly as numpy computes it: length
/// `ceil(n / ratio)`, element i = `start + i * ((start + step) − start)`, rounded half to even.
fn trailing_timesteps(n: usize, steps: usize) -> Result<Vec<usize>, SchedulerError> {
    let start = n as f64;
    let step = -(n as f64 / steps as f64);
    let len = ((0.0 - start) / step).ceil() as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| {
            let v = match i {
                0 => start,
                1 => start + step,
                _ => start + i as f64 * delta,
            };
            let t = v.round_ties_even() as i64 - 1;
            usize::try_from(t)
                .map_err(|_| SchedulerError(format!("trailing spacing gives timestep {t} for {steps} steps")))
        })
        .collect()
}

/// σ_t = √((1 − ᾱ_t) / ᾱ_t) in float32 (as torch), for every training timestep.
fn train_sigmas(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect()
}

/// diffusers' `np.interp(t, arange(n), sigmas)` in f64, as numpy computes it: clamped at the
/// ends, exact at integers, else `slope · (t − ⌊t⌋) + σ_⌊t⌋`.
fn interp_sigma(train_sigmas: &[f32], t: f64) -> f64 {
    let last = train_sigmas.len() - 1;
    if t <= 0.0 {
        return train_sigmas[0] as f64;
    }
    let j = t.floor() as usize;
    if j >= last {
        return train_sigmas[last] as f64;
    }
    let (lo, hi) = (train_sigmas[j] as f64, train_sigmas[j + 1] as f64);
    if t == j as f64 { lo } else { (hi - lo) * (t - j as f64) + lo }
}

/// σ at each timestep as [`interp_sigma`], in f32, then a final σ = 0 (`final_sigmas_type="zero"`).
fn schedule_sigmas(train_sigmas: &[f32], timesteps: impl IntoIterator<Item = f64>) -> Vec<f32> {
    timesteps.into_iter().map(|t| interp_sigma(train_sigmas, t) as f32).chain(std::iter::once(0.0)).collect()
}

// ---------------------------------------------------------------------------------------
// DDIM.

/// DDIM (Song et al. 2020), as diffusers' `DDIMScheduler` with η = 0: `set_timesteps`, then
/// `step` from x_t to x_{t−Δ}.
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    config: SchedulerConfig,
    /// ᾱ_t for t = 0..num_train_timesteps (computed in f64, stored as f32 like diffusers).
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    timesteps: Vec<usize>,
}

impl DdimScheduler {
    /// Builds the noise schedule and the timesteps for `steps` inference steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        check_steps(config, steps)?;
        let alphas_cumprod = alphas_cumprod(config)?;
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };
        let timesteps = spaced_timesteps(config, steps)?;
        check_prediction(config)?;
        Ok(Self { config: config.clone(), alphas_cumprod, final_alpha_cumprod, timesteps })
    }

    /// ᾱ_t for every training timestep.
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Timesteps from noisiest to cleanest.
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// σ of the initial noise (1 for DDIM).
    pub fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    /// The two coefficients of one DDIM step at timestep `t`, returned for testing and
    /// tracing: `(ᾱ_t, ᾱ_prev)`.
    pub fn alphas(&self, t: usize) -> (f32, f32) {
        let ratio = self.config.num_train_timesteps / self.timesteps.len();
        let a_t = self.alphas_cumprod[t];
        let a_prev = t.checked_sub(ratio).map(|p| self.alphas_cumprod[p]).unwrap_or(self.final_alpha_cumprod);
        (a_t, a_prev)
    }

    /// One DDIM step (η = 0): returns x_{t−Δ} from the model output at `t`.
    ///
    /// x̂_0 = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t;  x_prev = √ᾱ_prev x̂_0 + √(1−ᾱ_prev) ε.
    pub fn step(&self, model_output: Tensor<4>, t: usize, sample: Tensor<4>) -> Tensor<4> {
        let (a_t, a_prev) = self.alphas(t);
        let (pred_x0, eps) = match self.config.prediction_type.as_str() {
            "v_prediction" => (
                sample.clone().mul_scalar(a_t.sqrt()) - model_output.clone().mul_scalar((1.0 - a_t).sqrt()),
                model_output.mul_scalar(a_t.sqrt()) + sample.mul_scalar((1.0 - a_t).sqrt()),
            ),
            _ => ((sample - model_output.clone().mul_scalar((1.0 - a_t).sqrt())).div_scalar(a_t.sqrt()), model_output),
        };
        pred_x0.mul_scalar(a_prev.sqrt()) + eps.mul_scalar((1.0 - a_prev).sqrt())
    }
}

// ---------------------------------------------------------------------------------------
// Euler.

/// Euler's method on the probability-flow ODE in σ (Karras et al. 2022), as diffusers'
/// `EulerDiscreteScheduler` with its defaults (`interpolation_type="linear"`,
/// `final_sigmas_type="zero"`, `s_churn=0`) and optionally `use_karras_sigmas`: the latents
/// live at scale √(σ² + 1), so the UNet input is [`scale_model_input`](Self::scale_model_input)d
/// and the initial noise is [`init_noise_sigma`](Self::init_noise_sigma) times a unit Gaussian.
///
/// Timesteps are f32 as in diffusers: "linspace" spacing gives fractional ones
/// (`linspace(0, n − 1, steps)` unrounded, σ interpolated between training steps), and so do
/// Karras σ (each σ mapped back to the fractional timestep whose log σ interpolates to it).
#[derive(Debug, Clone)]
pub struct EulerDiscreteScheduler {
    v_prediction: bool,
    /// Karras σ (`use_karras_sigmas`).
    karras: bool,
    timesteps: Vec<f32>,
    /// σ at each timestep, then 0.
    sigmas: Vec<f32>,
    init_noise_sigma: f32,
}

impl EulerDiscreteScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        check_steps(config, steps)?;
        check_prediction(config)?;
        let n = config.num_train_timesteps;
        let train = train_sigmas(&alphas_cumprod(config)?);
        // diffusers builds these as float32 and interpolates σ at the float32 values.
        let timesteps: Vec<f32> = match config.timestep_spacing.as_str() {
            "linspace" => linspace((n - 1) as f64, steps).into_iter().rev().map(|t| t as f32).collect(),
            _ => spaced_timesteps(config, steps)?.into_iter().map(|t| t as f32).collect(),
        };
        let (timesteps, sigmas) = if config.use_karras_sigmas {
            // Between the spaced schedule's own end σ (not the training schedule's, unlike
            // DPM-Solver), timesteps from σ unrounded.
            let spaced: Vec<f64> = timesteps.iter().map(|&t| interp_sigma(&train, t as f64)).collect();
            let log_sigmas: Vec<f32> = train.iter().map(|s| s.ln()).collect();
            let karras = karras_sigmas(spaced[spaced.len() - 1], spaced[0], steps);
            let timesteps = karras.iter().map(|&s| sigma_to_t(s, &log_sigmas) as f32).collect();
            (timesteps, karras.iter().map(|&s| s as f32).chain(std::iter::once(0.0)).collect())
        } else {
            let sigmas = schedule_sigmas(&train, timesteps.iter().map(|&t| t as f64));
            (timesteps, sigmas)
        };
        let max_sigma = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // diffusers: σ_max for "linspace"/"trailing", √(σ_max² + 1) for "leading".
        let init_noise_sigma =
            if config.timestep_spacing == "leading" { (max_sigma * max_sigma + 1.0).sqrt() } else { max_sigma };
        Ok(Self {
            v_prediction: is_v_prediction(config),
            karras: config.use_karras_sigmas,
            timesteps,
            sigmas,
            init_noise_sigma,
        })
    }

    pub fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    /// σ for each timestep, followed by the final σ = 0 (`len = steps + 1`).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    pub fn init_noise_sigma(&self) -> f32 {
        self.init_noise_sigma
    }

    /// Position of `t` in the schedule (diffusers' `index_for_timestep`; Euler's timesteps are
    /// distinct: unrounded, strictly decreasing in σ).
    ///
    /// Panics if `t` is not one of [`timesteps`](Self::timesteps), like diffusers.
    fn index(&self, t: f32) -> usize {
        self.timesteps
            .iter()
            .position(|&s| s == t)
            .unwrap_or_else(|| panic!("timestep {t} is not in this scheduler's timesteps {:?}", self.timesteps))
    }

    /// x / √(σ_t² + 1): the UNet's input at `t`.
    pub fn scale_model_input(&self, sample: Tensor<4>, t: f32) -> Tensor<4> {
        let sigma = self.sigmas[self.index(t)];
        sample.div_scalar((sigma * sigma + 1.0).sqrt())
    }

    /// x̂_0 = x − σ ε (ε-prediction);  x_next = x + (x − x̂_0)/σ · (σ_next − σ).
    pub fn step(&self, model_output: Tensor<4>, t: f32, sample: Tensor<4>) -> Tensor<4> {
        let i = self.index(t);
        let sigma = self.sigmas[i];
        let pred_original = if self.v_prediction {
            let c = sigma * sigma + 1.0;
            model_output.mul_scalar(-sigma / c.sqrt()) + sample.clone().div_scalar(c)
        } else {
            sample.clone() - model_output.mul_scalar(sigma)
        };
        let derivative = (sample.clone() - pred_original).div_scalar(sigma);
        let dt = self.sigmas[i + 1] - sigma;
        sample + derivative.mul_scalar(dt)
    }
}

// ---------------------------------------------------------------------------------------
// DPM-Solver++(2M).

/// DPM-Solver++(2M) (Lu et al. 2022), as diffusers' `DPMSolverMultistepScheduler` with its
/// defaults: data prediction (`dpmsolver++`), second order, midpoint, first order on the first
/// and last steps (the last step lands on σ = 0 and returns the predicted x̂_0). Its timesteps
/// differ from DDIM's: "leading" is `arange(steps + 1) * (n // (steps + 1))` reversed without
/// the 0, plus `steps_offset` (10 steps: 901, 811, …, 91).
#[derive(Debug, Clone)]
pub struct DpmSolverMultistepScheduler {
    v_prediction: bool,
    /// Karras σ (`use_karras_sigmas`).
    karras: bool,
    timesteps: Vec<usize>,
    /// σ at each timestep, then 0.
    sigmas: Vec<f32>,
    /// x̂_0 predictions of the last two steps (older first).
    model_outputs: [Option<Tensor<4>>; 2],
    lower_order_nums: usize,
    step_index: Option<usize>,
}

impl DpmSolverMultistepScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        check_steps(config, steps)?;
        check_prediction(config)?;
        let alphas_cumprod = alphas_cumprod(config)?;
        // `lambda_min_clipped = -inf` clips nothing: the schedule ends at n.
        let n = config.num_train_timesteps;
        let timesteps: Vec<usize> = match config.timestep_spacing.as_str() {
            "leading" => {
                let ratio = n / (steps + 1);
                (1..=steps).rev().map(|i| i * ratio + config.steps_offset).collect()
            }
            "trailing" => trailing_timesteps(n, steps)?,
            "linspace" => linspace_rounded((n - 1) as f64, steps + 1).into_iter().rev().take(steps).collect(),
            other => return Err(unsupported_spacing(other)),
        };
        let train = train_sigmas(&alphas_cumprod);
        let (timesteps, sigmas) = if config.use_karras_sigmas {
            // σ_min/σ_max of the training schedule; timesteps from σ, rounded (they can repeat).
            let log_sigmas: Vec<f32> = train.iter().map(|s| s.ln()).collect();
            let sigmas = karras_sigmas(train[0] as f64, train[n - 1] as f64, steps);
            let timesteps = sigmas.iter().map(|&s| sigma_to_t(s, &log_sigmas).round_ties_even() as usize).collect();
            (timesteps, sigmas.iter().map(|&s| s as f32).chain(std::iter::once(0.0)).collect())
        } else {
            let sigmas = schedule_sigmas(&train, timesteps.iter().map(|&t| t as f64));
            (timesteps, sigmas)
        };
        Ok(Self {
            v_prediction: is_v_prediction(config),
            karras: config.use_karras_sigmas,
            timesteps,
            sigmas,
            model_outputs: [None, None],
            lower_order_nums: 0,
            step_index: None,
        })
    }

    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// σ for each timestep, followed by the final σ = 0 (`len = steps + 1`).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    pub fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    /// Forgets the multistep history.
    pub fn reset(&mut self) {
        self.model_outputs = [None, None];
        self.lower_order_nums = 0;
        self.step_index = None;
    }

    /// diffusers' `index_for_timestep`: the second match if `t` repeats, the last step if absent.
    fn index_for_timestep(&self, t: usize) -> usize {
        let matches: Vec<usize> = self.timesteps.iter().enumerate().filter(|(_, s)| **s == t).map(|(i, _)| i).collect();
        match matches.len() {
            0 => self.timesteps.len() - 1,
            1 => matches[0],
            _ => matches[1],
        }
    }

    /// (α_t, σ_t) of the VP process from the VE σ: α = 1/√(σ² + 1), σ_t = σ α.
    fn alpha_sigma(sigma: f32) -> (f32, f32) {
        let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
        (alpha, sigma * alpha)
    }

    /// λ = log α − log σ (+∞ at σ = 0, as in torch).
    fn lambda(alpha: f32, sigma: f32) -> f32 {
        alpha.ln() - sigma.ln()
    }

    /// One step. The schedule position is counted (like diffusers' `step_index`): call it once
    /// per timestep, in order, starting at the first.
    pub fn step(&mut self, model_output: Tensor<4>, t: usize, sample: Tensor<4>) -> Tensor<4> {
        let i = self.step_index.unwrap_or_else(|| self.index_for_timestep(t));
        let n = self.timesteps.len();
        // final_sigmas_type="zero" makes the last step first order whatever its length.
        let lower_order_final = i == n - 1;

        // convert_model_output: x̂_0 (data prediction).
        let (alpha_s0, sigma_s0) = Self::alpha_sigma(self.sigmas[i]);
        let x0 = if self.v_prediction {
            sample.clone().mul_scalar(alpha_s0) - model_output.mul_scalar(sigma_s0)
        } else {
            (sample.clone() - model_output.mul_scalar(sigma_s0)).div_scalar(alpha_s0)
        };
        self.model_outputs[0] = self.model_outputs[1].take();
        self.model_outputs[1] = Some(x0.clone());

        let (alpha_t, sigma_t) = Self::alpha_sigma(self.sigmas[i + 1]);
        let lambda_t = Self::lambda(alpha_t, sigma_t);
        let lambda_s0 = Self::lambda(alpha_s0, sigma_s0);
        let h = lambda_t - lambda_s0;
        let c_sample = sigma_t / sigma_s0;
        let c_d0 = alpha_t * ((-h).exp() - 1.0);
        let prev = if self.lower_order_nums < 1 || lower_order_final {
            // x_t = (σ_t/σ_s) x − α_t (e^{−h} − 1) x̂_0
            sample.mul_scalar(c_sample) - x0.mul_scalar(c_d0)
        } else {
            let (alpha_s1, sigma_s1) = Self::alpha_sigma(self.sigmas[i - 1]);
            let lambda_s1 = Self::lambda(alpha_s1, sigma_s1);
            let h_0 = lambda_s0 - lambda_s1;
            let r0 = h_0 / h;
            let m1 = self.model_outputs[0].clone().expect("previous model output");
            let d1 = (x0.clone() - m1).mul_scalar(1.0 / r0);
            // x_t = (σ_t/σ_s0) x − α_t (e^{−h} − 1) D0 − ½ α_t (e^{−h} − 1) D1
            sample.mul_scalar(c_sample) - x0.mul_scalar(c_d0) - d1.mul_scalar(0.5 * c_d0)
        };
        if self.lower_order_nums < 2 {
            self.lower_order_nums += 1;
        }
        self.step_index = Some(i + 1);
        prev
    }
}

// ---------------------------------------------------------------------------------------
// LCM.

/// Latent consistency model sampling (Luo et al. 2023), as diffusers' `LCMScheduler`: each
/// step predicts the clean latents through the consistency boundary scalings and, except on
/// the last step, re-noises them to the next timestep with fresh Gaussian noise.
///
/// Timesteps come from the distillation schedule (`original_inference_steps`, default 50:
/// 999, 979, …, 19), evenly strided; `timestep_spacing` and `steps_offset` do not apply
/// (10 steps: 999, 899, …, 99; 4 steps: 999, 759, 499, 259). At most
/// `original_inference_steps` steps.
///
/// **Noise.** diffusers draws the re-noising noise with `randn_tensor(generator=…)`, i.e.
/// torch's CPU Mersenne Twister; this draws it from [`seeded_noise`]`(seed, step + 1, …)`
/// (ChaCha8 + Box–Muller), so the same seed gives different (equally distributed) noise than
/// diffusers, but the same on every device and platform. Use
/// [`step_with_noise`](Self::step_with_noise) to supply the noise instead (the parity test
/// injects diffusers' own).
#[derive(Debug, Clone)]
pub struct LcmScheduler {
    v_prediction: bool,
    alphas_cumprod: Vec<f32>,
    timesteps: Vec<usize>,
    timestep_scaling: f32,
    noise_seed: u64,
}

impl LcmScheduler {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        check_steps(config, steps)?;
        check_prediction(config)?;
        let alphas_cumprod = alphas_cumprod(config)?;
        let n = config.num_train_timesteps;
        let original = config.original_inference_steps;
        if original == 0 || original > n {
            return Err(SchedulerError(format!("original_inference_steps must be between 1 and {n}, got {original}")));
        }
        if steps > original {
            return Err(SchedulerError(format!(
                "LCM takes at most original_inference_steps = {original} steps, got {steps}"
            )));
        }
        let k = n / original;
        // lcm_origin_timesteps reversed: original·k − 1, …, k − 1.
        let origin: Vec<usize> = (1..=original).rev().map(|i| i * k - 1).collect();
        // np.floor(np.linspace(0, len, steps, endpoint=False)): i · (len / steps), floored.
        let stride = origin.len() as f64 / steps as f64;
        let timesteps = (0..steps).map(|i| origin[(i as f64 * stride).floor() as usize]).collect();
        Ok(Self {
            v_prediction: is_v_prediction(config),
            alphas_cumprod,
            timesteps,
            timestep_scaling: config.timestep_scaling as f32,
            noise_seed: 0,
        })
    }

    /// Seed for the noise added between steps (default 0).
    pub fn with_noise_seed(mut self, seed: u64) -> Self {
        self.noise_seed = seed;
        self
    }

    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    pub fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    /// Panics if `t` is not one of [`timesteps`](Self::timesteps), like diffusers.
    fn index(&self, t: usize) -> usize {
        self.timesteps
            .iter()
            .position(|&s| s == t)
            .unwrap_or_else(|| panic!("timestep {t} is not in this scheduler's timesteps {:?}", self.timesteps))
    }

    /// `(c_skip, c_out)` at `t`: σ_data² / (τ² + σ_data²) and τ / √(τ² + σ_data²), τ = t · scaling,
    /// σ_data = 0.5 (float32, as torch computes them from the int64 timestep tensor).
    pub fn boundary_scalings(&self, t: usize) -> (f32, f32) {
        let tau = t as f32 * self.timestep_scaling;
        let d = tau * tau + 0.25;
        (0.25 / d, tau / d.sqrt())
    }

    /// The noise [`step`](Self::step) adds after the step at position `index`.
    pub fn step_noise(&self, index: usize, like: &Tensor<4>) -> Tensor<4> {
        let dims = like.dims();
        let values = seeded_noise(self.noise_seed, index as u64 + 1, dims.iter().product());
        Tensor::from_data(TensorData::new(values, dims), &like.device())
    }

    /// One step with seeded noise (see the type's docs).
    pub fn step(&self, model_output: Tensor<4>, t: usize, sample: Tensor<4>) -> Tensor<4> {
        let i = self.index(t);
        let noise = (i + 1 < self.timesteps.len()).then(|| self.step_noise(i, &sample));
        self.step_inner(model_output, i, sample, noise)
    }

    /// One step re-noising with `noise` (unused on the last step).
    pub fn step_with_noise(&self, model_output: Tensor<4>, t: usize, sample: Tensor<4>, noise: Tensor<4>) -> Tensor<4> {
        let i = self.index(t);
        self.step_inner(model_output, i, sample, Some(noise))
    }

    fn step_inner(&self, model_output: Tensor<4>, i: usize, sample: Tensor<4>, noise: Option<Tensor<4>>) -> Tensor<4> {
        let t = self.timesteps[i];
        let last = i + 1 == self.timesteps.len();
        let alpha_t = self.alphas_cumprod[t];
        let beta_t = 1.0 - alpha_t;
        let (c_skip, c_out) = self.boundary_scalings(t);
        let pred_original = if self.v_prediction {
            sample.clone().mul_scalar(alpha_t.sqrt()) - model_output.mul_scalar(beta_t.sqrt())
        } else {
            (sample.clone() - model_output.mul_scalar(beta_t.sqrt())).div_scalar(alpha_t.sqrt())
        };
        let denoised = pred_original.mul_scalar(c_out) + sample.mul_scalar(c_skip);
        match (last, noise) {
            (false, Some(noise)) => {
                let alpha_prev = self.alphas_cumprod[self.timesteps[i + 1]];
                let beta_prev = 1.0 - alpha_prev;
                denoised.mul_scalar(alpha_prev.sqrt()) + noise.mul_scalar(beta_prev.sqrt())
            }
            _ => denoised,
        }
    }
}

/// `n` standard normal samples from ChaCha8 seeded with `seed`, on stream `stream`
/// (Box–Muller, pairs). Stream 0 is the same sequence as `pipeline::gaussian_noise(seed, n)`
/// (the initial latents); [`LcmScheduler`] uses stream `step + 1` for its step noise.
pub fn seeded_noise(seed: u64, stream: u64, n: usize) -> Vec<f32> {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
        let u2: f64 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        out.push((r * theta.cos()) as f32);
        out.push((r * theta.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// `torch.linspace(start, end, n, dtype=float32)` bit for bit: a float32 step, the first
/// half counted from the start and the second from the end, each value a fused
/// multiply-add rounded once to float32 (as ATen's vectorised kernel computes it).
fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    (0..n)
        .map(|i| {
            if i < n / 2 {
                (start as f64 + step as f64 * i as f64) as f32
            } else {
                (end as f64 - step as f64 * (n - 1 - i) as f64) as f32
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_timesteps_match_diffusers() {
        // DDIMScheduler(steps_offset=1).set_timesteps(10).timesteps
        let s = DdimScheduler::new(&SchedulerConfig::default(), 10).unwrap();
        assert_eq!(s.timesteps(), &[901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
    }

    #[test]
    fn alphas_cumprod_endpoints_match_diffusers() {
        // torch: DDIMScheduler(beta_schedule="scaled_linear", 0.00085, 0.012).alphas_cumprod[[0, 999]]
        let s = DdimScheduler::new(&SchedulerConfig::default(), 1).unwrap();
        assert!((s.alphas_cumprod[0] - 0.99915).abs() < 1e-6);
        assert!((s.alphas_cumprod[999] - 0.004_660_09).abs() < 2e-6, "{}", s.alphas_cumprod[999]);
    }

    #[test]
    fn rejects_zero_steps() {
        assert!(DdimScheduler::new(&SchedulerConfig::default(), 0).is_err());
        for kind in SchedulerKind::ALL {
            let err = Scheduler::new(kind, &SchedulerConfig::default(), 0).unwrap_err();
            assert_eq!(err.to_string(), "scheduler: steps must be between 1 and 1000, got 0", "{kind}");
        }
    }

    #[test]
    fn trailing_rounds_half_to_even_like_numpy() {
        // np.arange(1000, 0, -62.5).round() - 1: 812.5 → 812, not 813.
        let t = trailing_timesteps(1000, 16).unwrap();
        assert_eq!(&t[..5], &[999, 937, 874, 811, 749]);
        assert_eq!(trailing_timesteps(1000, 3).unwrap(), vec![999, 666, 332]);
    }

    #[test]
    fn kinds_parse_from_their_names() {
        for kind in SchedulerKind::ALL {
            assert_eq!(kind.name().parse::<SchedulerKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.name());
        }
        assert_eq!(" Euler ".parse::<SchedulerKind>().unwrap(), SchedulerKind::Euler);
        assert_eq!("DPM++2M".parse::<SchedulerKind>().unwrap(), SchedulerKind::DpmSolver2M);
        assert_eq!("dpmpp2m".parse::<SchedulerKind>().unwrap(), SchedulerKind::DpmSolver2M);
        assert_eq!("dpmpp2m-karras".parse::<SchedulerKind>().unwrap(), SchedulerKind::DpmSolver2MKarras);
        assert_eq!(SchedulerKind::default(), SchedulerKind::Ddim);
    }

    #[test]
    fn unknown_kind_names_the_choices() {
        for bad in ["", "pndm", "dpm++", "dpm 2m", "euler_a"] {
            let err = bad.parse::<SchedulerKind>().unwrap_err();
            let want = format!(
                "scheduler: unknown scheduler {bad:?}: expected one of ddim, euler, euler-karras, dpm++2m, dpm++2m-karras, lcm"
            );
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn kinds_serialize_as_names() {
        assert_eq!(serde_json::to_string(&SchedulerKind::DpmSolver2M).unwrap(), "\"dpm++2m\"");
        assert_eq!(serde_json::from_str::<SchedulerKind>("\"lcm\"").unwrap(), SchedulerKind::Lcm);
        let err = serde_json::from_str::<SchedulerKind>("\"heun\"").unwrap_err().to_string();
        assert!(err.contains("unknown scheduler \"heun\""), "{err}");
    }

    #[test]
    fn euler_linspace_timesteps_are_fractional_like_diffusers() {
        // EulerDiscreteScheduler(timestep_spacing="linspace").set_timesteps(3).timesteps
        let config = SchedulerConfig { timestep_spacing: "linspace".into(), ..SchedulerConfig::default() };
        let s = Scheduler::new(SchedulerKind::Euler, &config, 3).unwrap();
        assert_eq!(s.timesteps(), vec![999.0, 499.5, 0.0]);
        // The integer samplers round the same spacing.
        let s = Scheduler::new(SchedulerKind::Ddim, &config, 3).unwrap();
        assert_eq!(s.timesteps(), vec![999.0, 500.0, 0.0]);
    }

    #[test]
    #[should_panic(expected = "not in this scheduler's (integer) timesteps")]
    fn integer_samplers_refuse_fractional_timesteps() {
        let mut s = Scheduler::new(SchedulerKind::Ddim, &SchedulerConfig::default(), 10).unwrap();
        let x = Tensor::<4>::zeros([1, 1, 1, 1], &burn::tensor::Device::flex());
        s.step(x.clone(), 900.5, x);
    }

    #[test]
    fn unsupported_configs_are_errors() {
        let config = SchedulerConfig { timestep_spacing: "even".into(), ..SchedulerConfig::default() };
        for kind in [SchedulerKind::Ddim, SchedulerKind::Euler, SchedulerKind::EulerKarras, SchedulerKind::DpmSolver2M]
        {
            let err = Scheduler::new(kind, &config, 10).unwrap_err().to_string();
            assert!(err.contains("timestep_spacing even is not supported"), "{kind}: {err}");
        }
        // LCM ignores the spacing, as diffusers does.
        assert!(Scheduler::new(SchedulerKind::Lcm, &config, 10).is_ok());
        let config = SchedulerConfig { prediction_type: "sample".into(), ..SchedulerConfig::default() };
        for kind in SchedulerKind::ALL {
            assert!(Scheduler::new(kind, &config, 10).unwrap_err().to_string().contains("prediction_type sample"));
        }
        let err = Scheduler::new(SchedulerKind::Lcm, &SchedulerConfig::default(), 51).unwrap_err();
        assert_eq!(err.to_string(), "scheduler: LCM takes at most original_inference_steps = 50 steps, got 51");
    }

    #[test]
    fn lcm_fields_default_and_stay_out_of_old_manifests() {
        // A manifest written before LCM existed still parses, and re-serialises unchanged.
        let json = concat!(
            r#"{"num_train_timesteps":1000,"beta_start":0.00085,"beta_end":0.012,"beta_schedule":"scaled_linear","#,
            r#""set_alpha_to_one":false,"steps_offset":1,"prediction_type":"epsilon","timestep_spacing":"leading"}"#
        );
        let config: SchedulerConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config, SchedulerConfig::default());
        assert_eq!(serde_json::to_string(&config).unwrap(), json);
    }

    #[test]
    fn seeded_noise_streams_differ() {
        let a = seeded_noise(7, 1, 1000);
        assert_eq!(a, seeded_noise(7, 1, 1000));
        assert_ne!(a, seeded_noise(7, 2, 1000));
        assert_ne!(a, seeded_noise(7, 0, 1000));
        assert_ne!(a, seeded_noise(8, 1, 1000));
    }
}
