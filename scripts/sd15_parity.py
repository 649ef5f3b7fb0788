#!/usr/bin/env python3
"""Full-size parity inputs: a Stable Diffusion 1.5 inpainting UNet and VAE with random
weights, written as a diffusers folder for `adcanvas convert`, plus one UNet step at 512²
(batch 2) and one VAE decode run by PyTorch, saved for `adcanvas parity`.

Real SD 1.5 weights cannot be downloaded here, so the architecture is checked on random
ones (PyTorch's default initialisation, seeded). scripts/sd15_parity.sh runs the whole
check; `--config tiny` is a small stand-in for trying the script on a CPU.

    HF_HUB_OFFLINE=1 python3 scripts/sd15_parity.py --out /tmp/sd15 --device cuda
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import diffusers
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_parity_fixtures import diffusers_folder  # noqa: E402

# runwayml/stable-diffusion-inpainting's unet/config.json and vae/config.json (the fields
# that differ from diffusers' defaults are all spelled out).
SD15_UNET = dict(
    sample_size=64, in_channels=9, out_channels=4, layers_per_block=2,
    block_out_channels=[320, 640, 1280, 1280], attention_head_dim=8, cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    norm_num_groups=32, norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0, downsample_padding=1,
    act_fn="silu", center_input_sample=False, mid_block_scale_factor=1,
)
SD15_VAE = dict(
    sample_size=512, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=[128, 256, 512, 512], norm_num_groups=32, act_fn="silu", scaling_factor=0.18215,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
)
# The same structure, small enough for a CPU (the script's own smoke test).
TINY_UNET = dict(SD15_UNET, sample_size=16, block_out_channels=[32, 32, 64, 64], attention_head_dim=4,
                 cross_attention_dim=32, norm_num_groups=8)
TINY_VAE = dict(SD15_VAE, sample_size=64, block_out_channels=[16, 16, 32, 32], norm_num_groups=8)


def timed(fn, device, repeats):
    """Milliseconds of each of `repeats` runs after one warm-up, synchronising the GPU."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(round((time.perf_counter() - start) * 1000, 1))
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for diffusers/, io.safetensors and torch.json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--config", choices=["sd15", "tiny"], default="sd15")
    ap.add_argument("--batch", type=int, default=2, help="UNet batch (2 = classifier-free guidance)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1505)
    ap.add_argument("--vae-tile", type=int, default=None,
                    help="latent tile side of the tiled VAE decode also saved (default: 44 for sd15, the largest "
                         "whose activations fit a 128 MiB WebGPU binding, as adcanvas picks it; 8 for tiny)")
    ap.add_argument("--f64", action="store_true",
                    help="also run both models in float64 and report how far PyTorch's own f32 outputs are from it")
    args = ap.parse_args()

    # Plain IEEE f32 on the GPU: TF32 matrix products would differ from ours by ~1e-3 by design.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    out = Path(args.out)
    folder = out / "diffusers"
    unet_cfg, vae_cfg = (SD15_UNET, SD15_VAE) if args.config == "sd15" else (TINY_UNET, TINY_VAE)

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    with device:
        unet = UNet2DConditionModel(**unet_cfg).eval()
        vae = AutoencoderKL(**vae_cfg).eval()
    diffusers_folder(unet, vae, folder)
    build_s = time.perf_counter() - started

    g = torch.Generator().manual_seed(args.seed + 1)
    side = unet_cfg["sample_size"]
    sample = torch.randn(args.batch, unet_cfg["in_channels"], side, side, generator=g)
    context = torch.randn(args.batch, 77, unet_cfg["cross_attention_dim"], generator=g)
    latents = torch.randn(1, vae_cfg["latent_channels"], side, side, generator=g)
    timestep = 501.0
    s, c, z = sample.to(device), context.to(device), latents.to(device)
    unet_out = unet(s, timestep, encoder_hidden_states=c).sample
    decoded = vae.decode(z).sample
    # diffusers' tiled decode (`enable_tiling()`) with the tile side adcanvas would use.
    tile = args.vae_tile or (44 if args.config == "sd15" else 8)
    scale = 2 ** (len(vae_cfg["block_out_channels"]) - 1)

    def decode_tiled():
        vae.enable_tiling()
        vae.tile_latent_min_size, vae.tile_sample_min_size = tile, tile * scale
        try:
            return vae.decode(z).sample
        finally:
            vae.disable_tiling()

    decoded_tiled = decode_tiled()
    # Written under another name and renamed, so a script waiting for io.safetensors never reads half a file.
    save_file({
        "sample": sample, "context": context, "timestep": torch.tensor([timestep]), "latents": latents,
        "unet_out": unet_out.float().cpu().contiguous(), "decoded": decoded.float().cpu().contiguous(),
        "vae_tile": torch.tensor([float(tile)]), "decoded_tiled": decoded_tiled.float().cpu().contiguous(),
    }, out / "io.safetensors.part")
    (out / "io.safetensors.part").rename(out / "io.safetensors")

    report = {
        "config": args.config, "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__, "diffusers": diffusers.__version__,
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "vae_parameters": sum(p.numel() for p in vae.parameters()),
        "build_and_save_s": round(build_s, 1),
        "shapes": {"sample": list(sample.shape), "context": list(context.shape), "latents": list(latents.shape)},
        "unet_f32_ms": timed(lambda: unet(s, timestep, encoder_hidden_states=c), device, args.repeats),
        "vae_decode_f32_ms": timed(lambda: vae.decode(z), device, args.repeats),
        "vae_tile": tile,
        "vae_decode_tiled_f32_ms": timed(decode_tiled, device, args.repeats),
    }
    if args.f64:
        # How far f32 itself is from exact: the scale against which our difference is judged.
        unet.double()
        vae.double()
        u64 = unet(s.double(), timestep, encoder_hidden_states=c.double()).sample
        d64 = vae.decode(z.double()).sample
        report["torch_f32_vs_f64_max_abs"] = {"unet": (unet_out.double() - u64).abs().max().item(),
                                              "vae_decode": (decoded.double() - d64).abs().max().item()}
    if device.type == "cuda":
        report["peak_cuda_mb_f32"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        unet.half()
        vae.half()
        report["unet_f16_ms"] = timed(lambda: unet(s.half(), timestep, encoder_hidden_states=c.half()), device, args.repeats)
        report["vae_decode_f16_ms"] = timed(lambda: vae.decode(z.half()), device, args.repeats)
    (out / "torch.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
