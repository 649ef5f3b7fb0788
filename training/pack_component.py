"""Puts one component into a pack, leaving every other file of the pack byte for byte as it is:
the cut-out network (train_segmenter.py's RUN/segmenter), a VAE trained in the pack's latent
space (train_decoder.py's RUN/vae: a new decoder for the same encoder), the text encoder
(the frozen MiniLM, e.g. again with its token embeddings in q4), or the depth ControlNet (by
default the pack's own, requantised, e.g. to q4).

    python training/pack_component.py --pack models/default --component segmenter --folder RUN/segmenter --adcanvas BIN
    python training/pack_component.py --pack models/default --component vae --folder RUN/vae --adcanvas BIN
    python training/pack_component.py --pack models/default --component text_encoder --embedding-dtype q4 --adcanvas BIN
    python training/pack_component.py --pack models/default --component controlnet --dtype q4 --adcanvas BIN

The weights go through our converter like every other component (`adcanvas convert`, q8 as the
pack's other files): a diffusers folder holding the pack's own UNet and VAE (needed by the
converter's layout, dequantised; they are not copied back) with FOLDER in the component's place
is converted into a scratch pack, and the component's file, its manifest entry and its config
are merged into PACK's manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import condition_decoder  # noqa: E402
import pack  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pack", default="models/default")
    ap.add_argument("--component", choices=["segmenter", "vae", "text_encoder", "controlnet"], required=True)
    ap.add_argument("--folder", help="the component as a diffusers folder (config.json + safetensors); "
                                     "default for text_encoder: the MiniLM wheel's; for controlnet: the pack's own")
    ap.add_argument("--dtype", default="q8")
    ap.add_argument("--embedding-dtype", default=None, help="the text encoder's token embeddings (default: --dtype)")
    ap.add_argument("--note", required=True, help="what made it, for the manifest's provenance")
    ap.add_argument("--adcanvas", required=True, help="the adcanvas binary")
    args = ap.parse_args()
    if args.component == "text_encoder" and args.folder is None:
        from make_dataset import minilm_dir

        args.folder = minilm_dir()
    scratch = tempfile.mkdtemp(prefix="adcanvas-component-")
    if args.component == "controlnet" and args.folder is None:
        args.folder = os.path.join(scratch, "own-controlnet")
        pack.controlnet(args.pack).save_pretrained(args.folder)
    if args.folder is None:
        ap.error("--folder is needed for this component")
    folder, out = os.path.join(scratch, "diffusers"), os.path.join(scratch, "pack")
    os.makedirs(folder)
    pack.mepa_unet(args.pack).save_pretrained(os.path.join(folder, "unet"))
    if args.component == "vae":
        shutil.copytree(args.folder, os.path.join(folder, "vae"))
    else:
        vae = pack.vae(args.pack)
        condition_decoder.save(vae, pack.vae_condition(args.pack, vae), os.path.join(folder, "vae"))
        if args.component == "text_encoder":
            # The converter reads a text encoder with its tokenizer; the pack's own is kept.
            os.makedirs(os.path.join(folder, "text_encoder"))
            for name in ["config.json", "model.safetensors"]:
                shutil.copy(os.path.join(args.folder, name), os.path.join(folder, "text_encoder", name))
            os.makedirs(os.path.join(folder, "tokenizer"))
            shutil.copy(os.path.join(args.pack, "tokenizer.json"), os.path.join(folder, "tokenizer", "tokenizer.json"))
        else:
            shutil.copytree(args.folder, os.path.join(folder, args.component))
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionInpaintPipeline"}, f)
    subprocess.run([args.adcanvas, "convert", "--diffusers", folder, "--out", out, "--dtype", args.dtype,
                    "--no-verify"] + (["--embedding-dtype", args.embedding_dtype] if args.embedding_dtype else []),
                   check=True)
    converted = pack.manifest(out)
    path = os.path.join(args.pack, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    c = args.component
    manifest[c] = converted[c]
    manifest["files"][c] = converted["files"][c]
    how = f" --embedding-dtype {args.embedding_dtype}" if args.embedding_dtype else ""
    note = f"{args.note} (pack_component.py --component {c}{how})"
    manifest["provenance"] = manifest["provenance"].replace("; see models/", f", {note}; see models/")
    shutil.copy(os.path.join(out, converted["files"][c]["file"]), args.pack)
    with open(path, "w") as f:
        f.write(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(scratch)
    print(f"{c} put into {args.pack}: {converted['files'][c]['bytes'] / 1e6:.2f} MB as {args.dtype}{how}")


if __name__ == "__main__":
    main()
