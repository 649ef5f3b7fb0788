"""Parity fixture for AutoencoderTiny (TAESD architecture): a small random model from
diffusers 0.42.1 (pinned in scripts/parity-requirements.txt), an image, its latents and a
decode. Run with HF_HUB_OFFLINE=1:

    ~/.cache/adcanvas-py/bin/python scripts/make_tiny_vae_fixture.py

Writes tests/parity/tiny_vae.{config.json,weights.safetensors,io.safetensors}.
"""

import json

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


if __name__ == "__main__":
    main()
