"""Parity fixture for AutoencoderTiny (TAESD architecture): a small random model from
diffusers 0.42.1 (pinned in scripts/parity-requirements.txt), an image, its latents and a
decode. Run with HF_HUB_OFFLINE=1:

    ~/.cache/adcanvas-py/bin/python scripts/make_tiny_vae_fixture.py

Writes tests/parity/tiny_vae.{config.json,weights.safetensors,io.safetensors}, and the same for
tiny_vae_condition: that decoder with the product-condition branch of
training/condition_decoder.py (our reference for it), a soft product mask and its decode.
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from make_parity_fixtures import OUT, randomize


def main():
    from diffusers import AutoencoderTiny

    config = dict(in_channels=3, out_channels=3, encoder_block_out_channels=[8, 8, 8], decoder_block_out_channels=[12, 12, 12],
                  num_encoder_blocks=[1, 1, 2], num_decoder_blocks=[2, 1, 1], latent_channels=4, act_fn="relu",
                  upsample_fn="nearest", upsampling_scaling_factor=2, scaling_factor=1.5)
    torch.manual_seed(51)
    vae = randomize(AutoencoderTiny(**config), 51).eval()
    g = torch.Generator().manual_seed(52)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    latents = torch.randn(1, 4, 8, 8, generator=g) * 2
    with torch.no_grad():
        encoded = vae.encoder(image)  # unscaled, as AutoencoderTiny.encode returns it
        decoded = vae.decoder(latents)  # decode() takes unscaled latents
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, OUT / "tiny_vae.weights.safetensors")
    save_file({"image": image, "latents_raw": encoded, "latents": latents, "decoded": decoded}, OUT / "tiny_vae.io.safetensors")
    (OUT / "tiny_vae.config.json").write_text(json.dumps(config, indent=2) + "\n")
    print("tiny vae: latents", tuple(encoded.shape), "decoded", tuple(decoded.shape))

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
    import condition_decoder

    condition = randomize(condition_decoder.new(vae), 53).eval()
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    mask = ((9.5 - ((yy - 14) ** 2 + (xx - 18) ** 2).sqrt()) / 2).clamp(0, 1)[None, None]  # soft-edged disk
    with torch.no_grad():
        conditioned = condition_decoder.decode(vae, condition, latents * config["scaling_factor"], image, mask)
    tensors = {k: v.contiguous() for k, v in vae.state_dict().items()}
    tensors.update({condition_decoder.PREFIX + k: v.contiguous() for k, v in condition.state_dict().items()})
    save_file(tensors, OUT / "tiny_vae_condition.weights.safetensors")
    save_file({"image": image, "mask": mask, "latents": latents, "decoded": conditioned, "plain": decoded},
              OUT / "tiny_vae_condition.io.safetensors")
    (OUT / "tiny_vae_condition.config.json").write_text(json.dumps({**config, condition_decoder.CONFIG_KEY: True}, indent=2) + "\n")
    print("tiny vae with condition: decoded differs from plain by", float((conditioned - decoded).abs().max()))


if __name__ == "__main__":
    main()
