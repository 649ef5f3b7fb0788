//! DDIM (Song et al. 2020), as diffusers' `DDIMScheduler` (`schedulers/scheduling_ddim.py`)
//! with η = 0: `set_timesteps`, then `step` from x_t to x_{t−Δ}.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// diffusers' scheduler config fields that DDIM reads (`scheduler/scheduler_config.json`).
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
    /// `"leading"` (SD 1.x default) or `"trailing"`.
    #[serde(default = "leading")]
    pub timestep_spacing: String,
}

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
        }
    }
}

/// Why a scheduler cannot be built.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerError(pub String);

impl std::fmt::Display for SchedulerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "scheduler: {}", self.0)
    }
}

impl std::error::Error for SchedulerError {}

/// DDIM with a fixed number of inference steps.
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
        let n = config.num_train_timesteps;
        if steps == 0 || steps > n {
            return Err(SchedulerError(format!("steps must be between 1 and {n}, got {steps}")));
        }
        // As torch computes them: betas in float32 (`linspace(..., dtype=float32) ** 2`),
        // alphas = 1 − β in float32, and `cumprod` accumulating in double (CPU `acc_type`).
        let betas: Vec<f32> = match config.beta_schedule.as_str() {
            "scaled_linear" => linspace_f32(config.beta_start.sqrt() as f32, config.beta_end.sqrt() as f32, n)
                .into_iter()
                .map(|b| b * b)
                .collect(),
            "linear" => linspace_f32(config.beta_start as f32, config.beta_end as f32, n),
            other => return Err(SchedulerError(format!("beta_schedule {other} is not supported"))),
        };
        let mut alphas_cumprod = Vec::with_capacity(n);
        let mut acc = 1f64;
        for b in betas {
            acc *= (1.0f32 - b) as f64;
            alphas_cumprod.push(acc as f32);
        }
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };
        let timesteps = match config.timestep_spacing.as_str() {
            "leading" => {
                let ratio = n / steps;
                (0..steps).rev().map(|i| i * ratio + config.steps_offset).collect()
            }
            "trailing" => {
                let ratio = n as f64 / steps as f64;
                let mut t: Vec<usize> = (1..=steps).rev().map(|i| ((i as f64 * ratio).round() as usize).saturating_sub(1)).collect();
                t.dedup();
                t
            }
            other => return Err(SchedulerError(format!("timestep_spacing {other} is not supported"))),
        };
        if !matches!(config.prediction_type.as_str(), "epsilon" | "v_prediction") {
            return Err(SchedulerError(format!("prediction_type {} is not supported", config.prediction_type)));
        }
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
            _ => (
                (sample - model_output.clone().mul_scalar((1.0 - a_t).sqrt())).div_scalar(a_t.sqrt()),
                model_output,
            ),
        };
        pred_x0.mul_scalar(a_prev.sqrt()) + eps.mul_scalar((1.0 - a_prev).sqrt())
    }
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
    }
}
