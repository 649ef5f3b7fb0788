"""Issue 26's evaluation: a pack's ads against real held-out photographic ads, scored by the frozen
feature network (photo_features.py).

    python training/make_photo_dataset.py --out DATA --train 16 --heldout 128 --size 512
    python training/evaluate_photo.py --data DATA --pack models/default --n 64 --mode 2pass --name photo_2pass

Each held-out ad (a held-out product on a held-out photograph or surface: photo_sources.split)
gives its caption, product, mask and depth; the pack generates the background as the runtime does
by default (caption + depth, product anchoring, guidance 7.5, 20 DDIM steps; `--mode 2pass` is the
runtime's 512² path: 256² then refined at 512² from strength 0.5, `native` one pass at the data's
size) and the product is pasted back. Measures, each beside the real held-out ads' own value:

- scene accuracy: the frozen net's `kind` head on the ad against the caption's scene kind, by
  scene family (photo_features.FAMILIES; the fine kind's accuracy is reported too), and the
  `surface` head against the caption's surface;
- FD: Fréchet distance of the frozen net's features, generated vs real held-out ads, beside the
  real-vs-real distance of the held-out set's two halves (even and odd indices);
- background sharpness: mean Laplacian energy of the luminance outside the product (dilated by
  3 % of the side), generated ÷ real;
- object expansion: evaluate_reference.object_expansion (product colours growing into a 16-px
  band around the product before paste-back, per product pixel; Eshratifar et al. 2024's measure,
  with a colour histogram standing in for their segmenter);
- contact shadow: the luminance drop 1 − L(A)/L(B), band A just below the product's base (3 % of
  the side, the base's columns, product pixels excluded), band B the same 10 % of the side lower;
- composite exactness: share of product pixels (alpha 255) unchanged after paste-back.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
import pack  # noqa: E402
import photo_features  # noqa: E402
from common import threads  # noqa: E402
from evaluate import frechet  # noqa: E402
from evaluate_depth import decode, generate, two_pass  # noqa: E402
from evaluate_reference import object_expansion  # noqa: E402
from sample import composite  # noqa: E402


def luminance(images_u8):
    x = images_u8.astype(np.float32) / 255
    return x[..., 0] * 0.2126 + x[..., 1] * 0.7152 + x[..., 2] * 0.0722


def dilate(mask_bool, r):
    t = torch.from_numpy(mask_bool.astype(np.float32))[None, None]
    return torch.nn.functional.max_pool2d(t, 2 * r + 1, 1, r)[0, 0].numpy() > 0


def sharpness(ad, mask):
    """Mean squared 4-neighbour Laplacian of the luminance, over the background (the product and a
    margin of 3 % of the side excluded, so the pasted product's edge does not count)."""
    y = luminance(ad)
    lap = np.zeros_like(y)
    lap[1:-1, 1:-1] = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4 * y[1:-1, 1:-1]
    keep = ~dilate(mask > 2, max(1, round(0.03 * mask.shape[0])))
    keep[[0, -1], :] = keep[:, [0, -1]] = False
    return float((lap[keep] ** 2).mean())


def contact_shadow(ad, mask):
    """1 − L(A)/L(B): A the band just below the product's base, B the band 10 % of the side lower.
    None when the product has no base in the picture or band B leaves it."""
    solid = mask > 127
    rows = np.nonzero(solid.any(1))[0]
    if len(rows) == 0:
        return None
    size = mask.shape[0]
    top, base = rows[0], rows[-1]
    foot = solid[max(top, base - max(1, round(0.05 * (base - top + 1)))):base + 1].any(0)
    cols = np.nonzero(foot)[0]
    band, shift = max(2, round(0.03 * size)), round(0.1 * size)
    if base + 1 + band + shift > size:
        return None
    y = luminance(ad)
    free = mask <= 2
    a_rows = slice(base + 1, base + 1 + band)
    b_rows = slice(base + 1 + shift, base + 1 + band + shift)
    a = y[a_rows][:, cols][free[a_rows][:, cols]]
    b = y[b_rows][:, cols][free[b_rows][:, cols]]
    if len(a) == 0 or len(b) == 0 or b.mean() <= 1e-3:
        return None
    return float(1 - a.mean() / b.mean())


def mean_of(values):
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def measure(net, meta, ads, backgrounds, images, masks, kinds, surfaces):
    """Every per-set measure of composited `ads` (uint8 NHWC); `backgrounds` before paste-back."""
    k, s, feats = photo_features.predict(net, meta, ads)
    solid = masks == 255
    return {
        "scene_accuracy": float(np.mean([photo_features.family(a) == photo_features.family(b)
                                         for a, b in zip(k, kinds)])),
        "kind_accuracy": float(np.mean([a == b for a, b in zip(k, kinds)])),
        "surface_accuracy": float(np.mean([a == b for a, b in zip(s, surfaces)])),
        "sharpness": mean_of(sharpness(ads[i], masks[i]) for i in range(len(ads))),
        "object_expansion": mean_of(object_expansion(backgrounds[i], images[i], masks[i]) for i in range(len(ads))),
        "contact_shadow": mean_of(contact_shadow(ads[i], masks[i]) for i in range(len(ads))),
        "composite_exact_fraction": float((ads[solid] == images[solid]).all(axis=-1).mean()),
    }, feats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="make_photo_dataset.py output (its heldout.npz)")
    ap.add_argument("--pack", default="models/default")
    ap.add_argument("--out", default="docs/eval")
    ap.add_argument("--name", default="photo")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--mode", choices=["native", "2pass"], default="2pass")
    ap.add_argument("--strength", type=float, default=0.5, help="2pass: the refining strength (the runtime's 0.5)")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    threads()
    os.makedirs(args.out, exist_ok=True)
    net, meta = photo_features.load()
    d = np.load(os.path.join(args.data, "heldout.npz"))
    with open(os.path.join(args.data, "photo_scenes.json")) as f:
        surfaces_all = photo_features.surface_labels(json.load(f)["heldout"])
    real_all = d["images"]
    n = min(args.n, len(real_all))
    images, masks, depths = real_all[:n], d["masks"][:n], d["depths"][:n]
    kinds, surfaces = [str(v) for v in d["labels"][:n]], surfaces_all[:n]
    e = np.load(os.path.join(args.data, "empty_prompt.npz"))
    empty = torch.from_numpy(e["context"][0, : e["context_len"][0]]).float()
    ctx = [torch.from_numpy(d["context"][i, : d["context_len"][i]]).float() for i in range(n)]

    unet, enc = pack.mepa_unet(args.pack).eval(), pack.reference_encoder(args.pack).eval()
    controlnet, vae = pack.controlnet(args.pack).eval(), pack.vae(args.pack)
    condition = pack.vae_condition(args.pack, vae)
    t0 = time.time()
    bgs = []
    for i in range(0, n, args.batch):
        j = min(i + args.batch, n)
        batch = (images[i:j], masks[i:j], depths[i:j], ctx[i:j], empty, None, None, False, True)
        if args.mode == "2pass":
            lat = two_pass(unet, enc, controlnet, (vae, condition), *batch, args.steps, args.guidance, 1234 + i,
                           args.strength, sharp=True)
        else:
            lat = generate(unet, enc, controlnet, vae, *batch, args.steps, args.guidance, seed=1234 + i, anchor=True)
        bgs.append(decode(vae, condition, lat, images[i:j], masks[i:j]))
        print(f"{j}/{n} ({(time.time() - t0) / 60:.1f} min)", flush=True)
    bg = np.concatenate(bgs)
    ads = np.stack([composite(bg[k], images[k], masks[k]) for k in range(n)])

    real, real_feats = measure(net, meta, images, images, images, masks, kinds, surfaces)
    gen, gen_feats = measure(net, meta, ads, bg, images, masks, kinds, surfaces)
    # The real set's own spread: all real held-out ads in the file, two halves.
    _, _, all_feats = photo_features.predict(net, meta, real_all)
    results = {
        "pack": args.pack, "mode": args.mode, "n": n, "size": int(images.shape[1]), "steps": args.steps,
        "guidance": args.guidance, "strength": args.strength if args.mode == "2pass" else None,
        "feature_net": {k: meta[k] for k in ("trained", "train_ads") if k in meta},
        "minutes": round((time.time() - t0) / 60, 1),
        "real": real, "generated": gen,
        "fd": frechet(gen_feats, real_feats),
        "fd_real_halves": frechet(all_feats[0::2], all_feats[1::2]),
        "real_ads_in_file": int(len(real_all)),
    }
    r, g = real, gen
    results["goals"] = {
        "scene_accuracy >= 0.70": g["scene_accuracy"] >= 0.70,
        "fd <= 2 x real halves": results["fd"] <= 2 * results["fd_real_halves"],
        "sharpness ratio >= 0.7": (g["sharpness"] / r["sharpness"]) >= 0.7,
        "object expansion <= real + 0.01": g["object_expansion"] <= r["object_expansion"] + 0.01,
        "contact shadow within 25 % of real": (r["contact_shadow"] is not None and g["contact_shadow"] is not None
                                               and abs(g["contact_shadow"] - r["contact_shadow"])
                                               <= 0.25 * abs(r["contact_shadow"])),
        "composite exact": g["composite_exact_fraction"] == 1.0,
    }
    results["sharpness_ratio"] = g["sharpness"] / r["sharpness"]
    # Grid: 16 real held-out ads above the same 16 generated (256 px a tile, JPEG).
    k = min(16, n)
    rows = []
    for src in (images[:k], ads[:k]):
        tiles = [np.asarray(Image.fromarray(t).resize((256, 256), Image.LANCZOS)) for t in src]
        tiles += [np.zeros_like(tiles[0])] * ((-len(tiles)) % 8)
        rows += [np.concatenate(tiles[c:c + 8], 1) for c in range(0, len(tiles), 8)]
    Image.fromarray(np.concatenate(rows, 0)).save(os.path.join(args.out, args.name + "_grid.jpg"), quality=88)
    with open(os.path.join(args.out, args.name + "_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
