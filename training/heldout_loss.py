"""Held-out ε-MSE of a pack's model and of a training run's EMA weights, on the same ads, noise
and timesteps: whether a fine-tune (scripts/gpu_train.sh) fits data the pack was not trained on,
e.g. 512² ads for a model trained at 256².

    python training/heldout_loss.py --data DIR --latents DIR/latents.pt --pack models/default --run RUN

Each held-out ad is scored with its caption and its PFV-masked style reference through MEPA, as
the runtime runs it, at 8 timesteps spread over [0, 1000) (the same for every model); the high-noise
half (t ≥ 500), where the layout and colours of a scene are decided, is reported on its own.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import SCHEDULER_CONFIG, device, threads  # noqa: E402
from mepa import background_region, project  # noqa: E402
from train_reference import reference_batch  # noqa: E402
from train_unet import load_latents  # noqa: E402

TIMESTEPS = [62, 187, 312, 437, 562, 687, 812, 937]


@torch.no_grad()
def heldout_loss(unet, enc, ho, refs, ref_masks, region, batch=16, seed=0):
    """(mean ε-MSE, mean at t ≥ 500) over every held-out ad × TIMESTEPS."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k != "set_alpha_to_one"})
    dev = device()
    unet.to(dev).eval()
    enc.to(dev).eval()
    g = torch.Generator().manual_seed(seed)
    n, T = len(ho["mean"]), ho["context"].shape[1]
    losses = {t: [] for t in TIMESTEPS}
    for i in range(0, n, batch):
        idx = torch.arange(i, min(i + batch, n))
        z0 = ho["mean"][idx].float()
        ctx = ho["context"][idx].float()
        attn = (torch.arange(T)[None] < ho["context_len"][idx][:, None]).float()
        pixels, keep = reference_batch(refs, ref_masks, idx)
        tokens = project(unet, enc(pixels.to(dev)))
        mepa = dict(tokens=tokens, key_mask=keep.to(dev), region=region[idx].to(dev), scale=1.0)
        for t in TIMESTEPS:
            noise = torch.randn(z0.shape, generator=g)
            tt = torch.full((len(idx),), t)
            zt = sched.add_noise(z0, noise, tt)
            inp = torch.cat([zt, ho["mask"][idx].float(), ho["masked"][idx].float()], 1)
            pred = unet(inp.to(dev), tt.to(dev), ctx.to(dev), encoder_attention_mask=attn.to(dev),
                        cross_attention_kwargs=dict(mepa=mepa)).sample
            losses[t] += ((pred.cpu() - noise) ** 2).mean(dim=(1, 2, 3)).tolist()
    every = np.mean([np.mean(v) for v in losses.values()])
    high = np.mean([np.mean(v) for t, v in losses.items() if t >= 500])
    return float(every), float(high)


def main():
    import pack
    from diffusers import UNet2DConditionModel  # noqa: F401  (diffusers must import before mepa's models)

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--latents", required=True, help="the training run's latent cache (train_unet.load_latents)")
    ap.add_argument("--pack", default="models/default")
    ap.add_argument("--run", default=None, help="a train_reference.py run whose state.pt EMA weights to score too")
    args = ap.parse_args()
    threads()
    lat = load_latents(args.data, args.pack, args.latents)
    ho = lat["heldout"]
    d = np.load(os.path.join(args.data, "heldout.npz"))
    refs, ref_masks = d["ref_images"], d["ref_masks"]
    region = background_region(d["masks"])
    rows = [("pack " + args.pack, pack.mepa_unet(args.pack), pack.reference_encoder(args.pack))]
    if args.run:
        s = torch.load(os.path.join(args.run, "state.pt"), map_location="cpu", weights_only=False)
        unet, enc = pack.mepa_unet(args.pack), pack.reference_encoder(args.pack)
        unet.load_state_dict({k: v.float() for k, v in s["ema"].items()})
        enc.load_state_dict({k: v.float() for k, v in s["ema_enc"].items()})
        rows.append((f"run {args.run} (EMA, step {s['step']})", unet, enc))
    size = d["images"].shape[1]
    print(f"held-out ε-MSE, {len(ho['mean'])} ads at {size}², timesteps {TIMESTEPS}")
    print("| model | all t | t ≥ 500 |\n|---|---|---|")
    for name, unet, enc in rows:
        every, high = heldout_loss(unet, enc, ho, refs, ref_masks, region)
        print(f"| {name} | {every:.5f} | {high:.5f} |", flush=True)


if __name__ == "__main__":
    main()
