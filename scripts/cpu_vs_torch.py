#!/usr/bin/env python3
"""PyTorch's side of the CPU comparison (issue 30): a pack's own UNet and VAE decoder, its real
weights dequantised to f32, run by diffusers in PyTorch eager on the CPU at a fixed thread count,
on the shapes a 256² ad runs: one UNet call at batch 2 (classifier-free guidance) with 128 text
tokens and no ControlNet, the depth ControlNet's call on the same batch (its residuals, with the
control image at the ad's size), and one whole VAE decode. Saves the inputs and outputs for
`adcanvas parity` (which times ours on the same inputs and checks the outputs agree) and prints
PyTorch's timings as JSON. scripts/bench_cpu.sh runs both and prints the ratio.

    python scripts/cpu_vs_torch.py --pack models/default --out /tmp/cpu --threads 2
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import diffusers
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
import pack  # noqa: E402


def timed(fn, repeats):
    """Milliseconds of each of `repeats` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(round((time.perf_counter() - start) * 1000, 2))
    return times


def plain_unet(pack_dir):
    """The pack's UNet as diffusers builds it from the manifest, without the MEPA processors: a
    UNet call with text tokens only, which is what ours runs when there is no style reference."""
    unet = UNet2DConditionModel(**pack.manifest(pack_dir)["unet"]).eval()
    state = pack.load_component(pack_dir, "unet", unet.state_dict())
    missing, _ = unet.load_state_dict(state, strict=False)
    if missing:
        raise SystemExit(f"{pack_dir}: the pack's UNet lacks {missing[:5]}…")
    return unet


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pack", default="models/default")
    ap.add_argument("--out", required=True, help="folder for io.safetensors and torch.json")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch's intra-op threads")
    ap.add_argument("--size", type=int, default=256, help="the ad's side in pixels")
    ap.add_argument("--tokens", type=int, default=128, help="text tokens in the UNet's context")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=30)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    unet = plain_unet(args.pack)
    vae = pack.vae(args.pack)
    cfg = unet.config
    side = args.size // 8
    g = torch.Generator().manual_seed(args.seed)
    sample = torch.randn(2, cfg.in_channels, side, side, generator=g)
    context = torch.randn(2, args.tokens, cfg.cross_attention_dim, generator=g)
    latents = torch.randn(1, vae.config.latent_channels, side, side, generator=g)
    timestep = 501.0
    unet_out = unet(sample, timestep, encoder_hidden_states=context).sample
    decoded = vae.decode(latents).sample
    io = {
        "sample": sample, "context": context, "timestep": torch.tensor([timestep]), "latents": latents,
        "unet_out": unet_out.contiguous(), "decoded": decoded.contiguous(),
    }
    # The depth ControlNet on the UNet's batch, as a step with the product's depth runs it: its
    # residuals (down blocks in order, then the mid block) flattened into one row, at scale 1.
    controlnet = pack.controlnet(args.pack).eval() if "controlnet" in pack.manifest(args.pack) else None
    if controlnet is not None:
        control_image = torch.rand(2, controlnet.config.conditioning_channels, args.size, args.size, generator=g)

        def control():
            down, mid = controlnet(sample[:, :controlnet.config.in_channels], timestep, encoder_hidden_states=context,
                                   controlnet_cond=control_image, conditioning_scale=1.0, return_dict=False)
            return torch.cat([r.flatten() for r in [*down, mid]]).reshape(1, 1, 1, -1)

        io.update({"control_image": control_image, "control_out": control().contiguous()})
    save_file(io, out / "io.safetensors")

    unet_ms = timed(lambda: unet(sample, timestep, encoder_hidden_states=context), args.repeats)
    controlnet_ms = timed(control, args.repeats) if controlnet is not None else None
    vae_ms = timed(lambda: vae.decode(latents), args.repeats)
    report = {
        "pack": args.pack, "processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "diffusers": diffusers.__version__,
        "shapes": {"sample": list(sample.shape), "context": list(context.shape), "latents": list(latents.shape)},
        "unet_ms": unet_ms, "unet_median_ms": statistics.median(unet_ms),
        "controlnet_ms": controlnet_ms, "controlnet_median_ms": controlnet_ms and statistics.median(controlnet_ms),
        "vae_decode_ms": vae_ms, "vae_decode_median_ms": statistics.median(vae_ms),
    }
    (out / "torch.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
