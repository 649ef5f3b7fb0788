"""AutoencoderTiny's decoder with a product-condition branch: the mask-conditioned decoder of
AsymmetricAutoencoderKL (Zhu et al. 2023, "Designing a Better Asymmetric VQGAN for
StableDiffusion"; diffusers' `MaskConditionEncoder`/`MaskConditionDecoder`) built for TAESD.

Why: the frozen 8-channel encoder bounds what any decoder can recover from the latents alone
(26.8 dB inside the product, docs/EVAL.md). The decoder of an inpainting model can instead read
the pixels it is meant to keep: a small encoder turns the masked product image into features at
each decoder resolution, and a mask-guided blend replaces the decoder's own features by them
inside the product, before each level's blocks and before the output conv:

    h ← h · (1 − m_l) + c_l · m_l,      m_l = nearest-downsampled product mask (1 on the product)

diffusers' mask is 1 where the image is generated, so its `h · mask + c · (1 − mask)` is the same
blend. Two choices of ours: the condition encoder also reads the mask (4 input channels: the
product in [-1, 1] with 0 elsewhere, and the mask), so a grey product pixel differs from "no
product"; and all its outputs are the decoder's width, since TAESD's decoder is one width.

Layout (levels L, width C): `condition_encoder.layers.0` is a 3×3 conv 4 → C at full resolution,
`layers.1 … L−1` are 4×4 stride-2 convs C → C; each output (before its ReLU) is the feature of its
resolution. The runtime (src/vae_tiny.rs) loads them as `decoder.condition_encoder.layers.N.*`.
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F

CONFIG_KEY = "mask_condition"  # in the VAE's config.json: true when the condition branch is present
PREFIX = "decoder.condition_encoder."


class ConditionEncoder(torch.nn.Module):
    """Masked product image and mask → one feature map per decoder resolution, full size first."""

    def __init__(self, channels: int, levels: int, image_channels: int = 3):
        super().__init__()
        convs = [torch.nn.Conv2d(image_channels + 1, channels, 3, 1, 1)]
        convs += [torch.nn.Conv2d(channels, channels, 4, 2, 1) for _ in range(levels - 1)]
        self.layers = torch.nn.Sequential(*convs)

    def forward(self, image, mask):
        x = torch.cat([image * mask, mask], 1)
        feats = {}
        for conv in self.layers:
            x = conv(x)
            feats[x.shape[-1]] = x
            x = torch.relu(x)
        return feats


def blend(h, feats, mask):
    m = F.interpolate(mask, size=h.shape[-2:], mode="nearest")
    return h * (1 - m) + feats[h.shape[-1]] * m


def decode(vae, condition, latents, image=None, mask=None):
    """`vae.decode(latents / scaling_factor)` in [-1, 1]; with `condition` (a ConditionEncoder) and
    the product's `image` ([-1, 1], B×3×H×W) and `mask` ([0, 1], B×1×H×W), the blended decode."""
    if condition is None:
        return vae.decode(latents / vae.config.scaling_factor).sample
    feats = condition(image, mask)
    x = torch.tanh(latents / vae.config.scaling_factor / 3) * 3
    layers = list(vae.decoder.layers)
    after_block = False
    for k, layer in enumerate(layers):
        is_block = layer.__class__.__name__ == "AutoencoderTinyBlock"
        if (is_block and not after_block) or k == len(layers) - 1:
            x = blend(x, feats, mask)
        x = layer(x)
        after_block = is_block
    return x.mul(2).sub(1)


def new(vae) -> ConditionEncoder:
    c = vae.config.decoder_block_out_channels
    return ConditionEncoder(c[0], len(c), vae.config.out_channels)


def save(vae, condition, folder):
    """`vae.save_pretrained(folder)` with the branch's weights added to its safetensors and
    `mask_condition: true` to its config (diffusers ignores both when it loads the folder)."""
    from safetensors.torch import load_file, save_file

    vae.save_pretrained(folder)
    path = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    tensors = load_file(path)
    tensors.update({PREFIX + k: v.contiguous() for k, v in condition.state_dict().items()})
    save_file(tensors, path)
    cfg_path = os.path.join(folder, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg[CONFIG_KEY] = True
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)


def load(vae, tensors: dict) -> ConditionEncoder | None:
    """The branch from a VAE's tensors (a folder's safetensors or a pack's), or None without one."""
    own = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
    if not own:
        return None
    condition = new(vae)
    condition.load_state_dict({k: v.float() for k, v in own.items()})
    return condition.eval()


def load_folder(vae, folder) -> ConditionEncoder | None:
    """The branch of a VAE folder saved by `save` (`pack.load_condition` also takes a pack's)."""
    from safetensors.torch import load_file

    return load(vae, load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors")))
