"""Puts one component into a pack, leaving every other file of the pack byte for byte as it is:
the cut-out network (train_segmenter.py's RUN/segmenter) or a VAE trained in the pack's latent
space (train_decoder.py's RUN/vae: a new decoder for the same encoder).

    python training/pack_component.py --pack models/default --component segmenter --folder RUN/segmenter --adcanvas BIN
    python training/pack_component.py --pack models/default --component vae --folder RUN/vae --adcanvas BIN

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
    ap.add_argument("--component", choices=["segmenter", "vae"], required=True)
    ap.add_argument("--folder", required=True, help="the component as a diffusers folder (config.json + safetensors)")
    ap.add_argument("--dtype", default="q8")
    ap.add_argument("--note", required=True, help="what made it, for the manifest's provenance")
    ap.add_argument("--adcanvas", required=True, help="the adcanvas binary")
    args = ap.parse_args()
    scratch = tempfile.mkdtemp(prefix="adcanvas-component-")
    folder, out = os.path.join(scratch, "diffusers"), os.path.join(scratch, "pack")
    os.makedirs(folder)
    pack.mepa_unet(args.pack).save_pretrained(os.path.join(folder, "unet"))
    if args.component == "vae":
        shutil.copytree(args.folder, os.path.join(folder, "vae"))
    else:
        vae = pack.vae(args.pack)
        condition_decoder.save(vae, pack.vae_condition(args.pack, vae), os.path.join(folder, "vae"))
        shutil.copytree(args.folder, os.path.join(folder, args.component))
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionInpaintPipeline"}, f)
    subprocess.run([args.adcanvas, "convert", "--diffusers", folder, "--out", out, "--dtype", args.dtype,
                    "--no-verify"], check=True)
    converted = pack.manifest(out)
    path = os.path.join(args.pack, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    c = args.component
    manifest[c] = converted[c]
    manifest["files"][c] = converted["files"][c]
    note = f"{args.note} (pack_component.py --component {c})"
    manifest["provenance"] = manifest["provenance"].replace("; see models/", f", {note}; see models/")
    shutil.copy(os.path.join(out, converted["files"][c]["file"]), args.pack)
    with open(path, "w") as f:
        f.write(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(scratch)
    print(f"{c} put into {args.pack}: {converted['files'][c]['bytes'] / 1e6:.2f} MB as {args.dtype}")


if __name__ == "__main__":
    main()
