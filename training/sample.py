"""Samples the trained model in PyTorch the way the runtime does (DDIM, classifier-free
guidance with the empty prompt as unconditional context, inpainting inputs from the
product mask), on held-out products and scenes; writes an image grid.

    python training/sample.py --run training/runs/unet --vae training/runs/vae/vae \
        --out docs/training/samples.jpg --n 8 --steps 20
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import SCHEDULER_CONFIG, encode_latents, threads  # noqa: E402
from pack import load_vae  # noqa: E402
from train_unet import inpaint_inputs  # noqa: E402


@torch.no_grad()
def generate(unet, vae, images_u8, masks_u8, contexts, empty_ctx, steps=20, guidance=4.0, seed=0):
    """Backgrounds (before paste-back) for a batch; contexts: list of [T, 384] tensors."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**SCHEDULER_CONFIG)
    sched.set_timesteps(steps)
    sf = vae.config.scaling_factor
    _, xm, inp = inpaint_inputs(images_u8, masks_u8)
    masked = encode_latents(vae, xm)
    mask = inp[:, :, ::8, ::8]
    b = len(images_u8)
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(b, vae.config.latent_channels, images_u8.shape[1] // 8, images_u8.shape[2] // 8, generator=g) * sched.init_noise_sigma
    for t in sched.timesteps:
        x = torch.cat([lat, mask, masked], 1)
        eps = []
        for i in range(b):
            xi = x[i:i + 1]
            e_u = unet(xi, t, empty_ctx[None]).sample
            e_c = unet(xi, t, contexts[i][None]).sample
            eps.append(e_u + guidance * (e_c - e_u))
        lat = sched.step(torch.cat(eps), t, lat).prev_sample
    out = vae.decode(lat / sf).sample
    return ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def composite(bg, image, mask):
    m = mask[..., None].astype(np.float32) / 255
    return (bg * (1 - m) + image * m).round().astype(np.uint8)


def load(run, vae_dir, ema=True):
    from diffusers import UNet2DConditionModel

    from common import UNET_CONFIG

    unet = UNet2DConditionModel(**UNET_CONFIG)
    state = torch.load(os.path.join(run, "state.pt"), map_location="cpu", weights_only=False)
    unet.load_state_dict(state["ema" if ema else "model"])
    return unet.eval(), load_vae(vae_dir), state["step"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="training/data")
    ap.add_argument("--run", default="training/runs/unet")
    ap.add_argument("--vae", default="training/runs/vae/vae")
    ap.add_argument("--out", default="docs/training/samples.jpg")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=4.0)
    args = ap.parse_args()
    threads()
    from PIL import Image, ImageDraw

    unet, vae, step = load(args.run, args.vae)
    d = np.load(os.path.join(args.data, "heldout.npz"))
    e = np.load(os.path.join(args.data, "empty_prompt.npz"))
    idx = np.arange(args.n) * (len(d["images"]) // args.n)
    ctx = [torch.from_numpy(d["context"][i, : d["context_len"][i]]).float() for i in idx]
    empty = torch.from_numpy(e["context"][0, : e["context_len"][0]]).float()
    bg = generate(unet, vae, d["images"][idx], d["masks"][idx], ctx, empty, args.steps, args.guidance)
    rows = []
    for k, i in enumerate(idx):
        rows.append(np.concatenate([d["images"][i], composite(bg[k], d["images"][i], d["masks"][i])], 1))
    grid = np.concatenate([np.concatenate(rows[j:j + 2], 1) for j in range(0, len(rows), 2)], 0)
    img = Image.fromarray(grid)
    draw = ImageDraw.Draw(img)
    for k, i in enumerate(idx):
        x, y = (k % 2) * 512, (k // 2) * 256
        draw.text((x + 4, y + 242), str(d["captions"][i])[:70], fill=(255, 255, 255))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    img.save(args.out)
    print(f"step {step}: wrote {args.out} (left: held-out real scene, right: generated with its caption)")


if __name__ == "__main__":
    main()
