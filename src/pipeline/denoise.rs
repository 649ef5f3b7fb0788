//! The denoising loop: seeded noise (or the image to refine, noised), then per step the UNet
//! (with the ControlNet's residuals) under classifier-free guidance, the scheduler's update, and
//! the product's own latents held inside the product.

use burn::tensor::{Tensor, TensorData};

use super::conditioning::{Depth, Guidance};
use super::error::PipelineError;
use super::inpaint::{InpaintInputs, cells_inside, rgba_tensor};
use super::options::{Canvas, GenerateOptions, first_refining_step};
use super::partner::{GuidancePartner, Half, fingerprint};
use crate::denoise::mepa::{Conditioning, ImagePrompt};
use crate::denoise::scheduler::Scheduler;
use crate::model::Model;

/// Runs the schedule's steps (from the first an [`InitImage`] asks for) and returns the clean
/// latents. `progress(step, total)` after every step; `false` cancels. With a `partner`, each
/// guided step computes only this instance's half ([`super::partner`]); a partner that fails is
/// dropped and its half computed here (a helper, whose ad nobody uses, stops instead).
#[allow(clippy::too_many_arguments)] // the loop's inputs, each made by its own stage
pub(super) async fn denoise(
    model: &Model,
    scheduler: &mut Scheduler,
    canvas: &Canvas,
    inputs: &InpaintInputs,
    guidance: &Guidance,
    depth: Option<&Depth>,
    options: &GenerateOptions,
    vae_tile: Option<usize>,
    mut partner: Option<&dyn GuidancePartner>,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Tensor<4>, PipelineError> {
    let device = &model.device;
    let Canvas { w, h, f, lw, lh } = *canvas;
    // Initial noise from the seed, drawn on the CPU so every device starts identically; or the
    // image to refine, noised to the first step that runs.
    let lat_ch = model.manifest.vae.latent_channels();
    let noise = Tensor::<4>::from_data(
        TensorData::new(gaussian_noise(options.seed, lat_ch * lh * lw), [1, lat_ch, lh, lw]),
        device,
    );
    let timesteps = scheduler.timesteps().to_vec();
    let epsilon = model.manifest.scheduler.prediction_type == "epsilon";
    let total = timesteps.len();
    let (mut latents, start) = match &options.init {
        None => (noise.clone().mul_scalar(scheduler.init_noise_sigma()), 0),
        Some(init) => {
            let start = first_refining_step(init, total, w, h)?;
            let image = model.vae_encoder.encode_tiled(rgba_tensor(&init.image, device), vae_tile);
            let (a, b) = scheduler.noise_coefficients(start);
            (image.mul_scalar(a) + noise.clone().mul_scalar(b), start)
        }
    };
    // Latent cells no generated pixel falls in, as 1 (and the rest as 0), for anchoring.
    let anchor = options.anchor_product.then(|| {
        let inside = cells_inside(&inputs.inpaint, w, h, f);
        let outside: Vec<f32> = inside.iter().map(|v| 1.0 - v).collect();
        let cells = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [1, 1, lh, lw]), device);
        (cells(inside), cells(outside))
    });

    for (i, &step_t) in timesteps.iter().enumerate().skip(start) {
        // Only the noisy latents are scaled (Euler), as diffusers' inpainting pipeline does.
        let scaled = scheduler.scale_model_input(latents.clone(), step_t);
        let input = Tensor::cat(vec![scaled, inputs.mask_latent.clone(), inputs.masked_latents.clone()], 1);
        let eps = match partner.filter(|_| guidance.scale != 1.0) {
            None => predict_noise(model, input, step_t, &guidance.cond, &guidance.uncond, guidance.scale, depth),
            Some(p) => {
                let (eps, lost) = shared_noise(p, model, input, step_t, i, guidance, depth).await?;
                if let Some(why) = lost {
                    if p.half() == Half::Unconditional {
                        return Err(PipelineError::ShareDone);
                    }
                    log_warning(&format!("The helper worker stopped sharing the work ({why}); going on alone."));
                    partner = None;
                }
                eps
            }
        };
        let done = i + 1 - start;
        let preview = options.preview_every > 0 && done % options.preview_every == 0 && i + 1 < total;
        // The step preview shows the clean image this step predicts, x̂₀ = (x_t − b·ε̂)/a, far
        // less noisy than x_t itself; for a v-prediction model, x_t.
        let predicted = (preview && epsilon).then(|| {
            let (a, b) = scheduler.noise_coefficients(i);
            (latents.clone() - eps.clone().mul_scalar(b)).div_scalar(a)
        });
        latents = scheduler.step(eps, step_t, latents);
        if let Some((inside, outside)) = &anchor {
            // diffusers: init_latents_proper = add_noise(image_latents, noise, t_next), clean
            // after the last step; latents = (1 − mask) · proper + mask · latents.
            let (a, b) = if i + 1 < total { scheduler.noise_coefficients(i + 1) } else { (1.0, 0.0) };
            let known = inputs.masked_latents.clone().mul_scalar(a) + noise.clone().mul_scalar(b);
            latents = known * inside.clone() + latents * outside.clone();
        }
        // Wait for the GPU here: it bounds queued work, lets the browser repaint, and
        // surfaces a lost device at the step where it happened. The values feed the step preview.
        let values = latents.to_data_async().await.map_err(|e| PipelineError::Gpu(format!("{e:?}")))?;
        let shown = match predicted {
            Some(x0) => Some(x0.into_data_async().await.map_err(|e| PipelineError::Gpu(format!("{e:?}")))?),
            None if preview => Some(values.clone()),
            None => None,
        };
        if options.preview_every > 0 {
            model.preview.lock().expect("preview lock").step(values, shown.as_ref());
        }
        crate::gpu::watchdog::beat("a denoising step");
        crate::gpu::let_host_run(device).await;
        if !progress(i + 1 - start, total - start) {
            return Err(PipelineError::Cancelled);
        }
    }
    Ok(latents)
}

/// ε̂ with this instance computing its half and `partner` the other; when the partner gives
/// none (or one for a different input), the other half computed here, and why, returned beside.
async fn shared_noise(
    partner: &dyn GuidancePartner,
    model: &Model,
    input: Tensor<4>,
    t: f32,
    step: usize,
    guidance: &Guidance,
    depth: Option<&Depth>,
) -> Result<(Tensor<4>, Option<String>), PipelineError> {
    let read = |d: Result<TensorData, _>| {
        d.map_err(|e| PipelineError::Gpu(format!("{e:?}")))
            .and_then(|d| d.try_to_vec::<f32>().map_err(|e| PipelineError::Gpu(format!("{e:?}"))))
    };
    let half = partner.half();
    let (own_c, other_c) = match half {
        Half::Unconditional => (&guidance.uncond, &guidance.cond),
        Half::Conditional => (&guidance.cond, &guidance.uncond),
    };
    let ours = fingerprint(&read(input.clone().into_data_async().await)?);
    let own = noise_of(model, input.clone(), t, own_c, depth);
    let values = read(own.clone().into_data_async().await)?;
    let (other, lost) = match partner.exchange(step, ours, values).await {
        Ok((theirs, values)) if theirs == ours && values.len() == own.shape().num_elements() => {
            (Tensor::from_data(TensorData::new(values, own.dims()), &own.device()), None)
        }
        Ok((theirs, _)) => (
            noise_of(model, input, t, other_c, depth),
            Some(format!("its step {step} began from other values: {theirs:08x}, ours {ours:08x}")),
        ),
        Err(why) => (noise_of(model, input, t, other_c, depth), Some(why)),
    };
    let (uncond, cond) = match half {
        Half::Unconditional => (own, other),
        Half::Conditional => (other, own),
    };
    Ok((guide(uncond, cond, guidance.scale), lost))
}

/// Tells the developer console (or stderr) what the user need not see.
fn log_warning(message: &str) {
    #[cfg(target_arch = "wasm32")]
    web_sys::console::warn_1(&message.into());
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{message}");
}

/// ε̂ = ε_uncond + s·(ε_cond − ε_uncond); with `s == 1` only the conditional half is
/// computed. The halves batch into one UNet call when their text contexts have the same
/// token count; otherwise they run as two calls (the runtime never pads prompts, so attention
/// sees exactly the prompt's tokens, as in training). With `depth`, the ControlNet runs on the
/// same batch and its residuals steer every UNet call.
pub fn predict_noise(
    model: &Model,
    input: Tensor<4>,
    t: f32,
    cond: &Conditioning,
    uncond: &Conditioning,
    scale: f32,
    depth: Option<&Depth>,
) -> Tensor<4> {
    let unet = |input: Tensor<4>, c: &Conditioning| noise_of(model, input, t, c, depth);
    if scale == 1.0 {
        return unet(input, cond);
    }
    let batched = if halves_in_parallel(model) { None } else { batch_pair(uncond, cond, &input) };
    let (eps_uncond, eps_cond) = match batched {
        Some(batched) => {
            let out = unet(Tensor::cat(vec![input.clone(), input], 0), &batched);
            (out.clone().narrow(0, 0, 1), out.narrow(0, 1, 1))
        }
        None => both(|| unet(input.clone(), uncond), || unet(input.clone(), cond)),
    };
    guide(eps_uncond, eps_cond, scale)
}

/// Classifier-free guidance: ε_uncond + s·(ε_cond − ε_uncond).
fn guide(eps_uncond: Tensor<4>, eps_cond: Tensor<4>, scale: f32) -> Tensor<4> {
    eps_uncond.clone() + (eps_cond - eps_uncond).mul_scalar(scale)
}

/// The UNet's noise prediction for one conditioning, steered by the ControlNet's residuals
/// when there is `depth`.
fn noise_of(model: &Model, input: Tensor<4>, t: f32, c: &Conditioning, depth: Option<&Depth>) -> Tensor<4> {
    let residuals = match (&model.controlnet, depth) {
        (Some(controlnet), Some(depth)) => {
            // The ControlNet reads the noisy latents (4 channels) or the whole inpainting input.
            let sample = input.clone().narrow(1, 0, controlnet.config().in_channels);
            Some(controlnet.forward_embedded(
                sample,
                t,
                &Conditioning::text(c.text.clone()),
                depth.embedding.clone(),
                depth.scale,
            ))
        }
        _ => None,
    };
    model.unet.forward_controlled(input, t, c, residuals.as_ref())
}

/// Natively on the CPU with two or more threads, the halves run as two calls at once (never as
/// one batch of 2): the default model's tensors are too small for burn's CPU backend to keep two
/// cores busy within one op (BENCHMARKS.md, 2026-12-06), so each half gets a core instead. A
/// prompt's halves are two calls anyway (its token count is not the empty prompt's).
fn halves_in_parallel(model: &Model) -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    return model.device == burn::tensor::Device::flex() && rayon::current_num_threads() > 1;
    #[cfg(target_arch = "wasm32")]
    {
        let _ = model;
        false
    }
}

/// Both results, at once where there are threads (natively), else one after the other.
pub fn both<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    #[cfg(not(target_arch = "wasm32"))]
    return rayon::join(a, b);
    #[cfg(target_arch = "wasm32")]
    (a(), b())
}

/// `[uncond; cond]` as one batch of 2, when their token counts allow it. A half without an
/// image prompt gets the other half's tokens under an all-zero region mask, which adds exactly
/// nothing (M ⊙ Attn = 0), so one UNet call computes both.
fn batch_pair(uncond: &Conditioning, cond: &Conditioning, input: &Tensor<4>) -> Option<Conditioning> {
    if uncond.text.dims() != cond.text.dims() || uncond.text_scale != cond.text_scale {
        return None;
    }
    let text = Tensor::cat(vec![uncond.text.clone(), cond.text.clone()], 0);
    let image = match (&uncond.image, &cond.image) {
        (None, None) => None,
        (Some(a), Some(b)) if a.tokens.dims() != b.tokens.dims() || a.scale != b.scale => return None,
        (a, b) => {
            let [_, _, h, w] = input.dims();
            let device = input.device();
            let region = |p: Option<&ImagePrompt>| match p {
                None => Tensor::<4>::zeros([1, 1, h, w], &device),
                Some(p) => p.region.clone().unwrap_or_else(|| Tensor::ones([1, 1, h, w], &device)),
            };
            let some = a.as_ref().or(b.as_ref()).expect("one half has an image prompt");
            let tokens = |p: Option<&ImagePrompt>| p.unwrap_or(some).tokens.clone();
            Some(ImagePrompt {
                tokens: Tensor::cat(vec![tokens(a.as_ref()), tokens(b.as_ref())], 0),
                scale: some.scale,
                region: Some(Tensor::cat(vec![region(a.as_ref()), region(b.as_ref())], 0)),
            })
        }
    };
    Some(Conditioning { text, text_scale: cond.text_scale, image })
}

/// Standard normal samples from a seeded ChaCha8 stream (Box–Muller): the same seed
/// gives the same noise on every device and platform. Stream 0 of
/// [`crate::denoise::scheduler::seeded_noise`]; LCM's step noise uses the later streams.
pub fn gaussian_noise(seed: u64, n: usize) -> Vec<f32> {
    crate::denoise::scheduler::seeded_noise(seed, 0, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_seeded_and_standard() {
        let a = gaussian_noise(7, 10_000);
        assert_eq!(a, gaussian_noise(7, 10_000));
        assert_ne!(a, gaussian_noise(8, 10_000));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        let var = a.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
    }
}
