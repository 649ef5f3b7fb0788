"""How far each quantisation of the frozen MiniLM text encoder moves its prompt contexts (the last
hidden states the UNet attends to) from the f32 weights', over 64 seller-style prompts:
relative L2 error (mean, max over prompts) and the least per-token cosine similarity.

    ~/.cache/adcanvas-py/bin/python training/evaluate_text_quant.py [PACK ...]

With PACK folders, also each pack's own text encoder as it is stored (e.g. GPTQ's q4 layers from
training/quantize_gptq.py, which these rules cannot reproduce).

The q8 and q4 schemes are src/pack/quant.rs's (blocks of 32, f16 scales; q4's scale the block's
least-squares choice, or max|w|/7 as before 2026-12-07); which tensors are quantised is the
converter's rule (≥ 4096 values, a multiple of 32). Figures: BENCHMARKS.md 2026-12-07.
"""

import itertools
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from make_dataset import text_encoder  # noqa: E402
from quantize_gptq import q4_scales  # noqa: E402

COLOURS = ["white", "pink", "navy", "mint", "gold", "red", "beige", "black"]
PLACES = ["on a marble counter", "on a rustic wooden table", "on the sand of a beach at sunset", "in a modern kitchen",
          "on a podium in a studio", "among green leaves", "on concrete", "on linen fabric",
          "in a christmas scene with snow", "on a bathroom shelf next to towels", "floating over water with splashes",
          "on a desk beside a laptop"]
LIGHTS = ["soft light", "warm evening light", "bright daylight", "dramatic light"]
PROMPTS = [f"a {c} studio" for c in COLOURS] + [f"{p}, {light}" for p, light in itertools.product(PLACES, LIGHTS)] + [
    "a perfume bottle on glossy black stone with gold reflections", "sneakers on a city street at night, neon",
    "a jar of honey with bees and flowers", "coffee beans scattered around, cozy cafe", "minimalist pastel background",
    "Dose de café sur une table", "organic skincare on river pebbles, morning mist", "a teapot on a marble counter, soft light"]


def q8(w):
    b = w.reshape(-1, 32)
    s = (np.abs(b).max(1, keepdims=True) / 127).astype(np.float16).astype(np.float32)
    return (np.clip(np.round(b / np.where(s == 0, 1, s)), -127, 127) * s).reshape(w.shape)


def q4(w, search=True):
    """q4 values: the converter's least-squares scales (quantize_gptq.q4_scales), or max|w|/7."""
    b = w.reshape(-1, 32)
    s = q4_scales(b) if search else (np.abs(b).max(1) / 7).astype(np.float16).astype(np.float32)
    return (np.clip(np.round(b / np.where(s == 0, 1, s)[:, None]), -8, 7) * s[:, None]).reshape(w.shape)


def main():
    tok, model = text_encoder("minilm")
    f32 = {k: v.clone() for k, v in model.state_dict().items()}

    def contexts():
        with torch.no_grad():
            return [model(**tok(p, return_tensors="pt")).last_hidden_state[0].numpy() for p in PROMPTS]

    reference = contexts()

    def report(name, got):
        rel = [np.linalg.norm(a - b) / np.linalg.norm(b) for a, b in zip(got, reference)]
        cos = [np.min(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)) for a, b in zip(got, reference)]
        print(f"{name:34s} relative error mean {np.mean(rel):.4f} max {np.max(rel):.4f}   least token cosine {np.min(cos):.5f}")

    table = lambda k: "word_embeddings" in k  # noqa: E731
    ffn = lambda k: "intermediate.dense" in k or ("output.dense" in k and "attention" not in k)  # noqa: E731
    variants = {
        "q8 (the pack before 2026-12-07)": lambda k, w: q8(w),
        "q8, token table q4, max|w|/7": lambda k, w: q4(w, search=False) if table(k) else q8(w),
        "q8, token table q4 (shipped 12-07 am)": lambda k, w: q4(w) if table(k) else q8(w),
        "q8, token table and FFN q4": lambda k, w: q4(w) if table(k) or ffn(k) else q8(w),
        "q4, max|w|/7": lambda k, w: q4(w, search=False),
        "q4": lambda k, w: q4(w),
    }
    print(f"{len(PROMPTS)} prompts; error of the contexts against f32 weights")
    for name, rule in variants.items():
        state = {}
        for k, v in f32.items():
            w = v.numpy()
            quantised = w.size % 32 == 0 and w.size >= 4096 and w.ndim == 2
            state[k] = torch.from_numpy(np.ascontiguousarray(rule(k, w) if quantised else w, dtype=np.float32))
        model.load_state_dict(state)
        report(name, contexts())
    for pack in sys.argv[1:]:
        _, stored = text_encoder(pack)
        model.load_state_dict(stored.state_dict())
        report(f"pack {pack}", contexts())


if __name__ == "__main__":
    main()
