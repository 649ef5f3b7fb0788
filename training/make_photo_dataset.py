"""Builds a photographic training and held-out set, in make_dataset.py's format.

    training/fetch_photo_data.sh                      # once: apt-get download + dpkg -x, no install
    python training/make_photo_dataset.py --out training/data/photo --train 6000 --heldout 300

Writes `train.npz` / `heldout.npz` with exactly the keys, shapes and dtypes make_dataset.py writes
(images, masks, context, context_len, ref_images, ref_masks, depths, captions, labels, sources), so
train_unet.py / train_reference.py / train_controlnet.py take `--data training/data/photo`
unchanged; plus `empty_prompt.npz`, `products.json` (the product split, as make_dataset.py
writes it, with the photo split added) and `photo_scenes.json` (each ad's backdrop, surface and
layout, in the npz order).

The trainers cache latents per run folder (`--latents`, train_unet.py: RUN/latents.pt): give photo
runs their own run folder and `--latents`, or they reuse the procedural set's latents.

Scenes: photo_scenes.py (a real photograph behind, a real surface texture under a product
cut-out from `tuxpaint-stamps-default`). `--mix-procedural F` draws that share of the ads from
scenes.py's procedural scenes instead, with products and references exactly as make_dataset.py
makes them. Labels are the backdrop's scene kind (lake, mountains, flowers, ...) for photo
scenes, scenes.py's labels for procedural ones; `sources` names the product, as in make_dataset.py.

Held out, never in training: every 10th stamp (make_dataset.py's rule), the rendered "cup"
(procedural share only), and ~10 % of the photographs and of the surface textures
(photo_sources.split: the smallest SHA-1 of each source's id, per use); held-out ads are
drawn from other seeds.

Each ad's style reference (`ref_images`, `ref_masks`, 128²) is the same scene replayed from the
same generator state (same crop, surface and light), mirrored and zoomed, with another product.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_dataset  # noqa: E402
import photo_scenes  # noqa: E402
import photo_sources  # noqa: E402
import scenes  # noqa: E402

REF_SIZE = make_dataset.REF_SIZE
STAMPS_SUBDIR = "usr/share/tuxpaint/stamps"
UNPACKED_STAMPS = os.path.join(photo_sources.DEFAULT_ROOTS[0], "tuxpaint-stamps-default", STAMPS_SUBDIR)
PHOTO_RENDERED = 0.0  # photo scenes use the stamps' photo cut-outs, not the flat rendered products


def _zoomed(img, m, rng, size):
    from PIL import Image

    zoom = rng.uniform(1.0, 1.3)
    side = int(size / zoom)
    x0, y0 = rng.integers(0, size - side + 1, size=2)
    crop = (int(x0), int(y0), int(x0) + side, int(y0) + side)
    im = Image.fromarray((img * 255 + 0.5).astype(np.uint8)).crop(crop).resize((REF_SIZE, REF_SIZE), Image.BICUBIC)
    mk = Image.fromarray((m * 255 + 0.5).astype(np.uint8)).crop(crop).resize((REF_SIZE, REF_SIZE), Image.BILINEAR)
    return np.asarray(im), np.asarray(mk)


def photo_reference_for(scene_state, lib, products, rng, size):
    """make_dataset.reference_for for a photo scene: the same scene replayed, mirrored, another product, zoomed."""
    replay = np.random.default_rng()
    replay.bit_generator.state = scene_state
    scene = photo_scenes.make_photo_scene(replay, lib, size)
    scene.image = scene.image[:, ::-1].copy()
    scene.side = -scene.side
    art = products[rng.integers(len(products))]
    img, m, _box = photo_scenes.place_in_photo(scene, art, rng, size)
    return _zoomed(img, m, rng, size)


def build(n, seed, sources_ids, products, photo_prods, rendered_kinds, size, mix, roots):
    """n ads from generator `seed`: photo scenes from the sources with these ids and the `photo_prods`
    stamps; a `mix` share procedural, with `products` and `rendered_kinds` as make_dataset.py uses them."""
    table = {s.id: s for s in photo_sources.load_table()}
    lib = photo_scenes.load_library([table[i] for i in sources_ids], size, roots)
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    ref_images = np.zeros((n, REF_SIZE, REF_SIZE, 3), np.uint8)
    ref_masks = np.zeros((n, REF_SIZE, REF_SIZE), np.uint8)
    depths = np.zeros((n, size, size), np.uint8)
    captions, labels, sources, metas = [], [], [], []
    for i in range(n):
        ref_rng = np.random.default_rng([seed, 7, i])  # references draw from their own stream
        procedural = mix > 0 and rng.random() < mix
        scene_state = rng.bit_generator.state
        if procedural:
            ref_images[i], ref_masks[i] = make_dataset.reference_for(scene_state, products, rendered_kinds, ref_rng,
                                                                     size)
            scene = scenes.make_scene(rng, size, size)
            if rng.random() < 0.55:
                art = products[rng.integers(len(products))]
            else:
                art, _depth = scenes.render_product(rng, rendered_kinds[rng.integers(len(rendered_kinds))])
            img, m, box = scenes.place(scene, art, rng, size, size)
            caption = make_dataset.caption_for(rng, art.name, scene)
            metas.append({"mode": "procedural", "label": scene.label})
        else:
            ref_images[i], ref_masks[i] = photo_reference_for(scene_state, lib, photo_prods, ref_rng, size)
            scene = photo_scenes.make_photo_scene(rng, lib, size)
            if PHOTO_RENDERED and rng.random() < PHOTO_RENDERED:
                art, _depth = scenes.render_product(rng, rendered_kinds[rng.integers(len(rendered_kinds))])
            else:
                art = photo_prods[rng.integers(len(photo_prods))]
            img, m, box = photo_scenes.place_in_photo(scene, art, rng, size)
            caption = photo_scenes.caption_for(rng, art.name, scene)
            metas.append(scene.meta)
        images[i] = (img * 255 + 0.5).astype(np.uint8)
        masks[i] = (m * 255 + 0.5).astype(np.uint8)
        depths[i] = (scenes.placed_depth(art, m, box) * 255 + 0.5).astype(np.uint8)
        captions.append(caption)
        labels.append(scene.label)
        sources.append(art.source)
    return images, masks, ref_images, ref_masks, depths, captions, labels, sources, metas


def build_parallel(n, seed, sources_ids, products, photo_prods, rendered_kinds, size, mix, roots, workers):
    if workers <= 1:
        return build(n, seed, sources_ids, products, photo_prods, rendered_kinds, size, mix, roots)
    from concurrent.futures import ProcessPoolExecutor

    counts = [n // workers + (k < n % workers) for k in range(workers)]
    with ProcessPoolExecutor(workers) as ex:
        parts = list(ex.map(build, counts, [seed * 1000 + k + 1 for k in range(workers)], [sources_ids] * workers,
                            [products] * workers, [photo_prods] * workers, [rendered_kinds] * workers,
                            [size] * workers, [mix] * workers, [roots] * workers))
    arrays = [np.concatenate([p[j] for p in parts]) for j in range(5)]
    lists = [sum((p[j] for p in parts), []) for j in range(5, 9)]
    return (*arrays, *lists)


def contact_sheet(out_dir, path, n_train=12, n_held=4, thumb=192, cols=4):
    """A JPEG of the first ads of each split with their captions (docs/training/photo_samples.jpg)."""
    import textwrap

    from PIL import Image, ImageDraw

    items = []
    for split, n in [("train", n_train), ("heldout", n_held)]:
        d = np.load(os.path.join(out_dir, f"{split}.npz"))
        items += [(split, d["images"][i], str(d["captions"][i])) for i in range(min(n, len(d["images"])))]
    rows = (len(items) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * thumb, rows * (thumb + 52)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (split, img, cap) in enumerate(items):
        x, y = (k % cols) * thumb, (k // cols) * (thumb + 52)
        sheet.paste(Image.fromarray(img).resize((thumb, thumb), Image.LANCZOS), (x, y))
        text = ("[held out] " if split == "heldout" else "") + cap
        for j, line in enumerate(textwrap.wrap(text, thumb // 6)[:4]):
            draw.text((x + 3, y + thumb + 2 + 12 * j), line, fill="firebrick" if split == "heldout" else "black")
    sheet.save(path, quality=82, optimize=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="training/data/photo")
    ap.add_argument("--train", type=int, default=6000)
    ap.add_argument("--heldout", type=int, default=300)
    ap.add_argument("--size", type=int, default=256, help="ad side in pixels (a multiple of 64)")
    ap.add_argument("--stamps", help="tuxpaint stamps folder (default: the installed package's, else the one "
                                     "fetch_photo_data.sh unpacked under the photo root)")
    ap.add_argument("--photo-root", action="append",
                    help="folder holding the unpacked packages as ROOT/PACKAGE/usr/... (repeatable; "
                         f"default {photo_sources.DEFAULT_ROOTS[0]}, then the installed /usr/...)")
    ap.add_argument("--mix-procedural", type=float, default=0.0,
                    help="share of ads drawn from scenes.py's procedural scenes")
    ap.add_argument("--text-encoder", default="minilm",
                    help="'minilm' (the PyPI wheel, f32) or a pack folder whose q8 text encoder to use")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="added to the split seeds (train 11, held out 12)")
    ap.add_argument("--sheet", help="also write a contact sheet (JPEG) of the first ads of each split here")
    args = ap.parse_args()
    if args.size % 64:
        sys.exit(f"--size {args.size}: must be a multiple of 64 (8× VAE, then the UNet's 8× in latents)")
    roots = args.photo_root or photo_sources.DEFAULT_ROOTS
    if args.stamps is None:
        unpacked = [os.path.join(r, "tuxpaint-stamps-default", STAMPS_SUBDIR) for r in roots]
        args.stamps = next((d for d in [scenes.STAMPS_DIR] + unpacked if os.path.isdir(d)), scenes.STAMPS_DIR)
    sources = photo_sources.load_table()
    missing = [f"{s.package}/{s.file}" for s in sources if s.path(roots) is None]
    if missing:
        sys.exit(f"{len(missing)} source pictures missing (first: {missing[0]}): run training/fetch_photo_data.sh")
    train_src, held_src = photo_sources.split(sources)
    os.makedirs(args.out, exist_ok=True)
    stamps = scenes.load_stamps(args.stamps)
    if not stamps:
        sys.exit(f"no product stamps found in {args.stamps}: run training/fetch_photo_data.sh")
    train_products = [p for i, p in enumerate(stamps) if i % 10 != 0]
    held_products = [p for i, p in enumerate(stamps) if i % 10 == 0]
    # Photo scenes take the stamps that read as products on a table (same held-out rule).
    photo_train = photo_scenes.photo_products(train_products, args.size)
    photo_held = photo_scenes.photo_products(held_products, args.size)
    train_kinds = [k for k in scenes.PROCEDURAL if k != "cup"]
    scene_meta = {}
    for split, n, seed, src, prods, photo_prods, kinds in [
            ("train", args.train, 11 + args.seed * 100, train_src, train_products, photo_train, train_kinds),
            ("heldout", args.heldout, 12 + args.seed * 100, held_src, held_products, photo_held,
             ["cup"] + train_kinds)]:
        t0 = time.time()
        images, masks, ref_images, ref_masks, depths, captions, labels, prod_sources, metas = build_parallel(
            n, seed, [s.id for s in src], prods, photo_prods, kinds, args.size, args.mix_procedural, roots,
            args.workers)
        t1 = time.time()
        ctx, lens = make_dataset.encode_captions(captions, args.text_encoder)
        np.savez(os.path.join(args.out, f"{split}.npz"), images=images, masks=masks, context=ctx, context_len=lens,
                 ref_images=ref_images, ref_masks=ref_masks, depths=depths,
                 captions=np.array(captions), labels=np.array(labels), sources=np.array(prod_sources))
        scene_meta[split] = metas
        print(f"{split}: {n} images ({t1 - t0:.0f} s, captions {time.time() - t1:.0f} s), "
              f"{len(set(captions))} captions, "
              f"labels {sorted(set(labels))}", flush=True)
    empty_ctx, empty_len = make_dataset.encode_captions([""], args.text_encoder)
    np.savez(os.path.join(args.out, "empty_prompt.npz"), context=empty_ctx, context_len=empty_len)
    with open(os.path.join(args.out, "products.json"), "w") as f:
        json.dump({"train": [p.source for p in train_products], "heldout": [p.source for p in held_products],
                   "rendered_train": train_kinds, "rendered_heldout": ["cup"],
                   "photo_products_train": [p.source for p in photo_train],
                   "photo_products_heldout": [p.source for p in photo_held],
                   "photo_train": [s.id for s in train_src], "photo_heldout": [s.id for s in held_src]}, f, indent=1)
    with open(os.path.join(args.out, "photo_scenes.json"), "w") as f:
        json.dump(scene_meta, f)
    if args.sheet:
        contact_sheet(args.out, args.sheet)


if __name__ == "__main__":
    main()
