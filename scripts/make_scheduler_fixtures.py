#!/usr/bin/env python3
"""Writes scheduler parity fixtures into tests/parity/ for tests/schedulers.rs.

Four diffusers schedulers built from Stable Diffusion 1.5's scheduler config (the config
`from_config` would give them inside a pipeline), each driven through 10 steps:

    ddim     DDIMScheduler                     (eta = 0)
    euler    EulerDiscreteScheduler
    euler-karras  the same with use_karras_sigmas=True (fractional timesteps)
    dpm++2m  DPMSolverMultistepScheduler       (dpmsolver++, solver_order 2, lower_order_final)
    dpm++2m-karras  the same with use_karras_sigmas=True
    lcm      LCMScheduler                      (10 steps, and 4 steps: LCM's own spacing)

and Euler with linspace spacing over 8 steps (`euler-linspace`: fractional timesteps).

`schedulers.safetensors` holds a shared start latent `x0` [1, 4, 8, 8] (torch.manual_seed),
ten shared fake model outputs `eps{i}` (seeded random tensors, fed to every scheduler), the
noise `noise{i}` LCM draws at its intermediate steps (injected in place of `randn_tensor` and
recorded, so Rust can use the same), and per case (`{kind}.{prediction}`; `lcm4` for the
4-step LCM run, `euler-linspace` for the 8-step linspace one) the start latent times init_noise_sigma (`.init`), every
`scale_model_input` output (`.scaled{i}`) and every step's prev_sample (`.x{i+1}`).

`schedulers.json` holds, for each kind and a grid of step counts and timestep spacings,
diffusers' timesteps, sigmas (Euler, DPM-Solver) and init_noise_sigma, all float32 values written
in the shortest decimal that reads back as the same float32, or null where
diffusers refuses the combination (spacings leading, trailing and linspace); and `add_noise`:
per kind at 10 steps, the coefficients (a, b) of `add_noise(x0, noise, timesteps[i])`.

    HF_HUB_OFFLINE=1 ~/.cache/adcanvas-py/bin/python scripts/make_scheduler_fixtures.py
"""
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import diffusers
import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, LCMScheduler
from diffusers.schedulers import scheduling_lcm
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "parity"

# runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json (its PNDM fields drop out).
SD15 = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
    timestep_spacing="leading",
    trained_betas=None,
)

KINDS = {
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-karras": (EulerDiscreteScheduler, {"use_karras_sigmas": True}),
    "dpm++2m": (DPMSolverMultistepScheduler, {}),
    "dpm++2m-karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    "lcm": (LCMScheduler, {}),
}

SHAPE = (1, 4, 8, 8)
STEPS = 10


def make(kind, **overrides):
    cls, options = KINDS[kind]
    return cls.from_config({**SD15, **options, **overrides})


class RecordedNoise:
    """Stands in for `randn_tensor` inside scheduling_lcm: hands out the fixture's noise
    tensors in order, so the Rust test can inject exactly the same ones."""

    def __init__(self, tensors):
        self.tensors = tensors
        self.used = 0

    def __call__(self, shape, generator=None, device=None, dtype=None, **_):
        noise = self.tensors[self.used]
        assert tuple(shape) == tuple(noise.shape)
        self.used += 1
        return noise.to(dtype=dtype)


def trace(kind, prediction, steps, x0, eps, noise, tensors, prefix, **overrides):
    sched = make(kind, prediction_type=prediction, **overrides)
    sched.set_timesteps(steps)
    x = x0 * sched.init_noise_sigma
    tensors[f"{prefix}.init"] = x.clone()
    recorded = RecordedNoise(noise)
    scheduling_lcm.randn_tensor = recorded
    for i, t in enumerate(sched.timesteps):
        scaled = sched.scale_model_input(x, t)
        if kind.startswith("euler"):
            tensors[f"{prefix}.scaled{i}"] = scaled.clone()
        else:
            assert torch.equal(scaled, x), f"{kind} scale_model_input is not the identity"
        x = sched.step(eps[i], t, x).prev_sample
        tensors[f"{prefix}.x{i + 1}"] = x.clone()
    if kind == "lcm":
        assert recorded.used == steps - 1, recorded.used
    return sched


def f32(x):
    """The shortest decimal that parses back to float32 `x` (integers as integers)."""
    x = np.float32(x)
    return int(x) if x.is_integer() else float(str(x))


def schedule_entry(kind, steps, spacing):
    try:
        sched = make(kind, timestep_spacing=spacing)
        sched.set_timesteps(steps)
    except ValueError:
        return None
    entry = {
        # Integers, except Euler's with linspace spacing or Karras σ.
        "timesteps": [f32(t) for t in sched.timesteps.tolist()],
        "init_noise_sigma": f32(sched.init_noise_sigma),
    }
    if kind in ("euler", "euler-karras", "dpm++2m", "dpm++2m-karras"):
        entry["sigmas"] = [f32(s) for s in sched.sigmas.tolist()]
    return entry


def add_noise_coefficients(kind, steps):
    """(a, b) of `add_noise(x0, noise, timesteps[i]) = a·x0 + b·noise` for each index i, as the
    inpainting pipeline calls it between steps (Euler and DPM-Solver read σ at their
    `step_index`, which is i after i steps)."""
    sched = make(kind)
    sched.set_timesteps(steps)
    out = []
    for i, t in enumerate(sched.timesteps):
        if kind not in ("ddim", "lcm"):
            sched.set_begin_index(0)
            sched._step_index = i
        one, zero, ts = torch.ones(1), torch.zeros(1), t.reshape(1)
        out.append([f32(sched.add_noise(one, zero, ts).item()), f32(sched.add_noise(zero, one, ts).item())])
    return out


def schedules():
    out = {}
    for kind in KINDS:
        for spacing in ("leading", "trailing", "linspace"):
            for steps in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 16, 20, 25, 30, 32, 40, 50, 51, 60, 100):
                out[f"{kind}/{spacing}/{steps}"] = schedule_entry(kind, steps, spacing)
    return out


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    x0 = torch.randn(SHAPE)
    g = torch.Generator().manual_seed(1)
    eps = [torch.randn(SHAPE, generator=g) for _ in range(STEPS)]
    g = torch.Generator().manual_seed(2)
    noise = [torch.randn(SHAPE, generator=g) for _ in range(STEPS - 1)]
    tensors = {"x0": x0}
    tensors.update({f"eps{i}": e for i, e in enumerate(eps)})
    tensors.update({f"noise{i}": n for i, n in enumerate(noise)})
    for prediction in ("epsilon", "v_prediction"):
        for kind in KINDS:
            trace(kind, prediction, STEPS, x0, eps, noise, tensors, f"{kind}.{prediction}")
        trace("lcm", prediction, 4, x0, eps, noise, tensors, f"lcm4.{prediction}")
        trace("euler", prediction, 8, x0, eps, noise, tensors, f"euler-linspace.{prediction}", timestep_spacing="linspace")
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().float() for k, v in tensors.items()}, OUT / "schedulers.safetensors")
    meta = {
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
        "config": SD15,
        "steps": STEPS,
        "add_noise": {kind: add_noise_coefficients(kind, STEPS) for kind in KINDS},
        "schedules": schedules(),
    }
    # One schedule a line: compact, and diffs stay readable.
    lines = [f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in meta.pop("schedules").items()]
    head = json.dumps(meta, indent=1, sort_keys=True)[:-2]
    (OUT / "schedulers.json").write_text(head + ',\n "schedules": {\n' + ",\n".join(lines) + "\n }\n}\n")
    total = sum((OUT / f).stat().st_size for f in ("schedulers.safetensors", "schedulers.json"))
    print(f"wrote {OUT}/schedulers.* ({total / 1e3:.0f} KB)")
