#!/usr/bin/env python3
"""Parity fixtures for the style-reference path (issue #4) into tests/parity/:

- `clip_vision.*`: transformers `CLIPVisionModel` (tiny random config); its last hidden state and
  the one before it (`hidden_states[-2]`, what IP-Adapter Plus reads), for random pixels.
  Weights are saved under `vision_model.` as real checkpoints (CLIPVisionModelWithProjection) spell them.
- `image_projection.*`: diffusers `IPAdapterFullImageProjection` on random tokens.
- `mepa_unet.*`: a tiny inpainting UNet with MEPA projections in every cross-attention, three ways:
  text only (diffusers' standard processor), text + image prompt at λ = 0.6 with diffusers'
  `IPAdapterAttnProcessor2_0` (no mask), and our MEPA processor (training/mepa.py — the code the
  default model is trained with) with a soft region mask at latent resolution.

    HF_HUB_OFFLINE=1 ~/.cache/adcanvas-py/bin/python scripts/make_mepa_fixtures.py
"""
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import IPAdapterFullImageProjection
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "parity"
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "training"))
from make_parity_fixtures import randomize  # noqa: E402
from mepa import attach_mepa  # noqa: E402


def save(name, weights, io, config=None):
    save_file({k: v.detach().contiguous() for k, v in weights.items()}, OUT / f"{name}.weights.safetensors")
    save_file({k: v.detach().contiguous().float() for k, v in io.items()}, OUT / f"{name}.io.safetensors")
    if config is not None:
        (OUT / f"{name}.config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def clip_vision_case(seed=41):
    config = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    torch.manual_seed(seed)
    model = randomize(CLIPVisionModel(CLIPVisionConfig(**config)), seed).eval()
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True)
    weights = {k if k.startswith("vision_model.") else "vision_model." + k: v for k, v in model.state_dict().items()}
    save("clip_vision", weights, {"pixels": pixels, "last": out.last_hidden_state, "penultimate": out.hidden_states[-2]}, config)


def projection_case(seed=43):
    torch.manual_seed(seed)
    proj = randomize(IPAdapterFullImageProjection(image_embed_dim=32, cross_attention_dim=24), seed).eval()
    tokens = torch.randn(2, 17, 32, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        out = proj(tokens)
    save("image_projection", proj.state_dict(), {"tokens": tokens, "output": out})


def mepa_unet_case(seed=47):
    config = dict(sample_size=16, in_channels=9, out_channels=4,
                  down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                  up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                  block_out_channels=[16, 32], layers_per_block=1, attention_head_dim=2,
                  cross_attention_dim=24, norm_num_groups=8, norm_eps=1e-5, use_linear_projection=False,
                  flip_sin_to_cos=True, freq_shift=0)
    torch.manual_seed(seed)
    unet = attach_mepa(UNet2DConditionModel(**config), 32)
    randomize(unet, seed).eval()
    g = torch.Generator().manual_seed(seed + 1)
    sample = torch.randn(2, 9, 16, 16, generator=g)
    text = torch.randn(2, 5, 24, generator=g)
    image = torch.randn(2, 6, 24, generator=g)
    region = torch.rand(2, 1, 16, 16, generator=g)
    t = torch.tensor(411.0)
    scale = 0.6
    weights = unet.state_dict()
    with torch.no_grad():
        mepa = dict(tokens=image, key_mask=torch.ones(2, 6, dtype=torch.bool), region=region, scale=scale)
        ours = unet(sample, t, text, cross_attention_kwargs=dict(mepa=mepa)).sample
        # diffusers' own processors on the same weights.
        procs = {}
        for name, p in unet.attn_processors.items():
            if name.endswith("attn2.processor"):
                attn = unet.get_submodule(name.removesuffix(".processor"))
                ip = IPAdapterAttnProcessor2_0(attn.to_q.out_features, 24, num_tokens=(6,), scale=scale)
                ip.to_k_ip[0].weight.copy_(p.to_k_ip[0].weight)
                ip.to_v_ip[0].weight.copy_(p.to_v_ip[0].weight)
                procs[name] = ip
            else:
                procs[name] = AttnProcessor2_0()
        unet.set_attn_processor(procs)
        ip_adapter = unet(sample, t, (text, [image])).sample
        unet.set_attn_processor(AttnProcessor2_0())
        standard = unet(sample, t, text).sample
    save("mepa_unet", weights, {"sample": sample, "text": text, "image": image, "region": region,
                                "timestep": t.reshape(1), "scale": torch.tensor([scale]),
                                "mepa_region": ours, "ip_adapter": ip_adapter, "standard": standard}, config)


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    clip_vision_case()
    projection_case()
    mepa_unet_case()
    print("wrote clip_vision, image_projection and mepa_unet fixtures to", OUT)
