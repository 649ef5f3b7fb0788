"""The pack's text encoder layers in q4 chosen by GPTQ instead of rounding: each Linear's q4
values are picked column by column, and what each column's rounding loses is made up by the
columns not yet rounded, weighted by how the layer's inputs correlate (Frantar et al., "GPTQ",
arXiv 2210.17323, with groups). The format stays src/pack/quant.rs's q4 (blocks of 32 along a
row, one f16 scale each, chosen as the converter does), so the runtime reads it unchanged; only
which of the 16 levels each weight takes differs.

    python training/quantize_gptq.py --pack models/default --layers ffn|attention|all [--act-order] [--note TEXT]

The inputs come from seller-style captions written here (CALIBRATION_*), distinct from
training/evaluate_text_quant.py's prompts, run through the pack's own text encoder as it is
quantised (sequentially, so each layer sees what the runtime will feed it). The target of every
layer is the f32 MiniLM's weights. Rewrites the pack's text_encoder.safetensors and its manifest
entry (bytes, sha256, provenance); every other file is left as it is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from make_dataset import text_encoder  # noqa: E402
from pack import BLOCK, dequantize  # noqa: E402

EMPTY_PROMPT_SHARE = 0.1
CALIBRATION_PRODUCTS = [
    "a ceramic mug", "a leather handbag", "a wristwatch", "a glass bottle of olive oil", "a scented candle",
    "a pair of headphones", "a smartphone", "a lipstick", "a bar of soap", "a wooden toy", "a backpack",
    "a water bottle", "a kettle", "a pair of sunglasses", "a bottle of wine", "a jar of jam", "a succulent in a pot",
    "a running shoe", "a hand cream tube", "a laptop", "a camera", "a teddy bear", "a vase", "a box of chocolates",
    "a glass of juice", "a tea tin", "a shampoo bottle", "a denim jacket", "a wallet", "a bracelet", "a ring",
    "a bluetooth speaker", "a board game", "a yoga mat", "a toaster", "a blender", "a desk lamp", "a notebook",
    "a fountain pen", "a baseball cap", "a pair of socks", "a dog collar", "a cat toy", "a bag of rice",
    "a bottle of hot sauce", "a loaf of bread", "an apple", "a bunch of bananas", "a chocolate bar", "a phone case"]
CALIBRATION_LIGHTS = ["soft light", "soft morning light", "studio lighting", "bright daylight", "golden hour light",
                      "diffuse light", "blue evening light", "natural daylight"]


def calibration_captions(n=512, seed=7):
    """Captions shaped like the UNet's training captions (product, place, light), built from
    training/photo_sources.csv's places and the lists above."""
    import csv

    with open(os.path.join(os.path.dirname(__file__), "photo_sources.csv")) as f:
        places = [p for row in csv.DictReader(f) for p in (row["phrase"], row["ground_phrase"]) if p]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        product = CALIBRATION_PRODUCTS[rng.integers(len(CALIBRATION_PRODUCTS))]
        place = places[rng.integers(len(places))]
        light = CALIBRATION_LIGHTS[rng.integers(len(CALIBRATION_LIGHTS))]
        r = rng.random()
        out.append(f"{product} {place}, {light}" if r < 0.5 else f"{product} {place}" if r < 0.85 else place)
    return out


def q4_scales(block_rows: np.ndarray) -> np.ndarray:
    """One f16 scale per row of a [rows, 32] block, chosen as src/pack/quant.rs's quantize_q4:
    the least squared error among max|w|/7 and 23 scales from 0.6 to 1.15 of it."""
    amax = np.abs(block_rows).max(1)
    best_s, best_e = None, None
    for f in [1.0] + [0.6 + 0.025 * i for i in range(23)]:
        s = (amax * np.float32(f) / 7).astype(np.float16).astype(np.float32)
        v = np.clip(np.round(block_rows / np.where(s == 0, 1, s)[:, None]), -8, 7) * s[:, None]
        e = ((v - block_rows) ** 2).sum(1)
        if best_s is None:
            best_s, best_e = s, e
        else:
            better = e < best_e
            best_s, best_e = np.where(better, s, best_s), np.where(better, e, best_e)
    return best_s


def gptq_q4(weight: torch.Tensor, hessian: torch.Tensor, act_order=False, percdamp=0.01, blocksize=128):
    """GPTQ with groups of 32 along each row: (codes in [-8, 7] as [out, in] int8, f16 scales
    [out, in / 32]). `hessian` is 2 XᵀX / n over the layer's calibration inputs X. With
    `act_order` the columns are rounded in order of decreasing input energy, each group's scale
    fixed beforehand from the f32 weights (GPTQ's "static groups")."""
    w = weight.detach().clone().double()
    h = hessian.clone().double()
    rows, cols = w.shape
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    scales = np.zeros((rows, cols // BLOCK), np.float32)
    if act_order:
        for g in range(cols // BLOCK):
            scales[:, g] = q4_scales(w[:, g * BLOCK:(g + 1) * BLOCK].numpy().astype(np.float32))
        perm = torch.argsort(torch.diag(h), descending=True)
    else:
        perm = torch.arange(cols)
    w, h = w[:, perm], h[perm][:, perm]
    h += percdamp * torch.mean(torch.diag(h)) * torch.eye(cols, dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    codes = torch.zeros(rows, cols, dtype=torch.int8)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1, err1, hi = w[:, i1:i2].clone(), torch.zeros(rows, i2 - i1, dtype=w.dtype), hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = int(perm[i1 + i])
            if not act_order and col % BLOCK == 0:
                scales[:, col // BLOCK] = q4_scales(w1[:, i:i + BLOCK].numpy().astype(np.float32))
            s = torch.from_numpy(scales[:, col // BLOCK]).double()
            q = torch.clamp(torch.round(w1[:, i] / torch.where(s == 0, 1, s)), -8, 7)
            codes[:, col] = q.to(torch.int8)
            e = (w1[:, i] - q * s) / hi[i, i]
            w1[:, i:] -= e.unsqueeze(1) @ hi[i, i:].unsqueeze(0)
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return codes, scales.astype(np.float16)


def pack_nibbles(codes: torch.Tensor) -> np.ndarray:
    """src/pack/quant.rs's q4 bytes: row-major, two codes a byte, low nibble first, code + 8."""
    flat = (codes.numpy().astype(np.int16).reshape(-1) + 8).astype(np.uint8)
    return flat[0::2] | (flat[1::2] << 4)


def selected(name: str, layers: str) -> bool:
    ffn = "intermediate.dense" in name or ("output.dense" in name and "attention" not in name)
    return name.startswith("encoder.layer.") and {"all": True, "ffn": ffn, "attention": not ffn}[layers]


def main():
    from safetensors.numpy import load_file, save_file

    ap = argparse.ArgumentParser()
    ap.add_argument("--pack", default="models/default")
    ap.add_argument("--layers", choices=["ffn", "attention", "all"], default="ffn")
    ap.add_argument("--act-order", action="store_true", help="round columns by decreasing input energy")
    ap.add_argument("--note", default="GPTQ q4 layers, training/quantize_gptq.py")
    args = ap.parse_args()

    _, reference = text_encoder("minilm")
    f32 = {k: v.clone() for k, v in reference.state_dict().items()}
    tok, model = text_encoder(args.pack)
    batches = [tok(c, return_tensors="pt") for c in calibration_captions()]
    # The empty prompt's context is the unconditional half of every ad's guidance: its two tokens
    # are weighted as if they were a tenth of the calibration's.
    tokens = sum(b["input_ids"].shape[1] for b in batches)
    batches += [tok("", return_tensors="pt")] * round(tokens * EMPTY_PROMPT_SHARE / 2)
    path = os.path.join(args.pack, "text_encoder.safetensors")
    tensors = load_file(path)
    for name, layer in [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]:
        if not selected(name, args.layers):
            continue
        inputs = []
        hook = layer.register_forward_hook(lambda _m, inp, _out: inputs.append(inp[0].reshape(-1, inp[0].shape[-1])))
        with torch.no_grad():
            for b in batches:
                model(**b)
        hook.remove()
        x = torch.cat(inputs).double()
        w0 = f32[name + ".weight"]
        codes, scales = gptq_q4(w0, 2 * x.T @ x / x.shape[0], act_order=args.act_order)
        stored = pack_nibbles(codes), scales.reshape(-1)
        # Read back as the pack's reader does: what the layer computes with is what is stored.
        q = torch.from_numpy(dequantize(*stored, tuple(w0.shape)))
        before = ((layer.weight.double() - w0.double()) @ x.T).pow(2).sum() / (w0.double() @ x.T).pow(2).sum()
        after = ((q.double() - w0.double()) @ x.T).pow(2).sum() / (w0.double() @ x.T).pow(2).sum()
        print(f"{name}: relative output error² {before:.2e} (pack) -> {after:.2e} (GPTQ q4)", flush=True)
        layer.weight.data = q
        tensors[name + ".weight"], tensors[name + ".weight.q_scale"] = stored
    save_file(tensors, path)

    mpath = os.path.join(args.pack, "manifest.json")
    with open(mpath) as f:
        manifest = json.load(f)
    with open(path, "rb") as f:
        data = f.read()
    entry = manifest["files"]["text_encoder"]
    entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    if args.layers == "all":
        entry["dtype"] = "q4"  # every layer and (with --embedding-dtype q4) the token table
    note = f"{args.note} (--layers {args.layers}{' --act-order' if args.act_order else ''})"
    manifest["provenance"] = manifest["provenance"].replace("; see models/", f", {note}; see models/")
    with open(mpath, "w") as f:
        f.write(json.dumps(manifest, indent=2) + "\n")
    print(f"text_encoder: {len(data) / 1e6:.2f} MB with its {args.layers} layers in GPTQ q4")


if __name__ == "__main__":
    main()
