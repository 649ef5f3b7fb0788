"""Style-reference evaluation and the PFV / MEPA ablations, on held-out ads, same seeds.

    python training/evaluate_reference.py --n 48 --out docs/eval

Each held-out ad has a reference of the same scene style with another product on it
(make_dataset.py). Runs (guidance 4 unless said):
  text        caption only, no reference (the model before this feature adds nothing here)
  ref         caption + reference, PFV on, MEPA region masks on (the method)
  ref_no_pfv  PFV off: the encoder sees the reference's product too
  ref_no_mask region masks off: the image prompt acts on the whole picture
  ref_only    empty prompt + reference (style from the reference alone)
Metrics: scene accuracy and FD-SC (evaluate.py's classifier); background colour error (mean
RGB distance between the generated background and the real ad's background, outside the
product: the reference shares that scene's style, so following it lowers the error);
reference-foreground leakage (share of generated background pixels whose colour bin is more
typical of the reference's product than of its background, minus the same share for the real
background); object expansion (product-coloured pixels in a 16-px band around the product,
before paste-back, as a fraction of the product's area: a colour-histogram proxy, minus nothing —
the real ads' value is reported beside it, since contact shadows and similar colours count too);
PSNR inside the product mask before paste-back.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from common import SCHEDULER_CONFIG, encode_latents, threads  # noqa: E402
from pack import load_vae  # noqa: E402
from evaluate import frechet, psnr_in_mask, scores, train_classifier  # noqa: E402
from mepa import (IMAGE_ENCODER_CONFIG, ReferenceEncoder, attach_mepa, background_region, pfv_fill,  # noqa: E402
                  pfv_visible, project, to_pixels)
from sample import composite  # noqa: E402
from train_unet import inpaint_inputs  # noqa: E402


def load(run):
    from diffusers import UNet2DConditionModel

    from common import UNET_CONFIG

    state = torch.load(os.path.join(run, "state.pt"), map_location="cpu", weights_only=False)
    unet = attach_mepa(UNet2DConditionModel(**UNET_CONFIG), IMAGE_ENCODER_CONFIG["hidden_size"])
    unet.load_state_dict({k: v.float() for k, v in state["ema"].items()})
    enc = ReferenceEncoder()
    enc.load_state_dict({k: v.float() for k, v in state["ema_enc"].items()})
    return unet.eval(), enc.eval(), state["step"]


@torch.no_grad()
def generate(unet, enc, vae, images, masks, contexts, empty, refs, ref_masks, use_ref, pfv, region_on,
             steps=20, guidance=4.0, seed=0, scale=1.0):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**SCHEDULER_CONFIG)
    sched.set_timesteps(steps)
    _, xm, inp = inpaint_inputs(images, masks)
    masked = encode_latents(vae, xm)
    mask = inp[:, :, ::8, ::8]
    b = len(images)
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(b, vae.config.latent_channels, images.shape[1] // 8, images.shape[2] // 8, generator=g)
    mepas = [None] * b
    if use_ref:
        vis = pfv_visible(ref_masks) if pfv else np.ones((b, 8, 8), bool)
        tokens = project(unet, enc(to_pixels(pfv_fill(refs, vis))))
        keep = np.concatenate([np.ones((b, 1), bool), vis.reshape(b, -1)], 1)
        region = background_region(masks) if region_on else torch.ones(b, 1, *mask.shape[2:])
        # The runtime drops hidden tokens; one sample at a time, that is indexing.
        mepas = [dict(tokens=tokens[i:i + 1, keep[i]], key_mask=torch.ones(1, int(keep[i].sum()), dtype=torch.bool),
                      region=region[i:i + 1], scale=scale) for i in range(b)]
    for t in sched.timesteps:
        x = torch.cat([lat, mask, masked], 1)
        eps = []
        for i in range(b):
            xi = x[i:i + 1]
            kw = dict(cross_attention_kwargs=dict(mepa=mepas[i])) if mepas[i] else {}
            e_c = unet(xi, t, contexts[i][None], **kw).sample
            e_u = unet(xi, t, empty[None]).sample
            eps.append(e_u + guidance * (e_c - e_u))
        lat = sched.step(torch.cat(eps), t, lat).prev_sample
    out = vae.decode(lat / vae.config.scaling_factor).sample
    return ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def colour_error(gen_bg, real, mask):
    """Mean RGB distance (0–255 scale) between generated and real background means."""
    m = mask < 128
    return float(np.linalg.norm(gen_bg[m].mean(0) - real[m].mean(0).astype(np.float64)))


def colour_bins(pixels, bins=8):
    """Index of each RGB pixel's cell in a bins³ colour histogram."""
    return (pixels.astype(np.int64) // (256 // bins)) @ np.array([bins * bins, bins, 1])


def fg_share(pixels, ref, ref_mask, bins=8):
    """Share of `pixels` whose colour bin is more frequent among the reference's product pixels
    than among its background pixels (histograms normalised)."""
    fg, bg = ref[ref_mask >= 128], ref[ref_mask < 128]
    if len(fg) == 0 or len(bg) == 0:
        return None
    hf = np.bincount(colour_bins(fg, bins), minlength=bins**3) / len(fg)
    hb = np.bincount(colour_bins(bg, bins), minlength=bins**3) / len(bg)
    c = colour_bins(pixels, bins)
    return float((hf[c] > hb[c]).mean())


def expanded_pixels(bg, image, mask, band=16, bins=8):
    """The band pixels (0 < distance ≤ band px outside the product) whose colour bin is more
    frequent among the product's pixels than among the background beyond the band, as a map, with
    the product's pixels and the background beyond the band; None when either of those is empty."""
    prod = mask >= 128
    m = torch.from_numpy(prod.astype(np.float32))[None, None]
    near = torch.nn.functional.max_pool2d(m, 2 * band + 1, 1, band)[0, 0].numpy() > 0
    ring, far = near & ~prod, ~near
    if not prod.any() or not far.any():
        return None
    hf = np.bincount(colour_bins(image[prod], bins), minlength=bins**3) / prod.sum()
    hb = np.bincount(colour_bins(bg[far], bins), minlength=bins**3) / far.sum()
    c = colour_bins(bg[ring], bins)
    grows = np.zeros(mask.shape, bool)
    grows[ring] = hf[c] > hb[c]
    return grows, prod, far


def object_expansion(bg, image, mask, band=16, bins=8):
    """How far the generated background takes on the product's colours next to it:
    [`expanded_pixels`] per product pixel."""
    found = expanded_pixels(bg, image, mask, band, bins)
    if found is None:
        return None
    grows, prod, _ = found
    return float(grows.sum() / prod.sum())


def background_metrics(net, bg, images, masks, labels, real_feats):
    """The metrics every ablation reports for generated backgrounds `bg` of held-out ads: scene
    accuracy and FD-SC of the composited ads, background colour error, PSNR inside the product
    before paste-back, object expansion. Returns them and the composited ads."""
    n = len(bg)
    ads = np.stack([composite(bg[k], images[k], masks[k]) for k in range(n)])
    acc, feats = scores(net, ads, labels)
    psnrs = [p for p in (psnr_in_mask(bg[k], images[k], masks[k]) for k in range(n)) if p is not None]
    metrics = {
        "scene_accuracy": acc, "fd_scene_classifier": frechet(feats, real_feats),
        "background_colour_error": float(np.mean([colour_error(bg[k], images[k], masks[k]) for k in range(n)])),
        "psnr_in_mask_db_mean": float(np.mean(psnrs)),
        "object_expansion": float(np.mean([x for x in (object_expansion(bg[k], images[k], masks[k])
                                                       for k in range(n)) if x is not None])),
    }
    return metrics, ads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="training/data")
    ap.add_argument("--run", default="training/runs/ref")
    ap.add_argument("--vae", default="training/runs/vae/vae")
    ap.add_argument("--classifier", default="training/runs/scene_classifier.pt")
    ap.add_argument("--out", default="docs/eval")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=4.0)
    args = ap.parse_args()
    threads()
    os.makedirs(args.out, exist_ok=True)
    net = train_classifier(args.data, args.classifier)
    unet, enc, step = load(args.run)
    vae = load_vae(args.vae)
    d = np.load(os.path.join(args.data, "heldout.npz"))
    e = np.load(os.path.join(args.data, "empty_prompt.npz"))
    n = min(args.n, len(d["images"]))
    images, masks, labels = d["images"][:n], d["masks"][:n], d["labels"][:n]
    refs, ref_masks = d["ref_images"][:n], d["ref_masks"][:n]
    empty = torch.from_numpy(e["context"][0, : e["context_len"][0]]).float()
    ctx = [torch.from_numpy(d["context"][i, : d["context_len"][i]]).float() for i in range(n)]
    _, real_feats = scores(net, images, labels)
    runs = {
        "text": dict(use_ref=False, pfv=True, region_on=True, prompt=True),
        "ref": dict(use_ref=True, pfv=True, region_on=True, prompt=True),
        "ref_no_pfv": dict(use_ref=True, pfv=False, region_on=True, prompt=True),
        "ref_no_mask": dict(use_ref=True, pfv=True, region_on=False, prompt=True),
        "ref_only": dict(use_ref=True, pfv=True, region_on=True, prompt=False),
    }
    real_small = np.stack([np.asarray(Image.fromarray(im).resize((128, 128))) for im in images])
    real_expansion = [object_expansion(images[k], images[k], masks[k]) for k in range(n)]
    real_share = [fg_share(real_small[k][masks[k][::2, ::2] < 128], refs[k], ref_masks[k]) for k in range(n)]
    results = {"steps_trained": int(step), "n": n, "sampler_steps": args.steps, "guidance": args.guidance,
               "real_object_expansion": float(np.mean([x for x in real_expansion if x is not None])), "runs": {}}
    grid_rows = [np.concatenate([np.asarray(Image.fromarray(r).resize((256, 256))) for r in refs[:8]], 1),
                 np.concatenate(list(images[:8]), 1)]
    for name, r in runs.items():
        contexts = ctx if r["prompt"] else [empty] * n
        bgs = []
        for i in range(0, n, 16):
            bgs.append(generate(unet, enc, vae, images[i:i + 16], masks[i:i + 16], contexts[i:i + 16], empty,
                                refs[i:i + 16], ref_masks[i:i + 16], r["use_ref"], r["pfv"], r["region_on"],
                                args.steps, args.guidance, seed=1234 + i))
            print(f"{name}: {min(i + 16, n)}/{n}", flush=True)
        bg = np.concatenate(bgs)
        metrics, ads = background_metrics(net, bg, images, masks, labels, real_feats)
        small = np.stack([np.asarray(Image.fromarray(b).resize((128, 128))) for b in bg])
        leak = [fg_share(small[k][masks[k][::2, ::2] < 128], refs[k], ref_masks[k]) for k in range(n)]
        leak = [a - b for a, b in zip(leak, real_share) if a is not None and b is not None]
        results["runs"][name] = dict(metrics, reference_foreground_leakage=float(np.mean(leak)))
        grid_rows.append(np.concatenate(list(ads[:8]), 1))
        print(name, json.dumps(results["runs"][name]), flush=True)
    Image.fromarray(np.concatenate(grid_rows, 0)).save(os.path.join(args.out, "reference_grid.jpg"), quality=90)  # JPEG: the tree travels to GPU machines
    with open(os.path.join(args.out, "reference_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
