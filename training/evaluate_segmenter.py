"""The cut-out network (train_segmenter.py) on held-out photographic ads: products and photographs
it never trained on, with their exact alpha.

    python training/evaluate_segmenter.py --data PHOTO_DATA --segmenter RUN/segmenter --n 300 --out docs/eval/segmenter

Each held-out ad (make_photo_dataset.py's heldout.npz: a held-out product on a held-out photograph
or texture, blurred backdrop or a ground in focus, contact shadow, grain) is saved as a JPEG
(quality 85, as a phone would) and read back, stretched to the network's square and read with its
mirror image as the runtime does (`--single`: one pass), and its logits scaled back to the photo's
size (bilinear). Scores, with the mask binarised at ½:
IoU and boundary F at 2 px against the exact alpha (evaluate_cutout.boundary_f), the share of
photos with IoU ≥ 0.9, and the network's confidence (mean |2p − 1| over the photo), which the
runtime uses to decide between the network's mask and asking for the brush. Writes OUT.json and
OUT_grid.jpg (photo, exact alpha, the network's mask, the cut-out on dark: eight photos, then the
four worst).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from common import threads  # noqa: E402
from evaluate_cutout import boundary_f  # noqa: E402
from train_segmenter import SIZE, logits, mirrored_logits  # noqa: E402


def load(folder):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(folder).eval()


def jpeg(image, quality=85):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@torch.no_grad()
def predict(model, photo, single=False, sizes=(SIZE,)):
    """The product probability at the photo's own size, as the runtime computes it (the mean of the
    logits for the photo and its mirror image; with `single`, the photo's pass alone); with several
    `sizes`, the mean of the logits read at each, scaled to the photo's size."""
    h, w = photo.shape[:2]
    total = 0
    for size in sizes:
        x = np.asarray(Image.fromarray(photo).resize((size, size), Image.BILINEAR), np.float32) / 127.5 - 1
        x = torch.from_numpy(x).permute(2, 0, 1)[None]
        out = logits(model, x) if single else mirrored_logits(model, x)
        total = total + torch.nn.functional.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
    return torch.sigmoid(total / len(sizes))[0, 0].numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--segmenter", required=True, help="a diffusers folder (train_segmenter.py's RUN/segmenter)")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--out", default="docs/eval/segmenter")
    ap.add_argument("--single", action="store_true", help="score one pass, without the mirror image's")
    ap.add_argument("--sizes", default=None, help="the network's input side(s), comma-separated, the logits of "
                    "several averaged (default: its config's sample_size, the side the runtime reads it at)")
    args = ap.parse_args()
    threads()
    d = np.load(os.path.join(args.data, "heldout.npz"))
    n = min(args.n, len(d["images"]))
    model = load(args.segmenter)
    sizes = tuple(int(v) for v in (args.sizes or str(model.config.sample_size)).split(","))
    rows, tiles = [], []
    for i in range(n):
        photo, alpha = jpeg(d["images"][i]), d["masks"][i]
        p = predict(model, photo, args.single, sizes)
        pred, truth = p >= 0.5, alpha >= 128
        union = (pred | truth).sum()
        iou = float((pred & truth).sum() / union) if union else 1.0
        rows.append({"i": i, "iou": iou, "boundary_f": float(boundary_f(pred, truth)),
                     "confidence": float(np.abs(2 * p - 1).mean())})
        dark = (photo * (p[..., None]) + np.array([20, 24, 30]) * (1 - p[..., None])).astype(np.uint8)
        grey = lambda m: np.repeat((m * 255).astype(np.uint8)[..., None], 3, 2)  # noqa: E731
        tiles.append(np.concatenate([photo, grey(alpha / 255), grey(p), dark], 1))
    iou = np.array([r["iou"] for r in rows])
    bf = np.array([r["boundary_f"] for r in rows])
    summary = {
        "segmenter": args.segmenter, "data": args.data, "n": n, "sizes": list(sizes), "mirrored": not args.single,
        "iou_mean": float(iou.mean()), "iou_median": float(np.median(iou)), "share_iou_ge_0.9": float((iou >= 0.9).mean()),
        "boundary_f_mean": float(bf.mean()), "confidence_mean": float(np.mean([r["confidence"] for r in rows])),
    }
    print(json.dumps(summary, indent=2))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"summary": summary, "photos": rows}, f, indent=1)
    worst = list(np.argsort(iou)[:4])
    grid = [tiles[k] for k in list(range(min(8, n))) + worst]
    Image.fromarray(np.concatenate(grid, 0)).resize((4 * 192, len(grid) * 192)).save(args.out + "_grid.jpg", quality=85)


if __name__ == "__main__":
    main()
