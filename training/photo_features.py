"""The fixed feature network every photographic evaluation scores with (issue 26).

    python training/photo_features.py --data ~/.cache/adcanvas-runs/photo_data   # train once (~20 min, CPU)
    python training/photo_features.py --check --data DIR                         # its accuracy on DIR's held-out ads

A small residual CNN, trained once on the *training* split of make_photo_dataset.py's ads and then
frozen: its weights are committed (`training/eval_net/photo_features.safetensors`, with the labels and
the data it saw in `photo_features.json`), so every later model is scored by the same network and
figures stay comparable across sessions. Retraining it makes a new scale: say so in docs/EVAL.md and
re-score the shipped model beside the candidate.

It has two heads, read from the ad's caption's parts:
- `kind`: the backdrop's scene kind (lake, mountains, flowers, ... from photo_sources.csv), the
  prompt-following measure (scene accuracy);
- `surface`: what the product stands on (wood, marble, stone, fabric, cork, or the backdrop's own
  ground), a second prompt-following measure.
Its 256-d pooled features give the Fréchet distance (Inception weights are not obtainable here, so
this is not FID and does not compare with published FIDs).

Held-out backdrops and surfaces are never seen in training (photo_sources.split), so its accuracy on
the real held-out ads is a measure of how well it generalises to new photographs of a kind; that
accuracy is recorded beside every generated set's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import photo_sources  # noqa: E402
from common import threads  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = os.path.join(HERE, "eval_net", "photo_features.safetensors")
SIZE = 128  # input side: ads are area-downscaled to this
SURFACES = ["ground", "wood", "marble", "stone", "fabric", "cork"]
# Scene families: what the `kind` head can tell apart in photographs it has never seen. Trained on
# 27 backdrops, it does not generalise to held-out photographs' fine kinds (1 % on the real held-out
# ads: a misty or mountain lake reads as "mountains", a forest stream as "flowers"), so scene
# accuracy is scored by family, the fine kind reported beside it. Grouped by meaning, after that
# first check (docs/EVAL.md says so).
FAMILIES = {
    "landscape": ["lake", "water", "beach", "mountains", "sky"],
    "greenery": ["plants", "flowers", "grass", "forest", "trees", "park", "field"],
    "autumn": ["autumn"],
    "indoor": ["interior", "wood"],
}


def family(kind: str) -> str:
    return next(f for f, kinds_ in FAMILIES.items() if kind in kinds_)


def kinds() -> list[str]:
    """Every backdrop kind in the labelled table, sorted: the `kind` head's classes."""
    return sorted({s.kind for s in photo_sources.load_table() if s.use == "backdrop"})


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = nn.BatchNorm2d(cout)
        self.skip = nn.Conv2d(cin, cout, 1, stride, bias=False) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x):
        y = F.relu(self.n1(self.c1(x)))
        return F.relu(self.n2(self.c2(y)) + self.skip(x))


class PhotoFeatures(nn.Module):
    """128² RGB in [-1, 1] → 256-d features → kind and surface logits."""

    def __init__(self, n_kinds, n_surfaces=len(SURFACES), width=(32, 64, 128, 256)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width[0], 3, 2, 1, bias=False), nn.BatchNorm2d(width[0]), nn.ReLU())
        chans = (width[0],) + tuple(width)
        self.blocks = nn.Sequential(*[Block(a, b, 2 if i else 1) for i, (a, b) in enumerate(zip(chans, chans[1:]))])
        self.kind = nn.Linear(width[-1], n_kinds)
        self.surface = nn.Linear(width[-1], n_surfaces)

    def features(self, x):
        return self.blocks(self.stem(x)).mean((2, 3))

    def forward(self, x):
        f = self.features(x)
        return self.kind(f), self.surface(f)


def to_input(images_u8, size=SIZE):
    """uint8 NHWC ads (any square size) → float NCHW at `size`², by area averaging."""
    out = []
    for i in range(0, len(images_u8), 256):
        x = torch.from_numpy(np.ascontiguousarray(images_u8[i:i + 256])).permute(0, 3, 1, 2).float() / 127.5 - 1
        out.append(F.interpolate(x, size=(size, size), mode="area") if x.shape[-1] != size else x)
    return torch.cat(out)


def surface_labels(metas) -> list[str]:
    """The surface class of each ad from make_photo_dataset.py's photo_scenes.json entries."""
    table = {s.id: s for s in photo_sources.load_table()}
    out = []
    for m in metas:
        if m.get("mode") == "ground" or not m.get("surface"):
            out.append("ground")
        else:
            out.append(table[m["surface"]].kind)
    return out


def load_split(data, split):
    d = np.load(os.path.join(data, f"{split}.npz"))
    with open(os.path.join(data, "photo_scenes.json")) as f:
        metas = json.load(f)[split]
    return d["images"], [str(v) for v in d["labels"]], surface_labels(metas)


def save(net, meta, path=WEIGHTS):
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump(meta, f, indent=1)


def load(path=WEIGHTS) -> tuple[PhotoFeatures, dict]:
    """The committed, frozen network in eval mode, and its metadata (classes, training data)."""
    from safetensors.torch import load_file

    if not os.path.exists(path):
        sys.exit(f"{path} missing: train it once with `python training/photo_features.py`")
    with open(os.path.splitext(path)[0] + ".json") as f:
        meta = json.load(f)
    net = PhotoFeatures(len(meta["kinds"]))
    net.load_state_dict(load_file(path))
    return net.eval(), meta


@torch.no_grad()
def predict(net, meta, images_u8):
    """(kind names, surface names, features as a numpy array) of uint8 NHWC ads."""
    kinds_, surfs, feats = [], [], []
    x = to_input(images_u8)
    for i in range(0, len(x), 64):
        f = net.features(x[i:i + 64])
        kinds_ += [meta["kinds"][j] for j in net.kind(f).argmax(1).tolist()]
        surfs += [meta["surfaces"][j] for j in net.surface(f).argmax(1).tolist()]
        feats.append(f)
    return kinds_, surfs, torch.cat(feats).numpy()


def augment(x, g):
    """Random crop (60–100 % of the side, resized back), horizontal flip, brightness/contrast jitter:
    the generated ads differ from the real ones in exactly such ways, and the net must not key on them."""
    n, _, h, w = x.shape
    out = torch.empty_like(x)
    for i in range(n):
        s = int(h * (0.6 + 0.4 * torch.rand(1, generator=g).item()))
        y0 = torch.randint(0, h - s + 1, (1,), generator=g).item()
        x0 = torch.randint(0, w - s + 1, (1,), generator=g).item()
        crop = x[i:i + 1, :, y0:y0 + s, x0:x0 + s]
        out[i] = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0]
    flip = torch.rand(n, generator=g) < 0.5
    out[flip] = out[flip].flip(3)
    gain = 1 + 0.2 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    bias = 0.2 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    return (out * gain + bias).clamp(-1, 1)


def train(args):
    images, labels, surfaces = load_split(args.data, "train")
    names = kinds()
    x = to_input(images)
    del images
    yk = torch.tensor([names.index(v) for v in labels])
    ys = torch.tensor([SURFACES.index(v) for v in surfaces])
    torch.manual_seed(0)
    net = PhotoFeatures(len(names))
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    steps = args.epochs * (len(x) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    g = torch.Generator().manual_seed(0)
    t0, step = time.time(), 0
    for epoch in range(args.epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - args.batch + 1, args.batch):
            idx = perm[i:i + args.batch]
            lk, ls = net(augment(x[idx], g))
            loss = F.cross_entropy(lk, yk[idx]) + F.cross_entropy(ls, ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                print(f"epoch {epoch} step {step}/{steps} loss {loss.item():.3f} ({(time.time() - t0) / 60:.1f} min)",
                      flush=True)
    net.eval()
    with open(os.path.join(args.data, "train.npz"), "rb") as f:
        digest = hashlib.sha1(f.read(1 << 24)).hexdigest()  # the first 16 MiB: names the data set
    meta = {"kinds": names, "surfaces": SURFACES, "size": SIZE, "epochs": args.epochs, "batch": args.batch,
            "train_ads": int(len(x)), "train_npz_sha1_first16mib": digest,
            "photo_train": sorted({s.id for s in photo_sources.split(photo_sources.load_table())[0]}),
            "trained": time.strftime("%Y-%m-%d"), "minutes": round((time.time() - t0) / 60, 1)}
    meta.update(check(net, meta, args.data))
    save(net, meta)
    print(json.dumps(meta, indent=1))


def check(net, meta, data):
    """Accuracy of both heads on the real held-out ads (new backdrops and surfaces)."""
    images, labels, surfaces = load_split(data, "heldout")
    k, s, _ = predict(net, meta, images)
    return {"heldout_kind_accuracy": float(np.mean([a == b for a, b in zip(k, labels)])),
            "heldout_family_accuracy": float(np.mean([family(a) == family(b) for a, b in zip(k, labels)])),
            "heldout_surface_accuracy": float(np.mean([a == b for a, b in zip(s, surfaces)]))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="training/data/photo")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--check", action="store_true", help="only report the committed net's held-out accuracy")
    args = ap.parse_args()
    threads()
    if args.check:
        net, meta = load()
        print(json.dumps(check(net, meta, args.data), indent=1))
    else:
        train(args)


if __name__ == "__main__":
    main()
