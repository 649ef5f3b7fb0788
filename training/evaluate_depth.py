"""The depth ablation: the default model with and without its depth ControlNet, on held-out ads,
same seeds (the same 48 as evaluate_reference.py).

    python training/evaluate_depth.py --controlnet training/runs/controlnet/controlnet --n 48 --out docs/eval

Runs (guidance 4): `text` (caption only, depth off: what the shipped model does without a
ControlNet), `text_depth` (caption + the product's depth map, scale 1), and the same two with the
style reference (`ref`, `ref_depth`; PFV and region masks on); `text_depth_anchor` and
`ref_depth_anchor` add product anchoring as the runtime now does by default (after each step the
latent cells wholly inside the product are reset to the masked image's latents, noised to the next
timestep with the run's initial noise, as diffusers' inpainting pipeline does for 4-channel UNets;
docs/METHOD.md §3). The depth map is the one the
runtime would compute: rendered depth for procedural products, the mask's pseudo-depth for photo
cut-outs (make_dataset.py, training/depth.py). Metrics as evaluate_reference.py: scene accuracy,
FD-SC, background colour error, PSNR inside the product before paste-back (does the model keep
the product's shape where it is told the product's depth?), and object expansion.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
import condition_decoder  # noqa: E402
from common import SCHEDULER_CONFIG, encode_latents, threads  # noqa: E402
from pack import load_condition, load_vae  # noqa: E402
from evaluate import scores, train_classifier  # noqa: E402
from evaluate_reference import background_metrics, load, object_expansion  # noqa: E402
from sample import composite  # noqa: E402
from mepa import background_region, pfv_fill, pfv_visible, project, to_pixels  # noqa: E402
from train_unet import inpaint_inputs  # noqa: E402


@torch.no_grad()
def generate(unet, enc, controlnet, vae, images, masks, depths, contexts, empty, refs, ref_masks, use_ref, use_depth,
             steps=20, guidance=4.0, seed=0, anchor=False, init=None, strength=1.0):
    """Latents of generated ads. With `init` (latents of an image to refine), the run starts from
    it noised to the last `int(steps · strength)` steps, as diffusers' img2img and inpainting
    pipelines do for `strength` < 1."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**SCHEDULER_CONFIG)
    sched.set_timesteps(steps)
    _, xm, inp = inpaint_inputs(images, masks)
    masked = encode_latents(vae, xm)
    mask = inp[:, :, ::8, ::8]
    b = len(images)
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(b, vae.config.latent_channels, images.shape[1] // 8, images.shape[2] // 8, generator=g)
    noise = lat.clone()
    # Latent cells wholly inside the product (no pixel of the cell is generated).
    inside = 1 - torch.nn.functional.max_pool2d(inp, 8)
    mepas = [None] * b
    if use_ref:
        vis = pfv_visible(ref_masks)
        tokens = project(unet, enc(to_pixels(pfv_fill(refs, vis))))
        keep = np.concatenate([np.ones((b, 1), bool), vis.reshape(b, -1)], 1)
        region = background_region(masks)
        mepas = [dict(tokens=tokens[i:i + 1, keep[i]], key_mask=torch.ones(1, int(keep[i].sum()), dtype=torch.bool),
                      region=region[i:i + 1], scale=1.0) for i in range(b)]
    cond = torch.from_numpy(depths).float().div(255)[:, None].expand(-1, 3, -1, -1).contiguous()
    timesteps = sched.timesteps
    if init is not None:
        timesteps = sched.timesteps[steps - int(steps * strength):]
        lat = sched.add_noise(init, noise, timesteps[:1])
    for t in timesteps:
        x = torch.cat([lat, mask, masked], 1)
        eps = []
        for i in range(b):
            xi = x[i:i + 1]

            def unet_call(ctx, mepa):
                kw = dict(cross_attention_kwargs=dict(mepa=mepa)) if mepa else {}
                if use_depth:
                    down, mid = controlnet(xi, t, ctx[None], controlnet_cond=cond[i:i + 1], return_dict=False)
                    kw.update(down_block_additional_residuals=down, mid_block_additional_residual=mid)
                return unet(xi, t, ctx[None], **kw).sample

            e_c = unet_call(contexts[i], mepas[i])
            e_u = unet_call(empty, None)
            eps.append(e_u + guidance * (e_c - e_u))
        lat = sched.step(torch.cat(eps), t, lat).prev_sample
        if anchor:
            k = (sched.timesteps == t).nonzero().item()
            proper = masked if k + 1 == len(sched.timesteps) else sched.add_noise(masked, noise, sched.timesteps[k + 1:k + 2])
            lat = inside * proper + (1 - inside) * lat
    return lat


@torch.no_grad()
def shrink(a, k=2):
    """uint8 images (NHWC) or masks (NHW) at 1/k the size, by area averaging."""
    t = torch.from_numpy(a).float()
    t = t.permute(0, 3, 1, 2) if t.dim() == 4 else t[:, None]
    t = torch.nn.functional.interpolate(t, scale_factor=1 / k, mode="area").round().clamp(0, 255).byte()
    return (t.permute(0, 2, 3, 1) if a.ndim == 4 else t[:, 0]).numpy()


@torch.no_grad()
def two_pass(unet, enc, controlnet, vaes, images, masks, depths, contexts, empty, refs, ref_masks, use_ref, use_depth,
             steps, guidance, seed, strength, sharp=False):
    """Generates at half the size, pastes the product back, upscales the ad (bicubic) and refines
    it at full size from `strength` (SD's "hires fix"): the layout comes from the size the model
    was trained at, the detail from the full size."""
    vae, condition = vaes
    lo = [shrink(images), shrink(masks), shrink(depths)]
    lat = generate(unet, enc, controlnet, vae, *lo, contexts, empty, refs, ref_masks, use_ref, use_depth,
                   steps, guidance, seed=seed, anchor=True)
    bg = decode(vae, condition, lat, lo[0], lo[1])
    ads = np.stack([composite(bg[k], lo[0][k], lo[1][k]) for k in range(len(bg))])
    x = torch.from_numpy(ads).permute(0, 3, 1, 2).float() / 127.5 - 1
    x = torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False).clamp(-1, 1)
    if sharp:  # the full-size product over the upscaled ad, as the runtime pastes it
        up = ((x + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        up = np.stack([composite(up[k], images[k], masks[k]) for k in range(len(up))])
        x = torch.from_numpy(up).permute(0, 3, 1, 2).float() / 127.5 - 1
    return generate(unet, enc, controlnet, vae, images, masks, depths, contexts, empty, refs, ref_masks, use_ref,
                    use_depth, steps, guidance, seed=seed, anchor=True, init=encode_latents(vae, x), strength=strength)


FLOOR_LINE = 0.8  # src/layout.rs


def relayout(images, masks, depths, scale, vertical):
    """The held-out products at `scale` × their placed size, laid out as src/layout.rs lays out a
    user's photo: centred across; down, `centre`d (the runtime before FLOOR_LINE) or standing on
    the `floor` line (centred when taller than 2 · FLOOR_LINE − 1 of the ad). Each product goes
    over its own held-out ad, so the scene the metrics compare with is unchanged; the original
    product stays visible outside the new mask, which only the colour error reads."""
    from PIL import Image

    out_i, out_m, out_d = images.copy(), np.zeros_like(masks), np.zeros_like(depths)
    size = images.shape[1]
    for k in range(len(images)):
        ys, xs = np.nonzero(masks[k] > 2)  # the runtime's crop threshold, 0.01
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        w, h = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
        rgba = np.concatenate([images[k, y0:y1, x0:x1], masks[k, y0:y1, x0:x1, None]], 2)
        rgba = np.asarray(Image.fromarray(rgba, "RGBA").resize((w, h), Image.LANCZOS)).astype(np.float32)
        depth = np.asarray(Image.fromarray(depths[k, y0:y1, x0:x1]).resize((w, h), Image.BILINEAR))
        x = (size - w) // 2
        y = (size - h) // 2 if vertical == "centre" else max((size - h) // 2, round(FLOOR_LINE * size) - h)
        a = rgba[..., 3:] / 255
        region = out_i[k, y:y + h, x:x + w].astype(np.float32)
        out_i[k, y:y + h, x:x + w] = np.round(region * (1 - a) + rgba[..., :3] * a).astype(np.uint8)
        out_m[k, y:y + h, x:x + w] = rgba[..., 3].round().astype(np.uint8)
        out_d[k, y:y + h, x:x + w] = depth
    return out_i, out_m, out_d


def decode(vae, condition, lat, images, masks):
    """Latents → uint8 pixels; a conditioned decoder also gets the product (the ads' own pixels
    and masks, as the runtime passes the placed product)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    m = torch.from_numpy(masks).float().div(255)[:, None]
    out = condition_decoder.decode(vae, condition, lat, x, m)
    return ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def main():
    from diffusers import ControlNetModel

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="training/data")
    ap.add_argument("--run", default="training/runs/ref")
    ap.add_argument("--controlnet", default="training/runs/controlnet/controlnet")
    ap.add_argument("--vae", default="training/runs/vae/vae")
    ap.add_argument("--also-vae", default=None,
                    help="a second VAE (same latent space, e.g. train_decoder.py's) to decode the same latents with: "
                         "its runs are reported as NAME+vae2")
    ap.add_argument("--classifier", default="training/runs/scene_classifier.pt")
    ap.add_argument("--out", default="docs/eval")
    ap.add_argument("--name", default="depth", help="file prefix of the grid and results in --out")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--runs", default="text,text_depth,ref,ref_depth,text_depth_anchor,ref_depth_anchor",
                    help="which of the runs, comma-separated (also text_depth_2pass, ref_depth_2pass)")
    ap.add_argument("--strength", type=float, default=0.5, help="the *_2pass runs' refining strength")
    ap.add_argument("--pack", default=None,
                    help="evaluate an adcanvas pack (models/default: the shipped q8 weights, dequantised) "
                         "instead of --run, --controlnet and --vae")
    ap.add_argument("--relayout", type=float, default=None,
                    help="re-place each held-out product at this scale of its size, centred across (the runtime's layout)")
    ap.add_argument("--vertical", choices=["centre", "floor"], default="floor",
                    help="with --relayout: centre the product or stand it on the floor line (src/layout.rs)")
    ap.add_argument("--save-backgrounds", action="store_true",
                    help="also write NAME_backgrounds.npz (each run's generated backgrounds, the ads' images and masks)")
    args = ap.parse_args()
    threads()
    os.makedirs(args.out, exist_ok=True)
    net = train_classifier(args.data, args.classifier)
    if args.pack:
        import pack

        unet, enc = pack.mepa_unet(args.pack).eval(), pack.reference_encoder(args.pack).eval()
        controlnet, vae = pack.controlnet(args.pack).eval(), pack.vae(args.pack)
        vaes = {"": (vae, pack.vae_condition(args.pack, vae))}
        # The reference run's steps, from the provenance line ("train_reference.py (5382 steps)").
        found = re.search(r"train_reference\.py \((\d+) steps\)", pack.manifest(args.pack).get("provenance", ""))
        step = int(found.group(1)) if found else 0
    else:
        unet, enc, step = load(args.run)
        controlnet = ControlNetModel.from_pretrained(args.controlnet).eval()
        vae = load_vae(args.vae)
        vaes = {"": (vae, load_condition(vae, args.vae))}
    if args.also_vae:
        vae2 = load_vae(args.also_vae)
        vaes["+vae2"] = (vae2, load_condition(vae2, args.also_vae))
    d = np.load(os.path.join(args.data, "heldout.npz"))
    e = np.load(os.path.join(args.data, "empty_prompt.npz"))
    n = min(args.n, len(d["images"]))
    images, masks, labels, depths = d["images"][:n], d["masks"][:n], d["labels"][:n], d["depths"][:n]
    refs, ref_masks = d["ref_images"][:n], d["ref_masks"][:n]
    if args.relayout:
        images, masks, depths = relayout(images, masks, depths, args.relayout, args.vertical)
    empty = torch.from_numpy(e["context"][0, : e["context_len"][0]]).float()
    ctx = [torch.from_numpy(d["context"][i, : d["context_len"][i]]).float() for i in range(n)]
    _, real_feats = scores(net, images, labels)
    runs = {
        "text": dict(use_ref=False, use_depth=False),
        "text_depth": dict(use_ref=False, use_depth=True),
        "ref": dict(use_ref=True, use_depth=False),
        "ref_depth": dict(use_ref=True, use_depth=True),
        "text_depth_anchor": dict(use_ref=False, use_depth=True, anchor=True),
        "ref_depth_anchor": dict(use_ref=True, use_depth=True, anchor=True),
        "text_depth_2pass": dict(use_ref=False, use_depth=True, two_pass=True),
        "ref_depth_2pass": dict(use_ref=True, use_depth=True, two_pass=True),
        "text_depth_2pass_sharp": dict(use_ref=False, use_depth=True, two_pass=True, sharp=True),
        "ref_depth_2pass_sharp": dict(use_ref=True, use_depth=True, two_pass=True, sharp=True),
    }
    runs = {k: v for k, v in runs.items() if k in args.runs.split(",")}
    results = {"unet_steps_trained": int(step), "n": n, "sampler_steps": args.steps, "guidance": args.guidance,
               "pack": args.pack, "relayout": args.relayout and {"scale": args.relayout, "vertical": args.vertical},
               "real_object_expansion": float(np.mean([x for x in (object_expansion(images[k], images[k], masks[k])
                                                                    for k in range(n)) if x is not None])),
               "runs": {}}
    grid_rows = [np.concatenate([np.repeat(dm[..., None], 3, 2) for dm in depths[:8]], 1), np.concatenate(list(images[:8]), 1)]
    saved = {}
    for name, r in runs.items():
        lats = []
        for i in range(0, n, 16):
            batch = (images[i:i + 16], masks[i:i + 16], depths[i:i + 16], ctx[i:i + 16], empty, refs[i:i + 16],
                     ref_masks[i:i + 16], r["use_ref"], r["use_depth"])
            if r.get("two_pass"):
                lats.append(two_pass(unet, enc, controlnet, vaes[""], *batch, args.steps, args.guidance, 1234 + i,
                                     args.strength, sharp=r.get("sharp", False)))
            else:
                lats.append(generate(unet, enc, controlnet, vae, *batch, args.steps, args.guidance, seed=1234 + i,
                                     anchor=r.get("anchor", False)))
            print(f"{name}: {min(i + 16, n)}/{n}", flush=True)
        for suffix, v in vaes.items():
            bg = np.concatenate([decode(*v, lat, images[16 * j:16 * j + 16], masks[16 * j:16 * j + 16])
                                 for j, lat in enumerate(lats)])
            results["runs"][name + suffix], ads = background_metrics(net, bg, images, masks, labels, real_feats)
            saved[name + suffix] = bg
            grid_rows.append(np.concatenate(list(ads[:8]), 1))
            print(name + suffix, json.dumps(results["runs"][name + suffix]), flush=True)
    grid = Image.fromarray(np.concatenate(grid_rows, 0))
    if images.shape[1] > 256:  # keep docs/ grids at 256 px a tile
        grid = grid.resize((grid.width * 256 // images.shape[1], grid.height * 256 // images.shape[1]), Image.LANCZOS)
    grid.convert("RGB").save(os.path.join(args.out, args.name + "_grid.jpg"), quality=88)  # JPEG: the tree travels to GPU machines
    if args.save_backgrounds:
        np.savez_compressed(os.path.join(args.out, args.name + "_backgrounds.npz"), images=images, masks=masks, **saved)
    with open(os.path.join(args.out, args.name + "_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
