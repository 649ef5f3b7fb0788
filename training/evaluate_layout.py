"""Where a layout's object expansion comes from, and whether its contact shadows touch the product.

Reads `evaluate_depth.py --save-backgrounds` outputs (one per layout, e.g. small products centred
and standing on the floor line) and splits each ad's object expansion (evaluate_reference.py's
measure: band pixels within 16 px of the product whose colour is more the product's than the far
background's, per product pixel) into the band *under* the product's base (rows from its bottom
edge down: where a contact shadow and the floor it stands on are) and the band *around* it (the
rest). It also reports how dark the strip just under the base is against the far background
(luminance ratio; < 1: a shadow touches the product).

    python training/evaluate_layout.py /tmp/evals/small_centre_backgrounds.npz /tmp/evals/small_floor_backgrounds.npz
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from evaluate_reference import expanded_pixels  # noqa: E402

STRIP = 6  # rows under the product's base where a contact shadow would be


def luminance(rgb):
    return rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def split(bg, image, mask):
    found = expanded_pixels(bg, image, mask)
    if found is None:
        return None
    grows, prod, far = found
    ys, xs = np.nonzero(prod)
    bottom = ys.max()
    under = np.arange(mask.shape[0])[:, None] >= bottom
    strip = np.zeros(mask.shape, bool)
    strip[bottom + 1:bottom + 1 + STRIP, xs.min():xs.max() + 1] = True
    strip &= ~prod
    return {
        "expansion": grows.sum() / prod.sum(),
        "under_base": (grows & under).sum() / prod.sum(),
        "around": (grows & ~under).sum() / prod.sum(),
        "shadow_under_base": float(luminance(bg[strip]).mean() / np.median(luminance(bg[far]))) if strip.any() else np.nan,
    }


def main():
    table = {}
    for path in sys.argv[1:]:
        d = np.load(path)
        images, masks = d["images"], d["masks"]
        for run in [k for k in d.files if k not in ("images", "masks")]:
            rows = [r for r in (split(d[run][k], images[k], masks[k]) for k in range(len(images))) if r]
            table[f"{os.path.basename(path).removesuffix('_backgrounds.npz')}:{run}"] = {
                k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]} | {"n": len(rows)}
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
