"""Scores the automatic cut-out (src/input/mask.rs) on held-out studio photos whose exact alpha is known.

    python training/evaluate_cutout.py --adcanvas ~/.cache/adcanvas-target/release/adcanvas --n 48 --out docs/eval/cutout

Each photo is made from a held-out product cut-out of `tuxpaint-stamps-default` (every 10th stamp,
the rule make_dataset.py holds out; `--stamps DIR` reads them from an extracted package): the
product stands on a studio sweep (white, light grey, grey or warm white, with a gentle falloff and
a soft elliptical shadow under it), is composited with its exact alpha, gets sensor noise, and is
saved as a JPEG (quality 80–92), as a phone would. `adcanvas mask` cuts it out; the scores:

- IoU of the soft mask with the exact alpha, and boundary F at 2 px (binarised at ½);
- holes: of the backdrop pixels the product encloses (a handle's inside, a ring; ≥ 2 px from the
  product), the share taken as product — on the photos that have such holes;
- halo: the cut-out (colours and alpha as `adcanvas mask --cutout` writes it, as the pipeline
  pastes it) composited on a dark scene, against the exact cut-out on the same scene: mean CIE76
  ΔE in the 1–3 px ring outside the product (a light fringe of the old backdrop shows here);
- refusals: photos the command refused, with its message.

Writes `OUT.json` (per photo and summary), `OUT_grid.jpg` (photo, mask, cut-out on dark, for
the first eight) and `OUT_worst_grid.jpg` (the four lowest IoU). Needs numpy, Pillow and scipy (the training venv).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image
from scipy import ndimage

sys.path.insert(0, os.path.dirname(__file__))
from scenes import STAMPS_DIR, load_stamps  # noqa: E402

SIZE = 512
BACKDROPS = {"white": (248, 248, 246), "light grey": (232, 232, 230), "grey": (205, 206, 208), "warm white": (245, 240, 232)}
DARK = np.array([20, 24, 30], np.float32)


def studio_photo(art, rng):
    """(photo uint8 H×W×3, exact alpha H×W, exact foreground H×W×3, backdrop name)."""
    h = int(SIZE * rng.uniform(0.45, 0.7))
    ah, aw = art.rgba.shape[:2]
    w = int(round(aw * h / ah))
    if w > SIZE * 0.8:
        w = int(SIZE * 0.8)
        h = int(round(ah * w / aw))
    # Resize premultiplied, so the edge colours are the product's own.
    pre = art.rgba.copy()
    pre[..., :3] *= pre[..., 3:4]
    pre = np.stack([np.asarray(Image.fromarray(pre[..., c]).resize((w, h), Image.LANCZOS)) for c in range(4)], -1)
    a_small = np.clip(pre[..., 3], 0, 1)
    f_small = np.where(a_small[..., None] > 1e-4, pre[..., :3] / np.maximum(a_small[..., None], 1e-4), 0).clip(0, 1)
    x0 = int(SIZE / 2 - w / 2 + rng.uniform(-0.1, 0.1) * SIZE)
    x0 = min(max(x0, 4), SIZE - w - 4)
    base = int(SIZE * rng.uniform(0.72, 0.86))
    y0 = max(base - h, 4)
    alpha = np.zeros((SIZE, SIZE), np.float32)
    fg = np.zeros((SIZE, SIZE, 3), np.float32)
    alpha[y0:y0 + h, x0:x0 + w] = a_small[: SIZE - y0]
    fg[y0:y0 + h, x0:x0 + w] = f_small[: SIZE - y0]

    name = list(BACKDROPS)[rng.integers(len(BACKDROPS))]
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    bg = np.array(BACKDROPS[name], np.float32)[None, None] / 255 * (1 - 0.03 * yy / SIZE)[..., None]
    cx, cy = x0 + w / 2, y0 + h
    d = ((xx - cx) / (0.55 * w)) ** 2 + ((yy - cy) / (0.045 * SIZE)) ** 2
    bg = bg * (1 - rng.uniform(0.15, 0.35) * np.exp(-d * 1.6))[..., None]
    photo = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    photo = photo * 255 + rng.normal(0, 1.5, photo.shape)
    return np.clip(photo, 0, 255).astype(np.uint8), alpha, fg * 255, name


def enclosed_holes(alpha):
    """Backdrop pixels the product encloses, 2 px clear of it."""
    solid = alpha > 0.5
    holes = ndimage.binary_fill_holes(solid) & (alpha == 0)
    holes = ndimage.binary_erosion(holes, iterations=2)
    labels, n = ndimage.label(holes)
    if n == 0:
        return holes
    sizes = ndimage.sum(holes, labels, range(1, n + 1))
    keep = np.isin(labels, [i + 1 for i, s in enumerate(sizes) if s >= 0.0005 * alpha.size])
    return keep


def boundary_f(pred, truth, tol=2):
    def edge(m):
        return m & ~ndimage.binary_erosion(m)

    pe, te = edge(pred), edge(truth)
    if pe.sum() == 0 or te.sum() == 0:
        return 0.0
    dt_t = ndimage.distance_transform_edt(~te)
    dt_p = ndimage.distance_transform_edt(~pe)
    precision = (dt_t[pe] <= tol).mean()
    recall = (dt_p[te] <= tol).mean()
    return float(2 * precision * recall / max(precision + recall, 1e-9))


def lab(rgb):
    c = rgb / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--adcanvas", required=True, help="the adcanvas binary")
    ap.add_argument("--stamps", default=STAMPS_DIR)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--seed", type=int, default=27)
    ap.add_argument("--every-10th-from", type=int, default=0, dest="offset",
                    help="score stamps i with i %% 10 == this: 0 is the held-out set; others (training stamps, "
                         "which the cut-out's rules never learned from) make a second set to tune a rule on")
    ap.add_argument("--out", default="docs/eval/cutout")
    args = ap.parse_args()

    stamps = load_stamps(args.stamps)
    held = [p for i, p in enumerate(stamps) if i % 10 == args.offset][: args.n]
    rng = np.random.default_rng(args.seed)
    rows, grid = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k, art in enumerate(held):
            photo, alpha, fg, backdrop = studio_photo(art, rng)
            path = os.path.join(tmp, f"{k}.jpg")
            Image.fromarray(photo).save(path, quality=int(rng.integers(80, 93)))
            mask_path, cut_path = os.path.join(tmp, f"{k}_mask.png"), os.path.join(tmp, f"{k}_cut.png")
            run = subprocess.run([args.adcanvas, "mask", "--product", path, "--out", mask_path, "--cutout", cut_path],
                                 capture_output=True, text=True, timeout=120)
            row = {"product": art.source, "backdrop": backdrop}
            if run.returncode != 0:
                row["refused"] = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else f"exit {run.returncode}"
                rows.append(row)
                print(k, art.source, "REFUSED", row["refused"])
                continue
            pred = np.asarray(Image.open(mask_path).convert("L"), np.float32) / 255
            cut = np.asarray(Image.open(cut_path).convert("RGBA"), np.float32)
            row["iou"] = float(np.minimum(pred, alpha).sum() / np.maximum(pred, alpha).sum())
            row["boundary_f2"] = boundary_f(pred >= 0.5, alpha >= 0.5)
            holes = enclosed_holes(alpha)
            if holes.sum() > 0:
                row["hole_px"] = int(holes.sum())
                row["hole_as_product"] = float((pred[holes] >= 0.5).mean())
            ours = cut[..., 3:4] / 255 * cut[..., :3] + (1 - cut[..., 3:4] / 255) * DARK
            exact = alpha[..., None] * fg + (1 - alpha[..., None]) * DARK
            ring = ndimage.binary_dilation(alpha > 0, iterations=3) & (alpha == 0)
            de = np.sqrt(((lab(ours) - lab(exact)) ** 2).sum(-1))
            row["halo_de"] = float(de[ring].mean())
            rows.append(row)
            print(k, art.source, {key: round(v, 4) for key, v in row.items() if isinstance(v, float)})
            grid.append((row["iou"], [photo, np.repeat((pred * 255).astype(np.uint8)[..., None], 3, -1),
                                      ours.clip(0, 255).astype(np.uint8)]))

    scored = [r for r in rows if "iou" in r]
    with_holes = [r for r in scored if "hole_as_product" in r]
    summary = {
        "photos": len(rows),
        "refused": len(rows) - len(scored),
        "iou_mean": float(np.mean([r["iou"] for r in scored])) if scored else None,
        "iou_min": float(np.min([r["iou"] for r in scored])) if scored else None,
        "boundary_f2_mean": float(np.mean([r["boundary_f2"] for r in scored])) if scored else None,
        "photos_with_holes": len(with_holes),
        "hole_as_product_mean": float(np.mean([r["hole_as_product"] for r in with_holes])) if with_holes else None,
        "halo_de_mean": float(np.mean([r["halo_de"] for r in scored])) if scored else None,
        "halo_de_max": float(np.max([r["halo_de"] for r in scored])) if scored else None,
    }
    print(json.dumps(summary, indent=1))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"summary": summary, "photos": rows}, f, indent=1)
    # The first eight photos, and the four with the lowest IoU.
    for name, rows_ in [("_grid.jpg", [g for _, g in grid[:8]]), ("_worst_grid.jpg", [g for _, g in sorted(grid, key=lambda t: t[0])[:4]])]:
        if not rows_:
            continue
        tile = 192
        sheet = Image.new("RGB", (3 * tile, len(rows_) * tile), "white")
        for r, imgs in enumerate(rows_):
            for c, im in enumerate(imgs):
                sheet.paste(Image.fromarray(im).resize((tile, tile), Image.LANCZOS), (c * tile, r * tile))
        sheet.save(args.out + name, quality=85)


if __name__ == "__main__":
    main()
