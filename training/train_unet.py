"""Trains the default model's inpainting UNet (resumable, time-boxed).

    python training/train_unet.py --data training/data --vae training/runs/vae/vae \
        --run training/runs/unet --minutes 10

Inputs are built exactly as the runtime builds them (src/pipeline.rs, docs/METHOD.md):
  mask m = 1 where the background is generated (product alpha < 0.5), nearest-downsampled
  at each 8×8 cell's top-left pixel; masked image = the ad with m = 1 pixels set to 0
  (in [-1, 1]); its latents and the ad's (the target) are the VAE encoder's output ×
  scaling_factor (AutoencoderTiny is deterministic; for a KL VAE, the posterior mean). Loss: ε-prediction MSE at a uniform timestep
  (DDPM forward process with the runtime's scaled-linear betas). The caption is replaced
  by the empty prompt 10% of the time, for classifier-free guidance. Context tokens are
  the frozen MiniLM's hidden states; padding tokens are masked out of cross-attention so
  training sees exactly what the runtime (which never pads) sees.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import loop  # noqa: E402
from common import SCHEDULER_CONFIG, UNET_CONFIG, Run, device, encode_latents, threads  # noqa: E402
from pack import load_vae  # noqa: E402


def inpaint_inputs(images_u8, masks_u8):
    """(image in [-1,1], masked image, pixel inpaint mask) as the runtime makes them."""
    x = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float() / 127.5 - 1
    keep = torch.from_numpy(masks_u8).float()[:, None] / 255 >= 0.5
    inpaint = (~keep).float()
    return x, x * keep.float(), inpaint


@torch.no_grad()
def encode_split(vae, images, masks, batch=32):
    """Latents of each ad and of its masked image (× scaling factor), and the latent mask."""
    means, masked, mask_lat = [], [], []
    dev = device()
    vae.to(dev)
    for i in range(0, len(images), batch):
        x, xm, inp = inpaint_inputs(images[i:i + batch], masks[i:i + batch])
        means.append(encode_latents(vae, x.to(dev)).half().cpu())
        masked.append(encode_latents(vae, xm.to(dev)).half().cpu())
        mask_lat.append(inp[:, :, ::8, ::8].bool())
        if i % 640 == 0:
            print(f"  encoded {i}/{len(images)}", flush=True)
    return torch.cat(means), torch.cat(masked), torch.cat(mask_lat)


def load_latents(data_dir, vae_dir, cache):
    if os.path.exists(cache):
        return torch.load(cache, weights_only=False)
    vae = load_vae(vae_dir)
    out = {}
    for split in ["train", "heldout"]:
        d = np.load(os.path.join(data_dir, f"{split}.npz"))
        mean, masked, mask = encode_split(vae, d["images"], d["masks"])
        out[split] = dict(mean=mean, masked=masked, mask=mask,
                          context=torch.from_numpy(d["context"]), context_len=torch.from_numpy(d["context_len"]))
    e = np.load(os.path.join(data_dir, "empty_prompt.npz"))
    out["empty"] = dict(context=torch.from_numpy(e["context"]), context_len=torch.from_numpy(e["context_len"]))
    torch.save(out, cache)
    return out


def main():
    from diffusers import DDPMScheduler, UNet2DConditionModel

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="training/data")
    ap.add_argument("--vae", default="training/runs/vae/vae")
    ap.add_argument("--run", default="training/runs/unet")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--cfg-drop", type=float, default=0.1)
    ap.add_argument("--ema", type=float, default=0.999)
    args = ap.parse_args()
    print("threads", threads())
    os.makedirs(args.run, exist_ok=True)
    lat = load_latents(args.data, args.vae, os.path.join(args.run, "latents.pt"))
    tr, empty = lat["train"], lat["empty"]
    n = len(tr["mean"])
    sched = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k != "set_alpha_to_one"})

    torch.manual_seed(0)
    run = Run(args.run, UNet2DConditionModel(**UNET_CONFIG), lr=args.lr, weight_decay=1e-2)
    unet, ema, opt, step, dev = run.model, run.ema, run.opt, run.step, run.device
    g = torch.Generator().manual_seed(1000 + step)
    T = tr["context"].shape[1]

    def batch_loss(step):
        idx = torch.randint(0, n, (args.batch,), generator=g)
        z0 = tr["mean"][idx].float()
        ctx = tr["context"][idx].float()
        clen = tr["context_len"][idx].clone()
        drop = torch.rand(args.batch, generator=g) < args.cfg_drop
        if drop.any():
            ctx[drop] = empty["context"][0].float()
            clen[drop] = empty["context_len"][0]
        attn = (torch.arange(T)[None] < clen[:, None]).float()
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (args.batch,), generator=g)
        zt = sched.add_noise(z0, noise, t)
        inp = torch.cat([zt, tr["mask"][idx].float(), tr["masked"][idx].float()], 1)
        inp, t, ctx, attn, noise = (v.to(dev) for v in (inp, t, ctx, attn, noise))
        pred = unet(inp, t, ctx, encoder_attention_mask=attn).sample
        return F.mse_loss(pred, noise), {}

    step = loop.train(run=args.run, minutes=args.minutes, opt=opt, params=unet.parameters(), batch_loss=batch_loss,
                      save=run.save, step=step, base_lrs=[args.lr], warmup=200,
                      ema=run.ema_pairs(), ema_decay=args.ema)
    ema.cpu().save_pretrained(os.path.join(args.run, "unet"))
    print(f"done: step {step}, EMA weights saved to {args.run}/unet")


if __name__ == "__main__":
    main()
