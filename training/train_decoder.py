"""Widens and retrains the AutoencoderTiny's decoder with its encoder frozen, time-boxed and resumable.

    python training/train_decoder.py --vae training/runs/vae/vae --run training/runs/decoder --minutes 30

Why only the decoder: the latent space is the encoder's, and the UNet, the reference branch and
the ControlNet were all trained in it. A new decoder for the same latents sharpens every output
without retraining any of them. The scaling factor is copied unchanged for the same reason.

Why wider: the 32-channel decoder loses product detail (held-out, masked-image round trip:
25.6 dB in the product's interior, 20.7 dB in an 8-px band at its edge; background 33 dB).
The new decoder starts as an exact copy of the trained one (function-preserving widening):
old channels keep their weights, new channels get small random incoming weights and zero
outgoing ones, and the added blocks start as the identity (last conv zero, as in
train_tiny_vae.py). Step 0 therefore reproduces the old decoder's images exactly, and training
only adds to them.

With --condition the decoder also gets the product-condition branch (condition_decoder.py):
--vae is then the shipped 64-wide VAE, kept as it is at step 0, and the branch and the decoder
train together on the product's pixels and mask. When --vae already has the branch (a pack, or a
folder this script saved), the branch starts from it: the fine-tune on photographs (issue 26,
`--data PHOTO_DATA --vae models/default --condition`) starts from exactly the shipped decoder.

Loss: L1 + L1 on image gradients, product pixels weighted ×(1 + --product-weight) because the
product's fidelity before paste-back is what the old decoder lost most; crops are centred on
the product half of the time. Latents get σ = 0.05 noise as in train_tiny_vae.py.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import condition_decoder  # noqa: E402
import loop  # noqa: E402
from common import DECODER_CONFIG, Checkpoint, device, optimizer_to, threads  # noqa: E402
from pack import load_condition, load_vae  # noqa: E402


@torch.no_grad()
def widen_conv(old, new, gen):
    """Copies `old` into the top-left block of `new`; new outputs read every input through small
    random weights, old outputs read none of the new inputs, so old outputs are unchanged."""
    o, i = old.weight.shape[:2]
    torch.nn.init.kaiming_uniform_(new.weight, a=5 ** 0.5, generator=gen)
    new.weight.mul_(0.1)
    new.weight[:o, :i] = old.weight
    new.weight[:o, i:] = 0
    if new.bias is not None:
        new.bias.zero_()
        new.bias[:o] = old.bias


@torch.no_grad()
def widen_decoder(old, new, seed=0):
    """Makes `new.decoder` compute exactly what `old.decoder` computes (see module doc)."""
    gen = torch.Generator().manual_seed(seed)
    old_stages, new_stages = stages(old.decoder.layers), stages(new.decoder.layers)
    assert len(old_stages) == len(new_stages), "decoders differ in depth"
    for (ob, oc), (nb, nc) in zip(old_stages, new_stages):
        assert len(nb) >= len(ob), "the new decoder must have at least the old one's blocks"
        for b_old, b_new in zip(ob, nb):
            for c_old, c_new in zip(convs(b_old.conv), convs(b_new.conv)):
                widen_conv(c_old, c_new, gen)
        for b_new in nb[len(ob):]:  # added blocks: identity (their input is already ≥ 0)
            for c in convs(b_new.conv)[:-1]:
                torch.nn.init.kaiming_uniform_(c.weight, a=5 ** 0.5, generator=gen)
                c.bias.zero_()
            last = convs(b_new.conv)[-1]
            last.weight.zero_()
            last.bias.zero_()
        for c_old, c_new in zip(oc, nc):
            widen_conv(c_old, c_new, gen)


def convs(seq):
    return [m for m in seq if isinstance(m, torch.nn.Conv2d)]


def stages(layers):
    """Splits DecoderTiny's flat layer list into levels: (blocks, convs) per level; the input
    conv belongs to the first level, each level's up-conv (or the output conv) to its own."""
    out, blocks, cs = [], [], []
    for m in layers:
        if m.__class__.__name__ == "AutoencoderTinyBlock":
            blocks.append(m)
        elif isinstance(m, torch.nn.Conv2d):
            cs.append(m)
            if blocks:  # a conv after blocks closes the level
                out.append((blocks, cs))
                blocks, cs = [], []
    return out


def product_crops(images, masks, n, crop, rng):
    """Random crops, half of them centred on a random product pixel (clamped to the image)."""
    size = images.shape[1]
    idx = rng.integers(0, len(images), n)
    xs, ys = rng.integers(0, size - crop + 1, n), rng.integers(0, size - crop + 1, n)
    for k, i in enumerate(idx):
        if rng.random() < 0.5:
            py, px = np.nonzero(masks[i] > 127)
            if len(py):
                j = rng.integers(len(py))
                ys[k] = np.clip(py[j] - crop // 2, 0, size - crop)
                xs[k] = np.clip(px[j] - crop // 2, 0, size - crop)
    img = np.stack([images[i, y:y + crop, x:x + crop] for i, y, x in zip(idx, ys, xs)])
    msk = np.stack([masks[i, y:y + crop, x:x + crop] for i, y, x in zip(idx, ys, xs)])
    return img, msk


def weighted_l1(recon, x, w):
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    l1 = (w * (recon - x).abs()).mean()
    g = (w[..., :, 1:] * (dx(recon) - dx(x)).abs()).mean() + (w[..., 1:, :] * (dy(recon) - dy(x)).abs()).mean()
    return l1, g


def main():
    from diffusers import AutoencoderTiny

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="training/data")
    ap.add_argument("--vae", default="training/runs/vae/vae", help="the trained VAE whose encoder is kept")
    ap.add_argument("--run", default="training/runs/decoder")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--product-weight", type=float, default=3.0)
    ap.add_argument("--condition", action="store_true", help="add and train the product-condition branch")
    args = ap.parse_args()
    print("threads", threads())
    torch.manual_seed(0)
    data = np.load(os.path.join(args.data, "train.npz"))
    images, masks = data["images"], data["masks"]
    old = load_vae(args.vae)
    vae = AutoencoderTiny(**{**DECODER_CONFIG, "scaling_factor": old.config.scaling_factor})
    vae.encoder.load_state_dict(old.encoder.state_dict())
    widen_decoder(old, vae)
    vae.encoder.requires_grad_(False)
    cond = condition_decoder.new(vae) if args.condition else None
    if cond is not None and (kept := load_condition(old, args.vae)) is not None:
        cond.load_state_dict(kept.state_dict())  # fine-tuning a decoder that already reads the product
    trained = torch.nn.ModuleDict({"decoder": vae.decoder, **({"condition": cond} if cond else {})})
    opt = torch.optim.AdamW(trained.parameters(), lr=args.lr, weight_decay=0.0)
    ck = Checkpoint(args.run)
    step = ck.resume(opt, **trained)
    dev = device()
    vae.to(dev)
    trained.to(dev)
    optimizer_to(opt, dev)
    rng = np.random.default_rng(step)

    def batch_loss(step):
        img, msk = product_crops(images, masks, args.batch, args.crop, rng)
        x = (torch.from_numpy(img).permute(0, 3, 1, 2).float() / 127.5 - 1).to(dev)
        m = torch.from_numpy(msk).float().div(255)[:, None].to(dev)
        w = 1 + args.product_weight * m
        with torch.no_grad():
            z = vae.encoder(x)
        z = z + 0.05 * torch.randn_like(z)
        recon = condition_decoder.decode(vae, cond, z * vae.config.scaling_factor, x, m) if cond else vae.decoder(z)
        l1, g = weighted_l1(recon, x, w)
        return l1 + g, {"l1": l1.item(), "grad": g.item()}

    step = loop.train(run=args.run, minutes=args.minutes, opt=opt, params=trained.parameters(), batch_loss=batch_loss,
                      save=lambda step: ck.save_modules(step, opt, **trained), step=step, extras=["l1", "grad"])
    if cond:
        condition_decoder.save(vae.eval().cpu(), cond.eval().cpu(), os.path.join(args.run, "vae"))
    else:
        vae.eval().cpu().save_pretrained(os.path.join(args.run, "vae"))
    print(f"done: step {step}; saved {os.path.join(args.run, 'vae')}")


if __name__ == "__main__":
    main()
