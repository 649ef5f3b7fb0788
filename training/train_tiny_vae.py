"""Trains the default model's AutoencoderTiny (TAESD architecture), resumable and time-boxed.

    python training/train_tiny_vae.py --data training/data --run training/runs/vae --minutes 12

It starts from an exact construction instead of random weights: the encoder computes
k·(2×2-average-pooled RGB − ½) three times over (an 8× average) into latent channels 0–2,
the decoder inverts that with nearest upsampling, and every residual block starts as the
identity (last conv zero). That is an 8×-downsampling autoencoder from step 0 (blocky,
L1 ≈ 0.05); training then adds detail through the residual branches and the five free
latent channels. Loss: L1 + L1 on image gradients, on 128² crops, the decoder seeing the
latents plus σ = 0.05 noise so it tolerates what diffusion leaves.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import loop  # noqa: E402
from common import TINY_VAE_CONFIG, Run, threads  # noqa: E402
from train_vae import grad_l1  # noqa: E402

K = 2.0  # latent = K · (colour − ½): colours in [0, 1] become latents in [−1, 1]


@torch.no_grad()
def construct(vae):
    """Sets the weights so that decode(encode(x)) = nearest-upsampled 8×8 average of x."""
    enc, dec = list(vae.encoder.layers), list(vae.decoder.layers)
    convs = [m for m in enc if isinstance(m, torch.nn.Conv2d)]
    blocks = [m for m in enc + dec if m.__class__.__name__ == "AutoencoderTinyBlock"]
    for b in blocks:
        last = b.conv[-1]
        last.weight.zero_()
        last.bias.zero_()

    def identity(conv, n=3, scale=1.0, bias=None):
        conv.weight.zero_()
        for c in range(n):
            conv.weight[c, c, 1, 1] = scale
        if conv.bias is not None:
            conv.bias.zero_()
            if bias is not None:
                conv.bias[:n] = bias

    # Encoder: conv_in copies RGB (in [0, 1]) into channels 0–2 (the rest start at 0 and
    # learn); each stride-2 conv averages 2×2 pixels per channel; conv_out scales and centres.
    identity(convs[0], n=3)
    for down in convs[1:-1]:
        down.weight.zero_()
        for c in range(down.weight.shape[0]):
            down.weight[c, c, 1:, 1:] = 0.25
    out = convs[-1]
    free = out.weight[3:].clone()  # free latent channels keep their random init
    identity(out, n=3, scale=K, bias=-K / 2)
    out.weight[3:] = free * 0.1
    # Decoder: first conv inverts the scaling (the free channels enter with zero weight, so
    # their gradients flow to the encoder side); up-convs copy; the final conv maps to RGB.
    dconvs = [m for m in dec if isinstance(m, torch.nn.Conv2d) and m not in [c for b in blocks for c in b.conv]]
    identity(dconvs[0], n=3, scale=1 / K, bias=0.5)
    for up in dconvs[1:-1]:
        identity(up, n=up.weight.shape[0])
    identity(dconvs[-1], n=3)


def main():
    from diffusers import AutoencoderTiny

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="training/data")
    ap.add_argument("--run", default="training/runs/vae")
    ap.add_argument("--minutes", type=float, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-4)
    args = ap.parse_args()
    print("threads", threads())
    torch.manual_seed(0)
    images = np.load(os.path.join(args.data, "train.npz"))["images"]
    vae = AutoencoderTiny(**TINY_VAE_CONFIG)
    construct(vae)
    run = Run(args.run, vae, lr=args.lr, weight_decay=0.0, ema=False)
    opt, step, dev = run.opt, run.step, run.device
    rng = np.random.default_rng(step)

    def batch_loss(step):
        idx = rng.integers(0, len(images), args.batch)
        ys = rng.integers(0, 256 - args.crop + 1, args.batch)
        xs = rng.integers(0, 256 - args.crop + 1, args.batch)
        crops = np.stack([images[i, y:y + args.crop, x:x + args.crop] for i, y, x in zip(idx, ys, xs)])
        x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1).to(dev)
        z = vae.encoder(x)
        recon = vae.decoder(z + 0.05 * torch.randn_like(z))
        l1 = (recon - x).abs().mean()
        g = grad_l1(recon, x)
        return l1 + g, {"l1": l1.item(), "grad": g.item()}

    step = loop.train(run=args.run, minutes=args.minutes, opt=opt, params=vae.parameters(), batch_loss=batch_loss,
                      save=run.save, step=step, extras=["l1", "grad"])

    vae.eval().cpu()
    with torch.no_grad():
        x = torch.from_numpy(images[:64]).permute(0, 3, 1, 2).float() / 127.5 - 1
        z = vae.encoder(x)
        sf = float(1.0 / z.flatten().std())
        recon = vae.decoder(z).clamp(-1, 1)
        psnr = float(10 * torch.log10(4 / ((recon - x) ** 2).mean()))
        l1 = float((recon - x).abs().mean())
    vae.register_to_config(scaling_factor=sf)
    vae.save_pretrained(os.path.join(args.run, "vae"))
    print(f"done: step {step}, scaling_factor {sf:.4f}, reconstruction L1 {l1:.4f}, PSNR {psnr:.2f} dB (64 training images)")


if __name__ == "__main__":
    main()
