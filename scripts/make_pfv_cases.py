#!/usr/bin/env python3
"""Writes tests/fixtures/pfv_cases.json: PFV inputs and the outputs of an independent NumPy
implementation of the rules in docs/METHOD.md §5. tests/pfv_cases.rs checks the native build
against it, and tests/e2e (in Chromium) checks the wasm build against the same file, so
native == browser == this reference.

    python3 scripts/make_pfv_cases.py
"""
import json
import math
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pfv_cases.json"


def pfv(mask, w, h, patch, threshold):
    zero = mask.reshape(h, w) < 0.5
    cols, rows = math.ceil(w / patch), math.ceil(h / patch)
    thr = float(np.float32(threshold))  # the runtime compares in f64 against the f32 threshold
    vis = np.zeros((rows, cols), bool)
    for r in range(rows):
        for c in range(cols):
            block = zero[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch]
            vis[r, c] = block.sum() / block.size <= thr
    return vis


def token_keep(vis, w, h, patch, tc, tr):
    rows, cols = vis.shape

    def span(t, n, extent, max_idx):
        den = n * patch
        first = t * extent // den
        end = -(-((t + 1) * extent) // den)
        lo = min(first, max_idx)
        return lo, min(max(end - 1, lo), max_idx)

    keep = []
    for r in range(tr):
        r0, r1 = span(r, tr, h, rows - 1)
        for c in range(tc):
            c0, c1 = span(c, tc, w, cols - 1)
            keep.append(bool(vis[r0:r1 + 1, c0:c1 + 1].all()))
    return keep


def case(name, mask, w, h, patch=16, threshold=0.0, tokens=(0, 0)):
    mask = np.asarray(mask, np.float64).reshape(-1)
    vis = pfv(mask, w, h, patch, threshold)
    return {
        "name": name, "width": w, "height": h, "patch": patch, "threshold": threshold,
        "token_cols": tokens[0], "token_rows": tokens[1],
        "mask": [round(float(v), 6) for v in mask],
        "cols": vis.shape[1], "rows": vis.shape[0],
        "visible": [int(v) for v in vis.reshape(-1)],
        "token_keep": [int(v) for v in token_keep(vis, w, h, patch, *tokens)],
    }


def main():
    rng = np.random.default_rng(2405)
    ones = lambda w, h: np.ones(h * w)  # noqa: E731
    single = ones(32, 32)
    single[3 * 32 + 20] = 0
    line = ones(48, 48).reshape(48, 48)
    line[:, 17] = 0
    soft = np.round(rng.random(37 * 23) * 255) / 255
    blob = ones(64, 64).reshape(64, 64)
    yy, xx = np.mgrid[0:64, 0:64]
    blob[(yy - 30) ** 2 + (xx - 36) ** 2 < 15 ** 2] = 0
    cases = [
        case("single zero pixel hides its patch", single, 32, 32, tokens=(2, 2)),
        case("one-pixel-wide line", line, 48, 48, tokens=(3, 3)),
        case("size not divisible by the patch, soft values, θ=0.5, 4×3 tokens", soft, 37, 23, threshold=0.5, tokens=(4, 3)),
        case("empty foreground: all visible", ones(20, 20), 20, 20, tokens=(2, 2)),
        case("all foreground: all hidden", np.zeros(400), 20, 20, tokens=(1, 1)),
        case("all foreground at θ=1: nothing hidden", np.zeros(400), 20, 20, threshold=1.0, tokens=(1, 1)),
        case("disc, θ=0.3, a 9×9 token grid that does not align with the patches", blob.reshape(-1), 64, 64, threshold=0.3, tokens=(9, 9)),
        case("disc, patch 8, θ=0", blob.reshape(-1), 64, 64, patch=8, tokens=(4, 4)),
    ]
    OUT.write_text(json.dumps({"generated_by": "scripts/make_pfv_cases.py", "cases": cases}) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
