"""Trains the depth ControlNet of the default model (docs/METHOD.md §6): a copy of the trained
UNet's down path and mid block (diffusers' `ControlNetModel`, as `ControlNetModel.from_unet`
builds it, with zero-initialised output convs, so it starts by adding nothing) that reads each
ad's depth map (make_dataset.py: rendered depth for procedural products, the mask's pseudo-depth
for photo cut-outs, training/depth.py) and steers the frozen UNet through its residuals.
Resumable and time-boxed like the other training scripts.

    python training/train_controlnet.py --unet training/runs/ref/unet --run training/runs/controlnet --minutes 10

The UNet (with MEPA) stays frozen and runs without a style reference; the caption is dropped
with `--text-drop` so the unconditional half of guidance stays in distribution. The ControlNet's
cross-attention sees the caption's real tokens only (a key mask passed through
`cross_attention_kwargs`, since `ControlNetModel.forward` takes no encoder mask), as the runtime
gives it the prompt at its own length.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import loop  # noqa: E402
from common import SCHEDULER_CONFIG, Run, threads  # noqa: E402
from mepa import load_mepa_unet  # noqa: E402
from train_unet import load_latents  # noqa: E402


class TextMaskedProcessor:
    """diffusers' attention with an optional key mask on the text (`text_mask` [b, T], 1 = real
    token) for cross-attention; self-attention unchanged."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, text_mask=None, **kw):
        b = hidden_states.shape[0]
        ctx = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(ctx), attn.to_v(ctx)
        heads = attn.heads
        q, k, v = (t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
        bias = None
        if encoder_hidden_states is not None and text_mask is not None:
            bias = ((1 - text_mask.float()) * -1e4)[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.transpose(1, 2).reshape(b, -1, heads * out.shape[-1])
        return attn.to_out[1](attn.to_out[0](out))


def controlnet_for(unet):
    """diffusers' `ControlNetModel.from_unet`, copying only the UNet's own weights (the MEPA
    processors' image-prompt projections are not part of a ControlNet)."""
    from diffusers import ControlNetModel

    c = unet.config
    net = ControlNetModel(
        in_channels=c.in_channels, conditioning_channels=3, flip_sin_to_cos=c.flip_sin_to_cos, freq_shift=c.freq_shift,
        down_block_types=c.down_block_types, mid_block_type=c.mid_block_type, block_out_channels=c.block_out_channels,
        layers_per_block=c.layers_per_block, norm_num_groups=c.norm_num_groups, norm_eps=c.norm_eps,
        cross_attention_dim=c.cross_attention_dim, attention_head_dim=c.attention_head_dim,
        num_attention_heads=c.num_attention_heads, use_linear_projection=c.use_linear_projection,
    )
    own = {k: v for k, v in unet.state_dict().items() if ".processor." not in k}
    for part in ("conv_in", "time_embedding", "down_blocks", "mid_block"):
        sub = {k[len(part) + 1:]: v for k, v in own.items() if k.startswith(part + ".")}
        getattr(net, part).load_state_dict(sub)
    net.set_attn_processor(TextMaskedProcessor())
    return net


def main():
    from diffusers import DDPMScheduler

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="training/data")
    ap.add_argument("--vae", default="training/runs/vae/vae")
    ap.add_argument("--unet", default="training/runs/ref/unet", help="the trained UNet with MEPA (frozen)")
    ap.add_argument("--init-pack", default=None,
                    help="start from this pack's ControlNet (e.g. models/default) instead of a copy of the UNet")
    ap.add_argument("--latents", default="training/runs/unet/latents.pt")
    ap.add_argument("--run", default="training/runs/controlnet")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: only the time limit)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--text-drop", type=float, default=0.2)
    ap.add_argument("--t-power", type=float, default=1.0, help="timesteps t = T·u^p, u uniform")
    ap.add_argument("--ema", type=float, default=0.999)
    args = ap.parse_args()
    print("threads", threads())
    os.makedirs(args.run, exist_ok=True)
    lat = load_latents(args.data, args.vae, args.latents)
    tr, empty = lat["train"], lat["empty"]
    d = np.load(os.path.join(args.data, "train.npz"))
    if "depths" not in d:
        sys.exit("the data has no depth maps: rerun training/make_dataset.py")
    depths = d["depths"]
    n = len(tr["mean"])
    assert len(depths) == n
    sched = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k != "set_alpha_to_one"})

    torch.manual_seed(0)
    unet = load_mepa_unet(args.unet).requires_grad_(False)
    net = controlnet_for(unet)
    if args.init_pack:
        import pack

        net.load_state_dict(pack.controlnet(args.init_pack).state_dict())
    run = Run(args.run, net, lr=args.lr, weight_decay=1e-2, key="controlnet", frozen=(unet,))
    ema, opt, step, dev = run.ema, run.opt, run.step, run.device

    g = torch.Generator().manual_seed(3000 + step)
    T = tr["context"].shape[1]

    def batch_loss(step):
        idx = torch.randint(0, n, (args.batch,), generator=g)
        z0 = tr["mean"][idx].float()
        ctx = tr["context"][idx].float()
        clen = tr["context_len"][idx].clone()
        drop = torch.rand(args.batch, generator=g) < args.text_drop
        if drop.any():
            ctx[drop] = empty["context"][0].float()
            clen[drop] = empty["context_len"][0]
        text_mask = (torch.arange(T)[None] < clen[:, None]).float()
        cond = torch.from_numpy(depths[idx.numpy()]).float().div(255)[:, None].expand(-1, 3, -1, -1).contiguous()
        noise = torch.randn(z0.shape, generator=g)
        u = torch.rand(args.batch, generator=g) ** args.t_power
        t = (u * sched.config.num_train_timesteps).long().clamp(max=sched.config.num_train_timesteps - 1)
        zt = sched.add_noise(z0, noise, t)
        inp = torch.cat([zt, tr["mask"][idx].float(), tr["masked"][idx].float()], 1)
        inp, t, ctx, text_mask, noise, cond = (v.to(dev) for v in (inp, t, ctx, text_mask, noise, cond))
        down, mid = net(inp, t, ctx, controlnet_cond=cond, cross_attention_kwargs=dict(text_mask=text_mask),
                        return_dict=False)
        pred = unet(inp, t, ctx, encoder_attention_mask=text_mask, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample
        return F.mse_loss(pred, noise), {}

    step = loop.train(run=args.run, minutes=args.minutes, opt=opt, params=net.parameters(), batch_loss=batch_loss,
                      save=run.save, step=step,
                      base_lrs=[args.lr], warmup=100, ema=run.ema_pairs(), ema_decay=args.ema,
                      max_steps=args.max_steps)
    ema.cpu().save_pretrained(os.path.join(args.run, "controlnet"))
    print(f"done: step {step}, EMA weights saved to {args.run}/controlnet")


if __name__ == "__main__":
    main()
