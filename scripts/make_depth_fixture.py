#!/usr/bin/env python3
"""The training side's pseudo-depth (training/depth.py) for a test mask, written to
tests/parity/pseudo_depth.safetensors: the Rust test holds src/input/depth.rs to it, so the depth
ControlNet sees at run time exactly the maps it was trained on.

    ~/.cache/adcanvas-py/bin/python scripts/make_depth_fixture.py
"""
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "training"))
from depth import pseudo_depth  # noqa: E402


def test_mask(h=48, w=64):
    """An irregular product: an ellipse with a notch, a soft edge and a part touching the border."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = ((x - 30) / 22) ** 2 + ((y - 26) / 17) ** 2
    alpha = np.clip((1.0 - r) * 6, 0, 1)  # soft rim
    alpha[20:30, 44:52] = 0  # notch
    alpha[38:, 58:] = 1  # a block at the corner, touching two borders
    return alpha.astype(np.float32)


if __name__ == "__main__":
    alpha = test_mask()
    save_file({"alpha": alpha, "depth": pseudo_depth(alpha)}, str(ROOT / "tests" / "parity" / "pseudo_depth.safetensors"))
    print("wrote tests/parity/pseudo_depth.safetensors", alpha.shape)
