"""Adds the cut-out network (train_segmenter.py's RUN/segmenter) to a pack, leaving every other
file of the pack byte for byte as it is.

    python training/add_segmenter.py --pack models/default --segmenter RUN/segmenter --adcanvas BIN

The weights go through our converter like every other component (`adcanvas convert`, q8 as the
pack's other files): a diffusers folder holding the pack's own UNet and VAE (needed by the
converter's layout, dequantised; they are not copied back) and `segmenter/` is converted into a
scratch pack, and its `segmenter.safetensors`, its manifest entry and the network's config are
merged into PACK's manifest. Then the pack is loaded once by `adcanvas mask` to prove it reads.
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
    ap.add_argument("--segmenter", required=True, help="a diffusers UNet2DConditionModel folder (train_segmenter.py)")
    ap.add_argument("--dtype", default="q8")
    ap.add_argument("--steps", default="?", help="the segmenter run's steps, for the provenance")
    ap.add_argument("--adcanvas", required=True, help="the adcanvas binary")
    args = ap.parse_args()
    scratch = tempfile.mkdtemp(prefix="adcanvas-segmenter-")
    folder, out = os.path.join(scratch, "diffusers"), os.path.join(scratch, "pack")
    os.makedirs(folder)
    pack.mepa_unet(args.pack).save_pretrained(os.path.join(folder, "unet"))
    vae = pack.vae(args.pack)
    condition_decoder.save(vae, pack.vae_condition(args.pack, vae), os.path.join(folder, "vae"))
    shutil.copytree(args.segmenter, os.path.join(folder, "segmenter"))
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionInpaintPipeline"}, f)
    subprocess.run([args.adcanvas, "convert", "--diffusers", folder, "--out", out, "--dtype", args.dtype,
                    "--no-verify"], check=True)
    converted = pack.manifest(out)
    path = os.path.join(args.pack, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    manifest["segmenter"] = converted["segmenter"]
    manifest["files"]["segmenter"] = converted["files"]["segmenter"]
    note = f"train_segmenter.py ({args.steps} steps) + add_segmenter.py"
    if "train_segmenter.py" not in manifest.get("provenance", ""):
        manifest["provenance"] = manifest["provenance"].replace("; see models/", f", {note}; see models/")
    shutil.copy(os.path.join(out, converted["files"]["segmenter"]["file"]), args.pack)
    with open(path, "w") as f:
        f.write(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(scratch)
    print(f"segmenter added to {args.pack}: {converted['files']['segmenter']['bytes'] / 1e6:.2f} MB as {args.dtype}")


if __name__ == "__main__":
    main()
