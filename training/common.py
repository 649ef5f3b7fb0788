"""Shared pieces of the training scripts: the model configs (the architecture the
runtime loads), checkpoints that resume, and loss logs."""

from __future__ import annotations

import copy
import csv
import os
import time

import torch

# AutoencoderKL, 8× downscale (four levels), small enough to train on a CPU. 8 latent
# channels rather than SD's 4: a 24× instead of 48× compression, which a model this small
# learns in minutes instead of hours (at 4 channels it was still grey after 600 steps).
# 8 norm groups, not SD's 32: with 32 channels, 32 groups would normalise every channel on
# its own and erase each sample's mean colour before the output conv (flat backgrounds then
# cannot be reconstructed; a first run stalled at L1 0.4 for that reason).
VAE_CONFIG = dict(
    in_channels=3, out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[32, 64, 128, 128], layers_per_block=1, latent_channels=8,
    norm_num_groups=8, sample_size=256,
)

# AutoencoderTiny (TAESD's architecture), 8× downscale, 8 latent channels: no norm layers,
# so it can start from an exact construction (see train_tiny_vae.py) and be fine-tuned in
# minutes on a CPU — the small AutoencoderKL above stayed grey and blurry after 1000 steps.
# One block per level and none at full resolution in the encoder keep encoding cheap.
TINY_VAE_CONFIG = dict(
    in_channels=3, out_channels=3,
    encoder_block_out_channels=[32, 32, 32, 32], decoder_block_out_channels=[32, 32, 32, 32],
    num_encoder_blocks=[0, 1, 1, 1], num_decoder_blocks=[1, 1, 1, 1],
    latent_channels=8, act_fn="relu", upsample_fn="nearest", upsampling_scaling_factor=2,
    latent_magnitude=3, latent_shift=0.5, scaling_factor=1.0,
)

# The shipped VAE: TINY_VAE_CONFIG's encoder (the latent space every other model was trained
# in) with a wider, deeper decoder retrained on its latents (train_decoder.py).
DECODER_CONFIG = dict(TINY_VAE_CONFIG, decoder_block_out_channels=[64, 64, 64, 64], num_decoder_blocks=[2, 2, 2, 1])

# Inpainting UNet (17 = 8 noisy latents + 1 mask + 8 masked-image latents), conditioned on
# MiniLM's 384-wide hidden states; cross-attention at 16² and 8² latent resolution.
UNET_CONFIG = dict(
    sample_size=32, in_channels=17, out_channels=8,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    block_out_channels=[32, 64, 128], layers_per_block=1, cross_attention_dim=384,
    attention_head_dim=8, norm_num_groups=8,
)

# The runtime's scheduler config (diffusers' SD defaults).
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    timestep_spacing="leading",
)


def device():
    """CUDA when the machine has it (the GPU configuration), else the CPU. On CUDA, f32 matmuls
    and convolutions take TF32 tensor cores: PyTorch leaves matmuls at full f32 by default, which
    on an H100/H200 is several times slower, and training noise dwarfs TF32's 10-bit mantissa."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda")
    return torch.device("cpu")


def threads():
    n = int(os.environ.get("ADCANVAS_TRAIN_THREADS", str(os.cpu_count() or 1)))
    torch.set_num_threads(n)
    return n


class Checkpoint:
    """`state.pt` in a run folder: saved every few minutes and at the end, so a run that is
    stopped (time limit, machine handed back) resumes where it was."""

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, "state.pt")

    def load(self):
        if os.path.exists(self.path):
            return torch.load(self.path, map_location="cpu", weights_only=False)
        return None

    def save(self, state):
        tmp = self.path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def resume(self, opt, **modules) -> int:
        """Loads the saved run, if there is one, into `modules` (by their keys in the state) and
        `opt`; returns its step, or 0 for a new run."""
        state = self.load()
        if not state:
            return 0
        for key, module in modules.items():
            module.load_state_dict(state[key])
        opt.load_state_dict(state["opt"])
        print("resumed at step", state["step"])
        return state["step"]

    def save_modules(self, step, opt, **modules):
        """Saves `modules`' weights (as CPU tensors, under their keys), `opt` and `step`: what
        `resume` reads back."""
        cpu = {key: {k: v.cpu() for k, v in m.state_dict().items()} for key, m in modules.items()}
        self.save({**cpu, "opt": opt.state_dict(), "step": step})


def optimizer_to(opt, dev):
    """Moves the optimiser's state (AdamW's moments) to `dev`. Call it after moving the model:
    a state loaded before the move stays on the CPU, where the parameters were then."""
    for st in opt.state.values():
        for k, v in st.items():
            if torch.is_tensor(v):
                st[k] = v.to(dev)


class Run:
    """What every single-model training script sets up: the model, its EMA copy (when `ema`), AdamW,
    the run's checkpoint resumed, all moved to the training device. `save(step)` is what
    loop.train calls every few minutes; `key` names the model in state.pt (runs already saved
    use "model", ControlNet's "controlnet")."""

    def __init__(self, folder, model, *, lr, weight_decay, ema=True, key="model", frozen=()):
        self.model = model
        self.ema = copy.deepcopy(model).requires_grad_(False) if ema else None
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.checkpoint = Checkpoint(folder)
        self.modules = {key: model, **({"ema": self.ema} if ema else {})}
        self.step = self.checkpoint.resume(self.opt, **self.modules)
        self.device = device()
        for m in (*self.modules.values(), *frozen):
            m.to(self.device)
        optimizer_to(self.opt, self.device)

    def save(self, step):
        self.checkpoint.save_modules(step, self.opt, **self.modules)

    def ema_pairs(self):
        """loop.train's `ema` argument."""
        return [(self.model, self.ema)] if self.ema is not None else []


class LossLog:
    def __init__(self, folder, fields):
        self.path = os.path.join(folder, "losses.csv")
        new = not os.path.exists(self.path)
        self.f = open(self.path, "a", newline="")
        self.w = csv.writer(self.f)
        if new:
            self.w.writerow(fields)

    def row(self, *values):
        self.w.writerow(values)
        self.f.flush()


class Deadline:
    def __init__(self, minutes):
        self.end = time.time() + minutes * 60

    def passed(self):
        return time.time() >= self.end


def load_vae_folder(folder):
    """A trained VAE saved by diffusers (AutoencoderTiny or AutoencoderKL, by its config's class
    name). `pack.load_vae` also takes a pack's folder."""
    import json

    from diffusers import AutoencoderKL, AutoencoderTiny

    with open(os.path.join(folder, "config.json")) as f:
        cls = json.load(f)["_class_name"]
    return (AutoencoderTiny if cls == "AutoencoderTiny" else AutoencoderKL).from_pretrained(folder).eval()


def encode_latents(vae, x):
    """Deterministic latents × scaling factor (posterior mean for the KL VAE), as the runtime encodes."""
    sf = vae.config.scaling_factor
    if hasattr(vae, "encoder") and vae.__class__.__name__ == "AutoencoderTiny":
        return vae.encoder(x) * sf
    return vae.encode(x).latent_dist.mean * sf
