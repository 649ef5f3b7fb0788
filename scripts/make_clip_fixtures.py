#!/usr/bin/env python3
"""Parity fixtures for Stable Diffusion's prompt encoder, the CLIP text model and its BPE tokenizer:

- `tests/fixtures/clip_tokenizer/`: a diffusers-style `tokenizer/` folder (vocab.json, merges.txt,
  special_tokens_map.json, tokenizer_config.json) built from OpenAI's CLIP vocabulary exactly as
  SD 1.x/2.x ship it, cut to the first MERGES merges to stay small (a BPE vocabulary cut this way is
  still a complete tokenizer: same algorithm, fewer merges).
- `tests/parity/clip_tokens.json`: transformers' `CLIPTokenizer` (the Python reference) on prompts
  with punctuation, digits, accents, emoji, mixed case, spacing and more than 77 tokens, padded and
  truncated to 77 as the SD pipelines call it; once with `<|endoftext|>` padding (SD 1.x) and once
  with `!` (SD 2.x).
- `tests/parity/clip_text.*`: transformers' `CLIPTextModel` (tiny random config over that vocabulary):
  last hidden states for two tokenised prompts; 12 wide, like the tiny parity UNet's context, so
  the converter test can build a whole SD-style pack from it.

The vocabulary is `bpe_simple_vocab_16e6.txt.gz` from the `open-clip-torch` wheel (MIT):

    pip download --no-deps open-clip-torch==3.3.0 -d /tmp/oc && unzip -o /tmp/oc/open_clip_torch-*.whl \\
        'open_clip/bpe_simple_vocab_16e6.txt.gz' -d /tmp/oc
    HF_HUB_OFFLINE=1 ~/.cache/adcanvas-py/bin/python scripts/make_clip_fixtures.py \\
        --bpe /tmp/oc/open_clip/bpe_simple_vocab_16e6.txt.gz

`--full-check DIR` also writes the full vocabulary's tokenizer folder to DIR and the reference ids
for it, for a one-off check of the complete vocabulary (too large to commit).
"""
import argparse
import gzip
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from make_parity_fixtures import randomize  # noqa: E402

MERGES = 2048
PROMPTS = [
    "",
    "A teapot on a marble counter, soft morning light",
    "a RED   sneaker\ton wet concrete;  neon reflections!!",
    "perfume bottle, 50ml — café crème, à la française",
    "can't won't they're I'll we'd she's you've",
    "3 jars & 2 cans @ 10:30 #summer 2026 $19.99",
    "🌿 leaves and 🌊 water, 日本語 テキスト",
    "studio sweep " * 40,
]


def bytes_to_unicode():
    """CLIP's (and GPT-2's) byte → printable-character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_tokenizer_folder(bpe_path, out, merges_kept, pad_token):
    """vocab.json and merges.txt as openai/clip-vit-large-patch14 (and so SD's tokenizer/) has them."""
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1][:merges_kept]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad_token}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    (out / "tokenizer_config.json").write_text(json.dumps(dict(special, model_max_length=77, do_lower_case=True), indent=2) + "\n")
    return len(vocab)


def reference_ids(folder, pad_token):
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token=pad_token)
    return tok(PROMPTS, padding="max_length", max_length=77, truncation=True).input_ids


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bpe", required=True, help="bpe_simple_vocab_16e6.txt.gz from the open-clip-torch wheel")
    ap.add_argument("--full-check", help="folder for the full vocabulary's tokenizer and reference ids")
    args = ap.parse_args()

    folder = ROOT / "tests" / "fixtures" / "clip_tokenizer"
    vocab_size = write_tokenizer_folder(args.bpe, folder, MERGES, "<|endoftext|>")
    cases = {"prompts": PROMPTS, "merges": MERGES,
             "ids_pad_endoftext": reference_ids(folder, "<|endoftext|>"), "ids_pad_exclamation": reference_ids(folder, "!")}
    (ROOT / "tests" / "parity" / "clip_tokens.json").write_text(json.dumps(cases, ensure_ascii=False) + "\n")

    config = dict(vocab_size=vocab_size, hidden_size=12, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                  max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    torch.manual_seed(71)
    model = randomize(CLIPTextModel(CLIPTextConfig(**config)), 71).eval()
    ids = torch.tensor(cases["ids_pad_endoftext"][1:3])
    with torch.no_grad():
        hidden = model(input_ids=ids).last_hidden_state
    weights = {k if k.startswith("text_model.") else "text_model." + k: v.contiguous()
               for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    parity = ROOT / "tests" / "parity"
    save_file(weights, parity / "clip_text.weights.safetensors")
    save_file({"input_ids": ids.float(), "last_hidden_state": hidden}, parity / "clip_text.io.safetensors")
    (parity / "clip_text.config.json").write_text(json.dumps(dict(config, model_type="clip_text_model"), indent=2) + "\n")

    if args.full_check:
        full = Path(args.full_check)
        write_tokenizer_folder(args.bpe, full, 49152 - 256 - 2, "<|endoftext|>")
        (full / "ids.json").write_text(json.dumps({"prompts": PROMPTS, "ids": reference_ids(full, "<|endoftext|>")}, ensure_ascii=False))
    print("vocabulary", vocab_size, "tokens; ids of prompt 1:", cases["ids_pad_endoftext"][1][:14])


if __name__ == "__main__":
    main()
