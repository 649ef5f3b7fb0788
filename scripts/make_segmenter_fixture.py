"""The cut-out network's parity fixture: what PyTorch computes with the default pack's own
(dequantised) segmenter weights, for tests/cutout_network.rs to hold the Rust network to.

    ~/.cache/adcanvas-py/bin/python scripts/make_segmenter_fixture.py

Writes tests/fixtures/segmenter_parity.png (a held-out busy photo already at the network's side,
so both sides read the same pixels) and tests/fixtures/segmenter_parity.json (the product
probability at every 4th pixel of every 4th row). Rerun it when the pack's segmenter changes.
"""

import json
import os
import sys

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "training"))
import pack  # noqa: E402
from train_segmenter import mirrored_logits, new_model  # noqa: E402

PACK = os.path.join(ROOT, "models", "default")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def main():
    model = new_model().eval()
    model.load_state_dict(pack.load_component(PACK, "segmenter", model.state_dict()))
    side = pack.manifest(PACK)["segmenter"]["sample_size"]
    photo = Image.open(os.path.join(FIXTURES, "busy_photos", "heldout_17.jpg")).convert("RGB")
    square = photo.resize((side, side), Image.BILINEAR)
    square.save(os.path.join(FIXTURES, "segmenter_parity.png"))
    x = torch.from_numpy(np.asarray(square, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        p = torch.sigmoid(mirrored_logits(model, x))[0, 0].numpy()
    every = 4
    with open(os.path.join(FIXTURES, "segmenter_parity.json"), "w") as f:
        json.dump({"side": side, "every": every,
                   "probability": [[round(float(v), 6) for v in row[::every]] for row in p[::every]]}, f)
    print(f"segmenter parity fixture: {side}², mean probability {p.mean():.4f}")


if __name__ == "__main__":
    main()
