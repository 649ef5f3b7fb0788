"""Trains the default model's AutoencoderKL on the ad scenes (resumable, time-boxed).

    python training/train_vae.py --data training/data --run training/runs/vae --minutes 10

Loss: L1 + L1 on image gradients (keeps edges: no perceptual network is obtainable here)
+ 1e-6·KL, as SD's VAE uses a tiny KL weight; the decoder sees the posterior mean plus
fixed σ = 0.05 noise (see below), so the model is used as a near-deterministic autoencoder
and the UNet is trained on posterior means. Random 128² crops: the model is fully
convolutional, so crops train it for any output size at a quarter of the cost.
At the end the latent scaling factor (1 / std of latents, diffusers' `scaling_factor`)
is measured and the model saved in diffusers format under `<run>/vae`.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import loop  # noqa: E402
from common import VAE_CONFIG, Run, threads  # noqa: E402


def grad_l1(a, b):
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


def main():
    from diffusers import AutoencoderKL

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="training/data")
    ap.add_argument("--run", default="training/runs/vae")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    print("threads", threads())
    torch.manual_seed(0)
    images = np.load(os.path.join(args.data, "train.npz"))["images"]
    vae = AutoencoderKL(**VAE_CONFIG)
    with torch.no_grad():
        # Start with a small posterior std (log-variance bias −6, std ≈ 0.05): with the
        # default std of 1 the sampled latents are mostly noise and a small VAE spends
        # its first thousand steps only growing the means past it.
        vae.encoder.conv_out.bias[VAE_CONFIG["latent_channels"]:] = -6.0
    run = Run(args.run, vae, lr=args.lr, weight_decay=0.0, ema=False)
    opt, step, dev = run.opt, run.step, run.device
    rng = np.random.default_rng(step)

    def batch_loss(step):
        idx = rng.integers(0, len(images), args.batch)
        ys = rng.integers(0, 256 - args.crop + 1, args.batch)
        xs = rng.integers(0, 256 - args.crop + 1, args.batch)
        crops = np.stack([images[i, y:y + args.crop, x:x + args.crop] for i, y, x in zip(idx, ys, xs)])
        x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1).to(dev)
        post = vae.encode(x).latent_dist
        # Decode the posterior mean plus a small fixed noise (σ = 0.05) rather than a sample
        # with the learned σ: with the learned σ near 1 early on, the latents are mostly noise
        # and a small VAE learns only grey blur for thousands of steps (seen in two runs).
        # The noise keeps the decoder robust to the small errors diffusion leaves.
        recon = vae.decode(post.mean + 0.05 * torch.randn_like(post.mean)).sample
        l1 = (recon - x).abs().mean()
        g = grad_l1(recon, x)
        kl = post.kl().mean()
        return l1 + g + 1e-6 * kl, {"l1": l1.item(), "grad": g.item(), "kl": kl.item()}

    step = loop.train(run=args.run, minutes=args.minutes, opt=opt, params=vae.parameters(), batch_loss=batch_loss,
                      save=run.save, step=step, extras=["l1", "grad", "kl"])

    # Scaling factor from full-size held-out-free training images.
    vae.eval().cpu()
    with torch.no_grad():
        x = torch.from_numpy(images[:64]).permute(0, 3, 1, 2).float() / 127.5 - 1
        z = vae.encode(x).latent_dist.mean
        sf = float(1.0 / z.flatten().std())
        recon = vae.decode(vae.encode(x).latent_dist.mode()).sample
        psnr = float(10 * torch.log10(4 / ((recon.clamp(-1, 1) - x) ** 2).mean()))
    vae.register_to_config(scaling_factor=sf)
    vae.save_pretrained(os.path.join(args.run, "vae"))
    print(f"done: step {step}, scaling_factor {sf:.4f}, reconstruction PSNR {psnr:.2f} dB on 64 training images")


if __name__ == "__main__":
    main()
