"""Depth maps for the depth ControlNet, in the convention the runtime uses (src/depth.rs):
near is bright, the far background 0, a product's silhouette ½ and its thickest point 1.

- Rendered products carry their own depth (scenes.render_product: a cylinder's or a box's
  profile in [0, 1]); it is placed like the product and mapped to a · (½ + ½ · depth).
- Photo cut-outs have none: their pseudo-depth comes from the mask's shape exactly as the
  browser computes it for a user's photo, a · (½ + ½ √(1 − (1 − e/e_max)²)) with e the
  Euclidean distance to the nearest pixel outside the product (the image border counts as
  outside). tests/parity/pseudo_depth.safetensors holds this function's output for the Rust
  test that keeps the two identical.
"""
import numpy as np
from scipy.ndimage import distance_transform_edt


def distance_to_outside(inside: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance from each inside pixel to the nearest outside one (0 outside),
    with a ring of outside pixels around the image."""
    padded = np.pad(inside, 1, constant_values=False)
    return distance_transform_edt(padded)[1:-1, 1:-1].astype(np.float32)


def pseudo_depth(alpha: np.ndarray) -> np.ndarray:
    """Pseudo-depth in [0, 1] of an h×w alpha mask (1 = product), as src/depth.rs."""
    alpha = np.clip(alpha.astype(np.float32), 0, 1)
    e = distance_to_outside(alpha > 0.5)
    e_max = e.max()
    if e_max == 0:
        return np.zeros_like(alpha)
    s = 1 - e / e_max
    d = alpha * (0.5 + 0.5 * np.sqrt(np.maximum(1 - s * s, 0)))
    return np.where(e > 0, d, 0).astype(np.float32)


def rendered_depth(alpha: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """A rendered product's placed depth profile (0..1) in the runtime's convention."""
    return np.where(alpha > 0, np.clip(alpha, 0, 1) * (0.5 + 0.5 * np.clip(depth, 0, 1)), 0).astype(np.float32)
