"""Adds the style reference to the default model: PFV-masked image prompt through MEPA
(training/mepa.py, docs/METHOD.md §5–6). Resumable and time-boxed like train_unet.py.

    python training/train_reference.py --init training/runs/unet/unet --run training/runs/ref --minutes 10

Starts from the trained inpainting UNet (EMA weights) with the MEPA branch initialised to add
nothing (to_v_ip = 0), and trains the UNet, the reference encoder, the projection and the MEPA
projections together on the ε-MSE loss, the new parts at a higher learning rate (`--lr-new`).
Each ad's reference is the same scene style with another product (make_dataset.py); PFV hides
that product before the encoder sees it. The reference is dropped 20 % of the time; the caption
40 % of the time when the reference is there (so the model must read the scene from the reference,
not only from the caption) and 25 % when it is not, so "no reference", "reference only" and the
unconditional half of guidance (both dropped, 5 %) all stay in distribution.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import loop  # noqa: E402
from common import SCHEDULER_CONFIG, Checkpoint, device, optimizer_to, threads  # noqa: E402
from mepa import (IMAGE_ENCODER_CONFIG, ReferenceEncoder, attach_mepa, background_region,  # noqa: E402
                  pfv_fill, pfv_visible, project, to_pixels)
from train_unet import load_latents  # noqa: E402


def save(ck, unet, enc, ema, ema_enc, opt, step):
    ck.save_modules(step, opt, unet=unet, enc=enc, ema=ema, ema_enc=ema_enc)


def reference_batch(refs, ref_masks, idx, pfv=True):
    """Encoder pixels and token key mask (CLS + 8×8 patches) for the chosen references."""
    r, m = refs[idx.numpy()], ref_masks[idx.numpy()]
    vis = pfv_visible(m) if pfv else np.ones((len(r), 8, 8), bool)
    pixels = to_pixels(pfv_fill(r, vis))
    keep = torch.cat([torch.ones(len(r), 1, dtype=torch.bool), torch.from_numpy(vis.reshape(len(r), -1))], 1)
    return pixels, keep


def main():
    from diffusers import DDPMScheduler, UNet2DConditionModel

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="training/data")
    ap.add_argument("--vae", default="training/runs/vae/vae")
    ap.add_argument("--init", default="training/runs/unet/unet")
    ap.add_argument("--init-pack", default=None,
                    help="start from a pack's UNet, MEPA projections and reference encoder instead (e.g. models/default, "
                         "to fine-tune the shipped model at another --data size where its checkpoints cannot travel)")
    ap.add_argument("--latents", default="training/runs/unet/latents.pt")
    ap.add_argument("--run", default="training/runs/ref")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--lr-new", type=float, default=1e-3, help="for the encoder, projection and MEPA projections")
    ap.add_argument("--text-drop", type=float, default=0.25, help="caption dropped, without a reference")
    ap.add_argument("--text-drop-with-ref", type=float, default=0.4, help="caption dropped, with a reference")
    ap.add_argument("--ref-drop", type=float, default=0.2)
    ap.add_argument("--t-power", type=float, default=1.0,
                    help="timesteps t = T·u^p, u uniform: p < 1 trains high-noise steps (where the scene and its "
                         "colours are decided, and so where prompts and references matter) more often")
    ap.add_argument("--snr-weight-max", type=float, default=1.0,
                    help="per-sample loss weight clamp(1/SNR(t), 1, max): >1 weighs high-noise steps up, where "
                         "ε-MSE is least sensitive to the image content a prompt or reference carries")
    ap.add_argument("--reset-adapter", action="store_true",
                    help="re-initialise the projection and MEPA projections (to_k_ip = to_k, to_v_ip = 0) after "
                         "resuming, keeping the UNet and the encoder")
    ap.add_argument("--ema", type=float, default=0.999)
    args = ap.parse_args()
    print("threads", threads())
    os.makedirs(args.run, exist_ok=True)
    lat = load_latents(args.data, args.vae, args.latents)
    tr, empty = lat["train"], lat["empty"]
    d = np.load(os.path.join(args.data, "train.npz"))
    refs, ref_masks, masks = d["ref_images"], d["ref_masks"], d["masks"]
    region_all = background_region(masks)  # [n, 1, 32, 32]
    n = len(tr["mean"])
    assert len(refs) == n, "the data has no references: rerun make_dataset.py"
    sched = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k != "set_alpha_to_one"})

    torch.manual_seed(0)
    if args.init_pack:
        import pack

        unet, enc = pack.mepa_unet(args.init_pack), pack.reference_encoder(args.init_pack)
    else:
        unet = attach_mepa(UNet2DConditionModel.from_pretrained(args.init), IMAGE_ENCODER_CONFIG["hidden_size"])
        enc = ReferenceEncoder()
    ema, ema_enc = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(enc).requires_grad_(False)
    params = list(unet.parameters()) + list(enc.parameters())
    new = lambda n: "to_k_ip" in n or "to_v_ip" in n or "encoder_hid_proj" in n  # noqa: E731
    groups = [dict(params=[p for n, p in unet.named_parameters() if not new(n)], lr=args.lr),
              dict(params=[p for n, p in unet.named_parameters() if new(n)] + list(enc.parameters()),
                   lr=args.lr_new)]
    opt = torch.optim.AdamW(groups, weight_decay=1e-2)
    ck = Checkpoint(args.run)
    state = ck.load()
    step = 0
    warm_from = 0
    if state:
        unet.load_state_dict(state["unet"])
        enc.load_state_dict(state["enc"])
        ema.load_state_dict(state["ema"])
        ema_enc.load_state_dict(state["ema_enc"])
        if len(state["opt"]["param_groups"]) == len(opt.param_groups):
            opt.load_state_dict(state["opt"])
        else:
            print("optimiser groups changed: fresh optimiser state, warming up again")
            warm_from = state["step"]
        step = state["step"]
        print("resumed at step", step)
    if args.reset_adapter:
        fresh = attach_mepa(UNet2DConditionModel.from_pretrained(args.init), IMAGE_ENCODER_CONFIG["hidden_size"])
        torch.manual_seed(step)
        fresh.encoder_hid_proj = type(fresh.encoder_hid_proj)(
            [type(fresh.encoder_hid_proj.image_projection_layers[0])(IMAGE_ENCODER_CONFIG["hidden_size"],
                                                                     unet.config.cross_attention_dim)])
        with torch.no_grad():
            for model in (unet, ema):
                model.encoder_hid_proj.load_state_dict(fresh.encoder_hid_proj.state_dict())
                for name, proc in model.attn_processors.items():
                    if name.endswith("attn2.processor"):
                        attn = model.get_submodule(name.removesuffix(".processor"))
                        proc.to_k_ip[0].weight.copy_(attn.to_k.weight)
                        proc.to_v_ip[0].weight.zero_()
        opt = torch.optim.AdamW(groups, weight_decay=1e-2)
        warm_from = step
        print("adapter re-initialised at step", step)
    alphas = sched.alphas_cumprod
    snr_weight = torch.clamp((1 - alphas) / alphas, 1.0, args.snr_weight_max)
    dev = device()
    for m in (unet, enc, ema, ema_enc):
        m.to(dev)
    optimizer_to(opt, dev)
    g = torch.Generator().manual_seed(2000 + step)
    T = tr["context"].shape[1]

    def batch_loss(step):
        idx = torch.randint(0, n, (args.batch,), generator=g)
        z0 = tr["mean"][idx].float()
        ctx = tr["context"][idx].float()
        clen = tr["context_len"][idx].clone()
        use_ref = (torch.rand(args.batch, generator=g) >= args.ref_drop).float()[:, None, None, None]
        p_drop = torch.where(use_ref[:, 0, 0, 0] > 0, args.text_drop_with_ref, args.text_drop)
        drop = torch.rand(args.batch, generator=g) < p_drop
        if drop.any():
            ctx[drop] = empty["context"][0].float()
            clen[drop] = empty["context_len"][0]
        attn = (torch.arange(T)[None] < clen[:, None]).float()
        pixels, keep = reference_batch(refs, ref_masks, idx)
        region = region_all[idx] * use_ref
        noise = torch.randn(z0.shape, generator=g)
        u = torch.rand(args.batch, generator=g) ** args.t_power
        t = (u * sched.config.num_train_timesteps).long().clamp(max=sched.config.num_train_timesteps - 1)
        zt = sched.add_noise(z0, noise, t)
        inp = torch.cat([zt, tr["mask"][idx].float(), tr["masked"][idx].float()], 1)
        inp, t, ctx, attn, noise, pixels, keep, region = (
            v.to(dev) for v in (inp, t, ctx, attn, noise, pixels, keep, region))
        tokens = project(unet, enc(pixels))
        mepa = dict(tokens=tokens, key_mask=keep, region=region, scale=1.0)
        pred = unet(inp, t, ctx, encoder_attention_mask=attn, cross_attention_kwargs=dict(mepa=mepa)).sample
        w = snr_weight[t.cpu()].to(dev)
        return ((pred - noise) ** 2).mean(dim=(1, 2, 3)).mul(w).sum() / w.sum(), {}

    step = loop.train(run=args.run, minutes=args.minutes, opt=opt, params=params, batch_loss=batch_loss,
                      save=lambda step: save(ck, unet, enc, ema, ema_enc, opt, step), step=step,
                      base_lrs=[args.lr, args.lr_new], warmup=100, warm_from=warm_from,
                      ema=[(unet, ema), (enc, ema_enc)], ema_decay=args.ema)
    ema.cpu().save_pretrained(os.path.join(args.run, "unet"))
    ema_enc.cpu().model.save_pretrained(os.path.join(args.run, "image_encoder"))
    print(f"done: step {step}, EMA weights saved to {args.run}/unet and {args.run}/image_encoder")


if __name__ == "__main__":
    main()
