"""The cut-out network (issue 27): finds the product in a photo whose background is not plain.

    python training/train_segmenter.py --data PHOTO_DATA --run RUN --minutes 60

A salient-object segmenter, small enough for the browser: diffusers' `UNet2DConditionModel` with
plain down/up blocks (SEGMENTER_CONFIG: five levels, 16–96 channels, 192² in, 3 RGB channels in, one
logit out), run at a fixed timestep 0 with a single zero context token. Using the UNet class the
runtime already builds (src/denoise/unet.rs) means the pack's converter, loader, quantisation and
kernels serve it unchanged; the mid block's cross-attention over one zero token reduces to a
learned bias, and the time embedding of t = 0 to another.

Data: make_photo_dataset.py's ads — held-out-split products with exact alpha on real photographs
and surface textures, with contact shadows, depth-of-field blur, light that agrees with the
backdrop and film grain — and, when given (`--procedural`), make_dataset.py's procedural scenes
(studio sweeps, tables, beaches). Each sample is cropped to a random rectangle that keeps the whole
product (other aspect ratios: the runtime stretches any photo to the square), flipped, colour-
jittered, sometimes blurred or JPEG-compressed. Target: the product's alpha (the shadow is not
product). One sample in eight has no product at all (a crop beside the product, or coloured
noise) and an empty target, so that a photo with nothing to cut out gets an empty mask (the
runtime then asks for the brush) rather than a confident guess. Loss: binary cross-entropy +
soft IoU (1 − (Σpq + 1) / (Σ(p + q − pq) + 1): an empty target asks for an empty mask).

The held-out split (heldout.npz: products and photographs never trained on) is scored by
evaluate_segmenter.py. The run saves EMA weights to RUN/segmenter (a diffusers folder) that
export.py adds to the pack as its `segmenter` file.
"""

from __future__ import annotations

import argparse
import io
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageFilter

sys.path.insert(0, os.path.dirname(__file__))
import loop  # noqa: E402
from common import Run, threads  # noqa: E402

SIZE = 192  # training crops are stretched to SIZE²
# The runtime stretches a photo to READ_SIZE² (the config's sample_size) and scales its mask back:
# the network is convolutional, and read at 256 it scored +0.02 IoU over 192 on held-out busy photos
# at 256² and at 512² (docs/EVAL.md, 2026-12-07).
READ_SIZE = 256
SEGMENTER_CONFIG = dict(
    sample_size=READ_SIZE, in_channels=3, out_channels=1,
    down_block_types=["DownBlock2D"] * 5, up_block_types=["UpBlock2D"] * 5,
    mid_block_type="UNetMidBlock2DCrossAttn",
    block_out_channels=[16, 24, 48, 64, 96], layers_per_block=1, cross_attention_dim=16,
    attention_head_dim=8, norm_num_groups=8, norm_eps=1e-5,
    flip_sin_to_cos=True, freq_shift=0,
)


def new_model():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**SEGMENTER_CONFIG)


def logits(model, x):
    """`x` [n, 3, h, w] in [-1, 1] → product logits [n, 1, h, w] of one pass."""
    context = torch.zeros(x.shape[0], 1, SEGMENTER_CONFIG["cross_attention_dim"], device=x.device)
    return model(x, 0, encoder_hidden_states=context).sample


def mirrored_logits(model, x):
    """What the runtime computes (src/encoders/segmenter.rs): the mean of the logits for `x` and
    for its mirror image, flipped back."""
    return (logits(model, x) + logits(model, x.flip(3)).flip(3)) / 2


def augment(image, mask, rng, size=SIZE):
    """A random crop that keeps the whole product (a rectangle of another aspect ratio, resized
    to the square), a flip, colour jitter, and sometimes blur, noise or JPEG."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask > 8)
    if len(ys):
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    else:
        y0, y1, x0, x1 = 0, h, 0, w
    top, left = rng.integers(0, y0 + 1), rng.integers(0, x0 + 1)
    bottom, right = rng.integers(y1, h + 1), rng.integers(x1, w + 1)
    if bottom - top < 16 or right - left < 16:
        top, left, bottom, right = 0, 0, h, w
    im = Image.fromarray(image[top:bottom, left:right]).resize((size, size), Image.BILINEAR)
    m = Image.fromarray(mask[top:bottom, left:right]).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        im, m = im.transpose(Image.FLIP_LEFT_RIGHT), m.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < 0.2:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.3:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(rng.integers(35, 90)))
        im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    x = np.asarray(im, np.float32) / 255
    # Exposure, contrast and saturation as a camera or a phone varies them.
    x = x * rng.uniform(0.75, 1.25) + rng.uniform(-0.08, 0.08)
    grey = x.mean(2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.6, 1.4)
    x = (x - x.mean()) * rng.uniform(0.8, 1.2) + x.mean()
    if rng.random() < 0.3:
        x = x + rng.normal(0, rng.uniform(0.005, 0.03), x.shape)
    return np.clip(x, 0, 1), np.asarray(m, np.float32) / 255


def no_product(image, mask, rng, size=SIZE):
    """A picture with nothing to cut out, so the network learns to say so (an empty mask: the
    runtime then asks for the brush): a crop of an ad beside its product when there is room for
    one, else coloured noise (smooth blobs and grain, like tests/fixtures/busy.jpg)."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask > 2)
    for _ in range(8):
        side = int(rng.integers(h // 4, h // 2 + 1))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        if not len(ys) or not ((ys >= top - 2) & (ys < top + side + 2) & (xs >= left - 2) & (xs < left + side + 2)).any():
            empty = np.zeros_like(mask)
            return augment(image[top:top + side, left:left + side], empty[top:top + side, left:left + side], rng, size)
    cells = rng.uniform(0, 255, (int(rng.integers(3, 12)), int(rng.integers(3, 12)), 3)).astype(np.uint8)
    x = np.asarray(Image.fromarray(cells).resize((size, size), Image.BICUBIC), np.float32) / 255
    x = np.clip(x + rng.normal(0, rng.uniform(0.02, 0.15), x.shape), 0, 1)
    return x, np.zeros((size, size), np.float32)


def batch(images, masks, n, rng, negatives=0.12, size=SIZE):
    idx = rng.integers(0, len(images), n)
    pairs = [no_product(images[i], masks[i], rng, size) if rng.random() < negatives
             else augment(images[i], masks[i], rng, size) for i in idx]
    x = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2) * 2 - 1
    y = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
    return x.float(), y.float()


def loss_of(pred_logits, target):
    bce = torch.nn.functional.binary_cross_entropy_with_logits(pred_logits, target)
    p = torch.sigmoid(pred_logits)
    inter = (p * target).sum((1, 2, 3))
    union = (p + target - p * target).sum((1, 2, 3))
    iou = 1 - ((inter + 1) / (union + 1)).mean()
    return bce + iou, bce, iou


def load_sets(folders):
    images, masks = [], []
    for folder in folders:
        d = np.load(os.path.join(folder, "train.npz"))
        images.append(d["images"])
        masks.append(d["masks"])
        print(f"{folder}: {len(d['images'])} training ads", flush=True)
    return np.concatenate(images), np.concatenate(masks)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="make_photo_dataset.py output (its train.npz)")
    ap.add_argument("--procedural", default=None, help="also make_dataset.py's output (studio and procedural scenes)")
    ap.add_argument("--run", default="training/runs/segmenter")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--crop", type=int, default=SIZE, help="the side training crops are stretched to (the network "
                    "is read at READ_SIZE; a run may continue at READ_SIZE to train where it is read, 1.8x the time)")
    ap.add_argument("--init-pack", default=None, help="a new run starts from this pack's segmenter (its q8 weights "
                    "dequantised) instead of from scratch; a run with a state.pt resumes that and ignores this")
    args = ap.parse_args()
    print("threads", threads())
    torch.manual_seed(0)
    images, masks = load_sets([args.data] + ([args.procedural] if args.procedural else []))
    model = new_model()
    if args.init_pack and not os.path.exists(os.path.join(args.run, "state.pt")):
        import pack

        model.load_state_dict(pack.load_component(args.init_pack, "segmenter", model.state_dict()))
        print(f"starts from {args.init_pack}'s segmenter", flush=True)
    run = Run(args.run, model, lr=args.lr, weight_decay=1e-4)
    model, ema, opt, step, dev = run.model, run.ema, run.opt, run.step, run.device
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters", flush=True)
    rng = np.random.default_rng(step)

    def batch_loss(step):
        x, y = batch(images, masks, args.batch, rng, size=args.crop)
        total, bce, iou = loss_of(logits(model, x.to(dev)), y.to(dev))
        return total, {"bce": bce.item(), "iou_loss": iou.item()}

    step = loop.train(run=args.run, minutes=args.minutes, opt=opt, params=model.parameters(), batch_loss=batch_loss,
                      save=run.save, step=step,
                      extras=["bce", "iou_loss"], base_lrs=[args.lr], warmup=200, ema=run.ema_pairs(),
                      ema_decay=args.ema)
    ema.cpu().save_pretrained(os.path.join(args.run, "segmenter"))
    print(f"done: step {step}, EMA weights saved to {args.run}/segmenter")


if __name__ == "__main__":
    main()
