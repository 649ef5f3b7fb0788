"""Decoders on their own (no UNet): held-out ads through the shared encoder, decoded by each VAE
given, scored by region. Shows what a decoder alone can keep of the product, and what it does to
the background next to it.

    python training/evaluate_decoder.py --vae training/runs/decoder/vae --vae training/runs/cond_decoder/vae
    python training/evaluate_decoder.py --data PHOTO_DATA --vae models/default --vae RUN/vae --grid /tmp/rt.png

Regions (mask ≥ 128 is the product): the product; its interior (8 px in from its edge); the
band 8 px outside it, where a seam shows; the background beyond; the whole ad. A VAE with the
product-condition branch (condition_decoder.py) is also given the product's pixels and mask,
as the runtime gives them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import condition_decoder  # noqa: E402
from common import threads  # noqa: E402
from evaluate_photo import sharpness  # noqa: E402
from pack import load_condition, load_vae  # noqa: E402


def regions(mask, band=8):
    m = torch.from_numpy((mask >= 128).astype(np.float32))[None, None]
    grow = torch.nn.functional.max_pool2d(m, 2 * band + 1, 1, band)[0, 0].numpy() > 0
    shrink = -torch.nn.functional.max_pool2d(-m, 2 * band + 1, 1, band)[0, 0].numpy() > 0
    prod = mask >= 128
    return {"product": prod, "product_interior": shrink, "band_outside": grow & ~prod, "background_beyond": ~grow,
            "whole": np.ones_like(prod)}


def psnr(a, b, where):
    if not where.any():
        return None
    mse = np.mean((a[where].astype(np.float64) - b[where].astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


@torch.no_grad()
def round_trip(vae, condition, images, masks, batch=16):
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
        m = torch.from_numpy(masks[i:i + batch]).float().div(255)[:, None]
        z = vae.encoder(x) * vae.config.scaling_factor
        y = condition_decoder.decode(vae, condition, z, x, m)
        out.append(((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="training/data")
    ap.add_argument("--vae", action="append", required=True, help="a VAE folder or pack (repeat to compare)")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--grid", default=None, help="write the first 6 ads and each VAE's round trip as a PNG here")
    args = ap.parse_args()
    threads()
    d = np.load(os.path.join(args.data, "heldout.npz"))
    n = min(args.n, len(d["images"]))
    images, masks = d["images"][:n], d["masks"][:n]
    parts = [regions(mk) for mk in masks]
    results = {"n": n, "size": int(images.shape[1])}
    rows = [np.concatenate(list(images[:6]), 1)]
    for folder in args.vae:
        vae = load_vae(folder)
        condition = load_condition(vae, folder)
        decoded = round_trip(vae, condition, images, masks)
        scores = {}
        for name in parts[0]:
            vals = [p for p in (psnr(decoded[k], images[k], parts[k][name]) for k in range(n)) if p is not None]
            scores[name + "_psnr_db"] = float(np.mean(vals))
        # Background detail kept, as evaluate_photo.py scores generated ads: Laplacian energy ÷ the real ads'.
        scores["background_sharpness_ratio"] = float(np.mean([sharpness(decoded[k], masks[k]) for k in range(n)])
                                                     / np.mean([sharpness(images[k], masks[k]) for k in range(n)]))
        scores["conditioned"] = condition is not None
        results[folder] = scores
        rows.append(np.concatenate(list(decoded[:6]), 1))
        print(folder, json.dumps(scores), flush=True)
    if args.grid:
        from PIL import Image

        Image.fromarray(np.concatenate(rows, 0)).save(args.grid)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
