"""MEPA and PFV as training code: the same equations the runtime computes (docs/METHOD.md §5, §6).

- The style reference is encoded by a small CLIP vision transformer (transformers'
  `CLIPVisionModel`, patch 16 on 128² → 8×8 patch tokens + CLS) and projected per token to the
  UNet's cross-attention width by diffusers' `IPAdapterFullImageProjection` (FeedForward(gelu) +
  LayerNorm), stored in the UNet as `encoder_hid_proj.image_projection_layers.0.*`.
- PFV: a 16×16 patch of the reference is hidden when any of its pixels is product (θ = 0); hidden
  patches are filled with grey 128 before encoding, and their tokens are dropped (here: masked out of
  the attention keys, which is the same thing for one sample; the runtime removes them).
- MEPA: every cross-attention adds the image-prompt branch through its own `to_k_ip`/`to_v_ip`
  (diffusers' names, `<attn>.processor.to_k_ip.0.weight`), weighted by λ and by the region mask
  M_i = background (1 − product alpha) area-averaged to the layer's resolution:
      out = W_o( Attn(Q, K_t, V_t) + λ · M_i ⊙ Attn(Q, K_i, V_i) ) + b_o
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REF_SIZE = 128
PFV_PATCH = 16

# The style-reference encoder: transformers CLIPVisionConfig fields. Its last hidden state (all
# layers, before post_layernorm) feeds the projection.
IMAGE_ENCODER_CONFIG = dict(
    hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
    num_channels=3, image_size=REF_SIZE, patch_size=PFV_PATCH, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, projection_dim=128,
)
# Normalisation of the reference's pixels (as a CLIP image processor would with these values).
IMAGE_MEAN = [0.5, 0.5, 0.5]
IMAGE_STD = [0.5, 0.5, 0.5]


def pfv_visible(ref_masks_u8, patch=PFV_PATCH):
    """PFV with θ = 0 on product masks (u8, [n, H, W]): [n, H/p, W/p] bool, True = visible.
    Decision value 1 − a/255 counts as a zero when < 0.5, i.e. when a > 127.5."""
    n, h, w = ref_masks_u8.shape
    zero = ref_masks_u8 > 127
    per_patch = zero.reshape(n, h // patch, patch, w // patch, patch).any(axis=(2, 4))
    return ~per_patch


def pfv_fill(ref_u8, visible, patch=PFV_PATCH):
    """Hidden patches of the reference become grey 128."""
    pix = np.repeat(np.repeat(visible, patch, axis=1), patch, axis=2)
    return np.where(pix[..., None], ref_u8, np.uint8(128))


def to_pixels(ref_u8):
    x = torch.from_numpy(np.ascontiguousarray(ref_u8)).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(IMAGE_MEAN)[None, :, None, None]
    std = torch.tensor(IMAGE_STD)[None, :, None, None]
    return (x - mean) / std


class ReferenceEncoder(nn.Module):
    """CLIP vision transformer; returns all tokens (CLS first) of its last layer."""

    def __init__(self):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        self.model = CLIPVisionModel(CLIPVisionConfig(**IMAGE_ENCODER_CONFIG))

    def forward(self, pixels):
        return self.model(pixel_values=pixels).last_hidden_state


class MepaAttnProcessor(nn.Module):
    """Self-attention: the standard processor. Cross-attention: text + region-masked image prompt."""

    def __init__(self, hidden_size=None, cross_attention_dim=None):
        super().__init__()
        self.cross = hidden_size is not None
        if self.cross:
            self.to_k_ip = nn.ModuleList([nn.Linear(cross_attention_dim, hidden_size, bias=False)])
            self.to_v_ip = nn.ModuleList([nn.Linear(cross_attention_dim, hidden_size, bias=False)])

    @staticmethod
    def _attend(attn, q, k, v, key_bias):
        b = q.shape[0]
        heads = attn.heads
        q, k, v = (t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias)
        return out.transpose(1, 2).reshape(b, -1, heads * out.shape[-1])

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, mepa=None, **kw):
        assert attn.group_norm is None and attn.spatial_norm is None and not attn.residual_connection
        q = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            ctx = hidden_states
            bias = None
        else:
            ctx = encoder_hidden_states
            # diffusers passes the text key mask as an additive [b, 1, T] bias.
            bias = None if attention_mask is None else attention_mask[:, None]
        out = self._attend(attn, q, attn.to_k(ctx), attn.to_v(ctx), bias)
        if encoder_hidden_states is not None and mepa is not None and self.cross:
            ip = mepa["tokens"]
            ip_bias = (1 - mepa["key_mask"].float())[:, None, None] * -1e4
            out_ip = self._attend(attn, q, self.to_k_ip[0](ip), self.to_v_ip[0](ip), ip_bias)
            out = out + mepa["scale"] * region_weights(mepa["region"], q.shape[1]) * out_ip
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


def region_weights(region, queries):
    """The latent-resolution region mask [b, 1, H, W] area-averaged to a layer with `queries`
    positions (an integer downscale of both sides), as [b, queries, 1]."""
    b, _, h, w = region.shape
    f = int(round(math.sqrt(h * w / queries)))
    assert (h // f) * (w // f) == queries, (h, w, queries)
    r = region if f == 1 else F.avg_pool2d(region, f)
    return r.reshape(b, queries, 1)


def background_region(masks_u8, factor=8):
    """M_i at latent resolution: background = 1 − alpha, area-averaged over each f×f cell."""
    bg = 1 - torch.from_numpy(masks_u8).float()[:, None] / 255
    return F.avg_pool2d(bg, factor)


def attach_mepa(unet, image_embed_dim):
    """Adds MEPA processors (to_k_ip from to_k, to_v_ip zero: the model starts exactly as it was)
    and the per-token image projection to a diffusers UNet."""
    from diffusers.models.embeddings import IPAdapterFullImageProjection, MultiIPAdapterImageProjection

    procs = {}
    for name, module in unet.attn_processors.items():
        attn = unet.get_submodule(name.removesuffix(".processor"))
        if name.endswith("attn2.processor"):
            p = MepaAttnProcessor(attn.to_q.out_features, attn.to_k.in_features)
            with torch.no_grad():
                p.to_k_ip[0].weight.copy_(attn.to_k.weight)
                p.to_v_ip[0].weight.zero_()
            procs[name] = p
        else:
            procs[name] = MepaAttnProcessor()
    unet.set_attn_processor(procs)
    cross = unet.config.cross_attention_dim
    unet.encoder_hid_proj = MultiIPAdapterImageProjection([IPAdapterFullImageProjection(image_embed_dim, cross)])
    return unet


def project(unet, hidden):
    return unet.encoder_hid_proj.image_projection_layers[0](hidden)


def load_mepa_unet(folder):
    """A UNet saved with MEPA weights (diffusers drops the unknown keys; we put them back)."""
    import os

    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    unet = UNet2DConditionModel.from_pretrained(folder)
    attach_mepa(unet, IMAGE_ENCODER_CONFIG["hidden_size"])
    state = load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))
    missing, unexpected = unet.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing[:5], unexpected[:5])
    return unet.eval()
