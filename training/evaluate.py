"""Held-out evaluation of the default model; writes docs/EVAL.md's tables as JSON and a grid.

    python training/evaluate.py --n 96 --out docs/eval

Metrics (all on the held-out split: products and scenes never trained on):
- Scene accuracy (prompt following): a small CNN scene classifier, trained here on the
  training split's ads (13 scene labels), classifies each generated ad; accuracy against
  the scene named by its caption. Its accuracy on the real held-out ads is the ceiling.
- Background distance (FD-SC): Fréchet distance between the classifier's 128-d penultimate
  features of generated ads and of the real held-out ads (Inception weights are not
  obtainable here, so this is *not* FID and numbers do not compare with published FIDs).
- Foreground fidelity before paste-back: PSNR inside the product mask (alpha = 1) between
  the decoder's output and the product pixels, i.e. how well the model keeps the product
  without the composite step.
- Composite exactness: share of product pixels identical after paste-back (must be 100 %).
Each metric is reported with guidance 1 (prompt off) and the default guidance, same seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import threads  # noqa: E402
from sample import composite, generate, load  # noqa: E402

LABELS = ["studio", "gradient", "wood", "marble", "concrete", "fabric", "podium", "leaves", "beach",
          "christmas", "autumn", "spring", "summer"]


class SceneNet(nn.Module):
    def __init__(self):
        super().__init__()
        chans = [3, 32, 64, 96, 128]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(chans, chans[1:]))
        self.head = nn.Linear(128, len(LABELS))

    def features(self, x):
        for c in self.convs:
            x = F.max_pool2d(F.relu(c(x)), 2)
        return x.mean((2, 3))

    def forward(self, x):
        return self.head(self.features(x))


def to_input(images_u8):
    x = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float() / 127.5 - 1
    return F.interpolate(x, size=(64, 64), mode="area")


def train_classifier(data, path, epochs=4):
    if os.path.exists(path):
        net = SceneNet()
        net.load_state_dict(torch.load(path))
        return net.eval()
    d = np.load(os.path.join(data, "train.npz"))
    x = torch.cat([to_input(d["images"][i:i + 500]) for i in range(0, len(d["images"]), 500)])
    y = torch.tensor([LABELS.index(str(label)) for label in d["labels"]])
    net = SceneNet()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    g = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            xb = x[idx]
            if torch.rand(1, generator=g) < 0.5:
                xb = xb.flip(3)
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"classifier epoch {epoch}: loss {loss.item():.3f}", flush=True)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save(net.state_dict(), path)
    return net.eval()


def frechet(a, b):
    """‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1^½ Σ2 Σ1^½)^½), via symmetric eigendecompositions."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)


@torch.no_grad()
def scores(net, images_u8, labels):
    x = to_input(images_u8)
    feats = net.features(x)
    pred = net.head(feats).argmax(1).numpy()
    acc = float((pred == np.array([LABELS.index(str(label)) for label in labels])).mean())
    return acc, feats.numpy()


def psnr_in_mask(bg, image, mask):
    m = mask == 255
    if not m.any():
        return None
    err = ((bg[m].astype(np.float64) - image[m].astype(np.float64)) ** 2).mean()
    return float(10 * np.log10(255**2 / max(err, 1e-10)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="training/data")
    ap.add_argument("--run", default="training/runs/unet")
    ap.add_argument("--vae", default="training/runs/vae/vae")
    ap.add_argument("--out", default="docs/eval")
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=4.0)
    args = ap.parse_args()
    threads()
    os.makedirs(args.out, exist_ok=True)
    net = train_classifier(args.data, os.path.join(os.path.dirname(args.run), "scene_classifier.pt"))
    unet, vae, step = load(args.run, args.vae)
    d = np.load(os.path.join(args.data, "heldout.npz"))
    e = np.load(os.path.join(args.data, "empty_prompt.npz"))
    idx = np.arange(min(args.n, len(d["images"])))
    images, masks, labels = d["images"][idx], d["masks"][idx], d["labels"][idx]
    real_acc, real_feats = scores(net, images, labels)
    results = {"unet_steps": int(step), "n": int(len(idx)), "sampler_steps": args.steps,
               "real_heldout_scene_accuracy": real_acc, "runs": {}}
    empty = torch.from_numpy(e["context"][0, : e["context_len"][0]]).float()
    ctx = [torch.from_numpy(d["context"][i, : d["context_len"][i]]).float() for i in idx]
    grids = {}
    for guidance in [1.0, args.guidance]:
        bgs = []
        for i in range(0, len(idx), 16):
            bgs.append(generate(unet, vae, images[i:i + 16], masks[i:i + 16], ctx[i:i + 16], empty, args.steps,
                                guidance, seed=1234 + i))
            print(f"guidance {guidance}: {i + 16}/{len(idx)}", flush=True)
        bg = np.concatenate(bgs)
        ads = np.stack([composite(bg[k], images[k], masks[k]) for k in range(len(idx))])
        acc, feats = scores(net, ads, labels)
        psnrs = [p for p in (psnr_in_mask(bg[k], images[k], masks[k]) for k in range(len(idx))) if p is not None]
        solid = masks == 255
        exact = float((ads[solid] == images[solid]).all(axis=-1).mean())
        results["runs"][f"guidance_{guidance:g}"] = {
            "scene_accuracy": acc, "fd_scene_classifier": frechet(feats, real_feats),
            "psnr_in_mask_db_mean": float(np.mean(psnrs)), "psnr_in_mask_db_median": float(np.median(psnrs)),
            "composite_exact_fraction": exact,
        }
        grids[guidance] = ads[:8]
    results["fd_real_train_vs_heldout"] = frechet(
        scores(net, np.load(os.path.join(args.data, "train.npz"))["images"][:len(idx)], labels)[1], real_feats)
    from PIL import Image
    rows = [np.concatenate(list(images[:8]), 1)] + [np.concatenate(list(grids[g]), 1) for g in grids]
    Image.fromarray(np.concatenate(rows, 0)).save(os.path.join(args.out, "heldout_grid.jpg"), quality=90)  # JPEG: the tree travels to GPU machines
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
