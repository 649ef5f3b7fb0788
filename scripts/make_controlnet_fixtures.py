#!/usr/bin/env python3
"""Parity fixtures for the depth ControlNet into tests/parity/:

- `controlnet.*`: diffusers `ControlNetModel` (tiny random config, every zero conv given
  random values so it is exercised) on 4-channel latents and a 3-channel control image 4× their
  size (the tiny parity VAE's factor, so the converter test can pair them), at conditioning
  scale 0.7: its down-block residuals and mid-block residual.
- `controlnet_unet.*`: a tiny inpainting `UNet2DConditionModel` with the same trunk, run on
  9-channel input with those residuals (`down_block_additional_residuals`,
  `mid_block_additional_residual`) and without them.

Both use one config in the two `*.config.json` files; a second ControlNet config with linear
projections, per-block heads and BGR order checks the options diffusers offers.

    HF_HUB_OFFLINE=1 ~/.cache/adcanvas-py/bin/python scripts/make_controlnet_fixtures.py
"""
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "parity"
sys.path.insert(0, str(ROOT / "scripts"))
from make_parity_fixtures import randomize  # noqa: E402

TRUNK = dict(
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    block_out_channels=[8, 16],
    layers_per_block=2,
    attention_head_dim=2,
    cross_attention_dim=12,
    norm_num_groups=4,
)


def save(name, model, config, io):
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, OUT / f"{name}.weights.safetensors")
    save_file({k: v.detach().contiguous().float() for k, v in io.items()}, OUT / f"{name}.io.safetensors")
    (OUT / f"{name}.config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def case(name, seed, unet_name=None, **overrides):
    trunk = dict(TRUNK, **{k: v for k, v in overrides.items() if k in ("use_linear_projection", "attention_head_dim")})
    config = dict(trunk, in_channels=4, conditioning_channels=3,
                  conditioning_embedding_out_channels=[4, 8, 8],
                  **{k: v for k, v in overrides.items() if k not in trunk})
    torch.manual_seed(seed)
    controlnet = randomize(ControlNetModel(**config), seed).eval()
    g = torch.Generator().manual_seed(seed + 1)
    latents = torch.randn(2, 4, 8, 8, generator=g)
    image = torch.rand(2, 3, 32, 32, generator=g)
    context = torch.randn(2, 7, 12, generator=g)
    timestep, scale = 377.0, 0.7
    with torch.no_grad():
        down, mid = controlnet(latents, timestep, encoder_hidden_states=context, controlnet_cond=image,
                               conditioning_scale=scale, return_dict=False)
    io = {"latents": latents, "image": image, "context": context,
          "timestep": torch.tensor([timestep]), "scale": torch.tensor([scale]), "mid": mid}
    io.update({f"down.{i}": d for i, d in enumerate(down)})
    save(name, controlnet, config, io)

    if unet_name:
        unet_config = dict(trunk, sample_size=8, in_channels=9, out_channels=4,
                           up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"])
        torch.manual_seed(seed + 2)
        unet = randomize(UNet2DConditionModel(**unet_config), seed + 2).eval()
        sample = torch.cat([latents, torch.rand(2, 1, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)], 1)
        with torch.no_grad():
            plain = unet(sample, timestep, encoder_hidden_states=context).sample
            controlled = unet(sample, timestep, encoder_hidden_states=context,
                              down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        save(unet_name, unet, unet_config, {"sample": sample, "context": context, "timestep": torch.tensor([timestep]),
                                            "plain": plain, "controlled": controlled})


if __name__ == "__main__":
    case("controlnet", 61, unet_name="controlnet_unet")
    case("controlnet_linear_bgr", 67, use_linear_projection=True, attention_head_dim=[2, 4],
         controlnet_conditioning_channel_order="bgr")
    print("wrote", sorted(p.name for p in OUT.glob("controlnet*")))
