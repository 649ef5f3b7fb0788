#!/usr/bin/env python3
"""Write the small, deterministic image fixtures used by the Rust unit tests.

Usage:  python3 scripts/make_fixtures.py   (Python 3.11, numpy, Pillow)

Outputs go to tests/fixtures/ next to this script's parent directory.  Every
random number comes from a fixed seed so re-running the script reproduces the
same pixels (JPEG bytes may differ between libjpeg builds, which the tests
tolerate: they only assert bands for JPEG fixtures).

Fixtures and the facts the tests rely on:
  product_alpha_32.png   32x32 RGBA jar cut-out; alpha > 2 on every edge row and
                         column, so its bbox (threshold 0.01) is the full 32x32.
  product_alpha_128.png  128x128 RGBA jar cut-out with a transparent margin;
                         bbox x 24..103, y 8..119 (w 80, h 112).
  product_white.jpg      160x120 dark product on a near-white, slightly noisy
                         and vignetted background (quality 92); the product's
                         area fraction is printed (about 0.19).
  busy.jpg               96x72 colourful noise; the auto-mask must refuse it.
  corrupt.png            product_alpha_128.png truncated in the middle of IDAT.
  exif_rotated.jpg       48x32 stored pixels, EXIF Orientation=6 (rotate 90 CW
                         to display), red marker block in the stored top-left
                         corner -> after orientation 32x48 with red top-right.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
SS = 8  # supersampling factor for antialiased (1-px soft) edges


def coverage(h: int, w: int, inside) -> np.ndarray:
    """Fraction of each pixel covered by the shape `inside(x, y)` (float coords)."""
    ys = (np.arange(h * SS) + 0.5) / SS
    xs = (np.arange(w * SS) + 0.5) / SS
    X, Y = np.meshgrid(xs, ys)
    m = inside(X, Y).astype(np.float64)
    return m.reshape(h, SS, w, SS).mean(axis=(1, 3))


def rounded_rect(x0, y0, x1, y1, r):
    def f(X, Y):
        cx = np.clip(X, x0 + r, x1 - r)
        cy = np.clip(Y, y0 + r, y1 - r)
        return ((X - cx) ** 2 + (Y - cy) ** 2 <= r * r) & (X >= x0) & (X <= x1) & (Y >= y0) & (Y <= y1)

    return f


def jar(size: int, x0: float, y0: float, x1: float, y1: float) -> Image.Image:
    """A jar: dark-blue cap on top of a red body with a cream label band and a
    light highlight stripe.  Coordinates are the jar's outer bounds in pixels."""
    w = x1 - x0
    h = y1 - y0
    cap_h = 0.2 * h
    cap = rounded_rect(x0 + 0.3 * w, y0, x1 - 0.3 * w, y0 + cap_h + 1.0, 0.05 * w)
    body = rounded_rect(x0, y0 + cap_h, x1, y1, 0.2 * w)
    cov_cap = coverage(size, size, cap)
    cov_body = coverage(size, size, body)
    alpha = np.clip(cov_cap + cov_body, 0, 1)
    rgb = np.zeros((size, size, 3), np.float64)
    ys = (np.arange(size) + 0.5)[:, None] * np.ones((1, size))
    xs = np.ones((size, 1)) * (np.arange(size) + 0.5)[None, :]
    body_col = np.array([200, 40, 40])
    label_col = np.array([240, 228, 196])
    cap_col = np.array([30, 40, 120])
    hi_col = np.array([250, 170, 170])
    rgb[:] = body_col
    label = (ys > y0 + 0.45 * h) & (ys < y0 + 0.7 * h)
    rgb[label] = label_col
    hi = (xs > x0 + 0.15 * w) & (xs < x0 + 0.22 * w) & ~label
    rgb[hi] = hi_col
    capm = cov_cap > cov_body
    rgb[capm] = cap_col
    a8 = np.round(alpha * 255).astype(np.uint8)
    rgb8 = np.round(rgb).astype(np.uint8)
    rgb8[a8 == 0] = 0
    return Image.fromarray(np.dstack([rgb8, a8]), "RGBA")


def product_alpha_32() -> Image.Image:
    # Jar spans the full frame: cap touches row 0, body touches rows/cols at the edges.
    img = jar(32, 0.0, 0.0, 32.0, 32.0)
    a = np.asarray(img)[:, :, 3]
    assert a[0].max() > 2 and a[-1].max() > 2 and a[:, 0].max() > 2 and a[:, -1].max() > 2
    return img


def product_alpha_128() -> Image.Image:
    img = jar(128, 24.0, 8.0, 104.0, 120.0)
    a = np.asarray(img)[:, :, 3]
    ys, xs = np.nonzero(a > 2)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (24, 103, 8, 119), (xs.min(), xs.max(), ys.min(), ys.max())
    return img


def product_white() -> tuple[Image.Image, float]:
    rng = np.random.default_rng(7)
    h, w = 120, 160
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    r2 = ((xs - w / 2) / (w / 2)) ** 2 + ((ys - h / 2) / (h / 2)) ** 2
    bg = 250.0 - 6.0 * r2  # gentle vignette: ~250 centre, ~238 corners
    bg = np.repeat(bg[:, :, None], 3, axis=2)
    bg += rng.normal(0, 1.2, bg.shape)
    bg[:, :, 2] += 2.0  # very slightly cool white
    # Product: a bottle (green body, gold label, black cap).
    body = rounded_rect(58.0, 40.0, 102.0, 104.0, 10.0)
    neck = rounded_rect(71.0, 18.0, 89.0, 42.0, 3.0)
    cov = np.clip(coverage(h, w, body) + coverage(h, w, neck), 0, 1)
    prod = np.zeros((h, w, 3))
    prod[:] = [30, 110, 60]
    prod[(ys > 60) & (ys < 84)] = [200, 160, 40]
    prod[ys < 28] = [20, 20, 20]
    img = cov[:, :, None] * prod + (1 - cov[:, :, None]) * bg
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return Image.fromarray(img, "RGB"), float(cov.mean())


def busy() -> Image.Image:
    rng = np.random.default_rng(11)
    h, w = 72, 96
    small = rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)
    img = Image.fromarray(small, "RGB").resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(img).astype(np.float64) + rng.normal(0, 25, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def exif_rotated() -> bytes:
    arr = np.full((32, 48, 3), 200, np.uint8)
    arr[:8, :8] = [255, 0, 0]  # stored top-left marker
    arr[-8:, -8:] = [0, 0, 255]  # stored bottom-right marker
    img = Image.fromarray(arr, "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "product_alpha_32.png").write_bytes(png_bytes(product_alpha_32()))
    p128 = png_bytes(product_alpha_128())
    (OUT / "product_alpha_128.png").write_bytes(p128)
    white, frac = product_white()
    buf = io.BytesIO()
    white.save(buf, "JPEG", quality=92)
    (OUT / "product_white.jpg").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    busy().save(buf, "JPEG", quality=85)
    (OUT / "busy.jpg").write_bytes(buf.getvalue())
    (OUT / "corrupt.png").write_bytes(p128[: len(p128) // 2])
    (OUT / "exif_rotated.jpg").write_bytes(exif_rotated())
    total = 0
    for f in sorted(OUT.iterdir()):
        total += f.stat().st_size
        print(f"{f.name:24s} {f.stat().st_size:7d} bytes")
    print(f"total {total} bytes; product_white.jpg product area fraction {frac:.4f}")


if __name__ == "__main__":
    main()
