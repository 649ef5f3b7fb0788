"""Procedural ad scenes and products for training the default model.

Everything here is drawn from a seed with numpy, so the data set is reproducible from
this file and the Debian package `tuxpaint-stamps-default` (product photos). Each scene
type has a label (for the evaluation's scene classifier) and caption phrases in the
vocabulary sellers use ("marble counter", "studio", "beach at sunset").
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

# ---------------------------------------------------------------------------------------
# Colours with names: prompts say "a pink studio", so the colour must show.
COLOURS = {
    "white": (0.93, 0.93, 0.92), "black": (0.08, 0.08, 0.09), "grey": (0.55, 0.56, 0.58),
    "red": (0.78, 0.14, 0.14), "pink": (0.95, 0.62, 0.72), "orange": (0.95, 0.55, 0.15),
    "yellow": (0.96, 0.85, 0.25), "green": (0.22, 0.6, 0.3), "mint": (0.66, 0.9, 0.78),
    "teal": (0.1, 0.5, 0.5), "blue": (0.18, 0.35, 0.78), "navy": (0.08, 0.12, 0.35),
    "purple": (0.5, 0.25, 0.65), "lavender": (0.75, 0.68, 0.9), "beige": (0.9, 0.83, 0.7),
    "brown": (0.45, 0.3, 0.18), "gold": (0.85, 0.68, 0.3),
}

LIGHTS = ["soft light", "soft morning light", "warm evening light", "bright daylight", "studio lighting", "dramatic light"]


@dataclass
class Scene:
    image: np.ndarray  # H×W×3 float32 in [0, 1]
    label: str  # scene type, for the classifier
    phrase: str  # "on a marble counter"
    floor_y: float  # where products stand (fraction of height), for placement and shadows


def _grid(h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return y / h, x / w


def _noise(rng, h, w, scale, octaves=4):
    """Smooth value noise in [0, 1] (sum of upsampled random grids)."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = max(2, int(scale * 2**o))
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        img = Image.fromarray(grid).resize((w, h), Image.BICUBIC)
        out += amp * np.asarray(img)
        total += amp
        amp *= 0.5
    out /= total
    return np.clip((out - out.min()) / (np.ptp(out) + 1e-6), 0, 1)


def _mix(a, b, t):
    t = t[..., None] if np.ndim(t) == 2 else t
    return np.asarray(a, np.float32) * (1 - t) + np.asarray(b, np.float32) * t


def _jitter(rng, c, amount=0.06):
    return np.clip(np.asarray(c) + rng.normal(0, amount, 3), 0, 1).astype(np.float32)


def _vignette(img, strength):
    h, w = img.shape[:2]
    y, x = _grid(h, w)
    d = (x - 0.5) ** 2 + (y - 0.45) ** 2
    return img * (1 - strength * d[..., None] * 2)


def _wall_and_floor(rng, h, w, wall, floor, horizon):
    y, _ = _grid(h, w)
    t = np.clip((y - horizon) / 0.02 + 0.5, 0, 1)
    shade = 0.85 + 0.15 * (1 - y)[..., None]
    return _mix(wall, floor, t) * shade


def studio(rng, h, w):
    name = rng.choice(list(COLOURS))
    c = _jitter(rng, COLOURS[name])
    y, x = _grid(h, w)
    # Seamless sweep: lighter on the wall, a soft curve into the floor.
    t = 1 / (1 + np.exp(-(y - 0.62) * 10))
    img = _mix(c * 1.08, c * 0.82, t)
    img = img + 0.12 * np.exp(-(((x - 0.5) / 0.35) ** 2 + ((y - 0.35) / 0.4) ** 2))[..., None]
    return Scene(_vignette(img, 0.4), "studio", f"in a {name} photo studio", 0.72)


def gradient(rng, h, w):
    n1, n2 = rng.choice(list(COLOURS), 2, replace=False)
    y, x = _grid(h, w)
    a = rng.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + (x - 0.5) * np.cos(a) + (y - 0.5) * np.sin(a), 0, 1)
    img = _mix(_jitter(rng, COLOURS[n1]), _jitter(rng, COLOURS[n2]), t)
    return Scene(img, "gradient", f"on a {n1} and {n2} gradient background", 0.75)


def _wood(rng, h, w):
    base = _jitter(rng, rng.choice([(0.55, 0.36, 0.2), (0.72, 0.53, 0.34), (0.35, 0.22, 0.13), (0.8, 0.66, 0.48)]), 0.04)
    n = _noise(rng, h, w, 3)
    y, x = _grid(h, w)
    rings = np.sin((y * rng.uniform(30, 60) + n * 8)) * 0.5 + 0.5
    fine = _noise(rng, h, w, 40, 2)
    t = 0.75 + 0.2 * rings + 0.1 * fine
    return base * t[..., None]


def _marble(rng, h, w, dark=False):
    base = np.array((0.12, 0.12, 0.13) if dark else (0.92, 0.91, 0.89), np.float32)
    vein = np.array((0.8, 0.78, 0.74) if dark else (0.45, 0.45, 0.48), np.float32)
    n = _noise(rng, h, w, 4, 5)
    y, x = _grid(h, w)
    v = np.abs(np.sin((x * 3 + y * 2 + n * 6) * np.pi))
    t = np.clip(1 - v * 8, 0, 1) ** 2 * 0.8
    return _mix(base, vein, t)


def _concrete(rng, h, w):
    g = rng.uniform(0.45, 0.75)
    n = _noise(rng, h, w, 20, 4)
    spots = (_noise(rng, h, w, 60, 1) > 0.85) * 0.08
    v = g * (0.85 + 0.25 * n) - spots
    return np.repeat(v[..., None], 3, axis=2) * np.array([1.0, 0.99, 0.97], np.float32)


def _fabric(rng, h, w):
    name = rng.choice(["beige", "white", "grey", "blue", "pink", "green", "lavender"])
    c = _jitter(rng, COLOURS[name])
    y, x = _grid(h, w)
    f = rng.uniform(80, 140)
    weave = (np.sin(x * f) * np.sin(y * f)) * 0.05
    folds = (_noise(rng, h, w, 3, 3) - 0.5) * 0.35
    return c * (1 + weave + folds)[..., None], name


def _perspective(tex, horizon, h, w):
    """Lays a texture on a floor plane below `horizon` (rows compress towards it)."""
    out = np.zeros_like(tex)
    rows = np.arange(h)
    start = int(horizon * h)
    for r in rows[start:]:
        depth = (r - start + 1) / (h - start)
        src_y = int((1 - depth) * 0.6 * h + depth * (h - 1))
        scale = 0.5 + 0.5 * depth
        xs = ((np.arange(w) - w / 2) * scale + w / 2).astype(int).clip(0, w - 1)
        out[r] = tex[min(src_y, h - 1), xs]
    return out


def tabletop(rng, h, w):
    kind = rng.choice(["wood", "marble", "dark marble", "concrete"])
    tex = {"wood": lambda: _wood(rng, h, w), "marble": lambda: _marble(rng, h, w),
           "dark marble": lambda: _marble(rng, h, w, True), "concrete": lambda: _concrete(rng, h, w)}[kind]()
    horizon = rng.uniform(0.45, 0.62)
    wall_name = rng.choice(["white", "beige", "grey", "mint", "pink", "navy", "green", "black"])
    wall = _jitter(rng, COLOURS[wall_name])
    y, x = _grid(h, w)
    wall_img = wall * (0.9 + 0.15 * np.exp(-((x - 0.3) ** 2) / 0.08))[..., None]
    floor = _perspective(tex, horizon, h, w)
    img = np.where((y < horizon)[..., None], wall_img, floor)
    # A soft edge line where table meets wall.
    edge = np.exp(-(((y - horizon) / 0.006) ** 2))[..., None]
    img = img * (1 - 0.25 * edge)
    surface = {"wood": "a wooden table", "marble": "a marble counter", "dark marble": "a black marble counter",
               "concrete": "a concrete surface"}[kind]
    label = {"wood": "wood", "marble": "marble", "dark marble": "marble", "concrete": "concrete"}[kind]
    return Scene(img, label, f"on {surface} against a {wall_name} wall", min(0.97, horizon + rng.uniform(0.18, 0.3)))


def fabric(rng, h, w):
    img, name = _fabric(rng, h, w)
    return Scene(img, "fabric", f"on {name} linen fabric", 0.75)


def concrete(rng, h, w):
    img = _concrete(rng, h, w)
    return Scene(img, "concrete", "on a grey concrete background", 0.75)


def podium(rng, h, w):
    name = rng.choice(list(COLOURS))
    c = _jitter(rng, COLOURS[name])
    y, x = _grid(h, w)
    img = _mix(c * 1.1, c * 0.75, y)
    top = rng.uniform(0.62, 0.74)
    rx = rng.uniform(0.28, 0.4)
    body = (np.abs(x - 0.5) < rx) & (y > top)
    pod = _jitter(rng, rng.choice([COLOURS["white"], COLOURS["beige"], c * 0.9, COLOURS["pink"]]), 0.03)
    shade = (0.8 + 0.25 * np.cos((x - 0.5) / rx * np.pi / 2))[..., None]
    img = np.where(body[..., None], pod * shade * 0.92, img)
    cap = ((x - 0.5) / rx) ** 2 + ((y - top) / 0.035) ** 2 < 1
    img = np.where(cap[..., None], pod * 1.04, img)
    return Scene(img, "podium", f"on a round podium, {name} background", top + 0.01)


def leaves(rng, h, w):
    y, x = _grid(h, w)
    img = _mix((0.1, 0.3, 0.12), (0.3, 0.55, 0.25), _noise(rng, h, w, 2))
    pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    arr = np.asarray(pil).astype(np.float32) / 255
    canvas = arr.copy()
    for _ in range(rng.integers(25, 45)):
        cx, cy = rng.uniform(0, 1, 2)
        a, b = rng.uniform(0.06, 0.16), rng.uniform(0.02, 0.05)
        th = rng.uniform(0, np.pi)
        dx, dy = x - cx, y - cy
        u = dx * np.cos(th) + dy * np.sin(th)
        v = -dx * np.sin(th) + dy * np.cos(th)
        m = (u / a) ** 2 + (v / b) ** 2 < 1
        col = _jitter(rng, (0.2, 0.5, 0.2), 0.1) * (0.9 + 0.2 * (u / a))[..., None]
        canvas = np.where(m[..., None], col, canvas)
    img = np.asarray(Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(rng.uniform(1.5, 4)))).astype(np.float32) / 255
    return Scene(img, "leaves", "among green leaves and plants", 0.8)


def beach(rng, h, w):
    y, x = _grid(h, w)
    sunset = rng.random() < 0.35
    sky_top, sky_bot = ((0.35, 0.25, 0.55), (0.98, 0.6, 0.35)) if sunset else ((0.3, 0.55, 0.9), (0.75, 0.88, 0.98))
    sea_y = rng.uniform(0.35, 0.5)
    sand_y = sea_y + rng.uniform(0.12, 0.2)
    img = _mix(sky_top, sky_bot, np.clip(y / sea_y, 0, 1))
    sea = _mix((0.1, 0.45, 0.6), (0.2, 0.6, 0.7), np.clip((y - sea_y) / (sand_y - sea_y), 0, 1))
    sea = sea * (0.95 + 0.1 * _noise(rng, h, w, 30, 2))[..., None]
    sand = np.array((0.93, 0.82, 0.62), np.float32) * (0.9 + 0.15 * _noise(rng, h, w, 50, 3))[..., None]
    img = np.where((y >= sea_y)[..., None], sea, img)
    img = np.where((y >= sand_y + 0.01 * np.sin(x * 20))[..., None], sand, img)
    phrase = "on the beach at sunset" if sunset else "on a sunny beach by the sea"
    return Scene(img, "beach", phrase, min(0.95, sand_y + 0.2))


def _bokeh(rng, img, colours, n, rmin, rmax, alpha=0.5):
    h, w = img.shape[:2]
    y, x = _grid(h, w)
    for _ in range(n):
        cx, cy = rng.uniform(0, 1, 2)
        r = rng.uniform(rmin, rmax)
        col = _jitter(rng, colours[rng.integers(len(colours))], 0.05)
        m = np.clip(1 - (np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / r) ** 4, 0, 1)[..., None] * alpha
        img = img * (1 - m) + col * m
    return img


def seasonal(rng, h, w):
    season = rng.choice(["christmas", "autumn", "spring", "summer"])
    y, x = _grid(h, w)
    if season == "christmas":
        img = _mix((0.45, 0.05, 0.06), (0.15, 0.02, 0.03), y)
        img = _bokeh(rng, img, [(1, 0.85, 0.4), (1, 0.95, 0.8), (0.9, 0.2, 0.2), (0.2, 0.6, 0.3)], 40, 0.02, 0.06, 0.7)
        phrase = "with festive christmas lights"
    elif season == "autumn":
        img = _mix((0.85, 0.55, 0.25), (0.5, 0.25, 0.1), y)
        img = _bokeh(rng, img, [(0.9, 0.4, 0.1), (0.75, 0.2, 0.08), (0.95, 0.7, 0.2)], 60, 0.03, 0.08, 0.8)
        phrase = "with autumn leaves in orange and red"
    elif season == "spring":
        img = _mix((0.95, 0.9, 0.95), (0.8, 0.92, 0.8), y)
        img = _bokeh(rng, img, [(1, 0.7, 0.8), (1, 1, 1), (0.95, 0.85, 0.4), (0.8, 0.7, 1)], 50, 0.015, 0.04, 0.9)
        phrase = "with spring flowers in pastel colours"
    else:
        img = _mix((0.3, 0.75, 0.95), (0.98, 0.9, 0.5), y)
        img = _bokeh(rng, img, [(1, 1, 0.8), (1, 0.9, 0.3)], 20, 0.03, 0.1, 0.5)
        phrase = "in bright summer sunshine"
    img = np.asarray(Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(1.5))).astype(np.float32) / 255
    return Scene(img, season, phrase, 0.8)


SCENES = [studio, gradient, tabletop, tabletop, fabric, concrete, podium, leaves, beach, seasonal]
SCENE_LABELS = ["studio", "gradient", "wood", "marble", "concrete", "fabric", "podium", "leaves", "beach",
                "christmas", "autumn", "spring", "summer"]


def make_scene(rng, h, w) -> Scene:
    s = SCENES[rng.integers(len(SCENES))](rng, h, w)
    s.image = np.clip(s.image, 0, 1).astype(np.float32)
    return s


# ---------------------------------------------------------------------------------------
# Products: photo cut-outs from tuxpaint-stamps-default, and rendered ones with exact masks.

STAMPS_DIR = "/usr/share/tuxpaint/stamps"
STAMP_SKIP = re.compile(r"cartoon|symbols|town|animals|people|military|space|naturalforces|seasonal")


@dataclass
class ProductArt:
    name: str  # "a teapot"
    rgba: np.ndarray  # h×w×4 float32, straight alpha
    source: str  # "photo" / "rendered"
    depth: np.ndarray | None = None  # h×w in [0, 1] (1 = nearest) for rendered products


def load_stamps(stamps_dir=STAMPS_DIR):
    """Every product-like stamp with alpha and its English caption (first line of the .txt)."""
    out = []
    for png in sorted(glob.glob(os.path.join(stamps_dir, "**", "*.png"), recursive=True)):
        rel = os.path.relpath(png, stamps_dir)
        if STAMP_SKIP.search(rel):
            continue
        im = Image.open(png)
        if im.mode not in ("RGBA", "LA", "P"):
            continue
        im = im.convert("RGBA")
        a = np.asarray(im).astype(np.float32) / 255
        if a[..., 3].mean() < 0.05 or a[..., 3].min() > 0.5:
            continue
        txt = os.path.splitext(png)[0] + ".txt"
        name = None
        if os.path.exists(txt):
            with open(txt, encoding="utf-8", errors="replace") as f:
                name = f.readline().strip().rstrip(".").strip()
        if not name:
            name = os.path.splitext(os.path.basename(png))[0].replace("_", " ")
        name = re.sub(r"^(A|An|The|Some) ", lambda m: m.group(1).lower() + " ", name)
        out.append(ProductArt(name, a, "photo:" + rel))
    return out


PROCEDURAL = ["bottle", "box", "jar", "can", "tube", "cup"]


def render_product(rng, kind=None):
    """A simple shaded product with an exact mask (and depth, returned as a 4th value)."""
    kind = kind or PROCEDURAL[rng.integers(len(PROCEDURAL))]
    H = 160
    name = rng.choice(list(COLOURS))
    c = _jitter(rng, COLOURS[name], 0.04)
    W = {"bottle": 60, "box": 110, "jar": 100, "can": 70, "tube": 45, "cup": 90}[kind]
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    u = (x + 0.5) / W * 2 - 1  # -1..1 across
    v = (y + 0.5) / H
    if kind == "bottle":
        half = np.where(v < 0.12, 0.25, np.where(v < 0.35, 0.25 + (v - 0.12) / 0.23 * 0.75, 1.0))
    elif kind == "jar":
        half = np.where(v < 0.15, 0.8, 0.95)
    elif kind == "tube":
        half = np.where(v < 0.1, 0.4, 1.0 - 0.1 * v)
    elif kind == "cup":
        half = np.where(v < 0.45, 1.0, 0.0) * (1 - 0.2 * v / 0.45)
    else:
        half = np.ones_like(v)
    mask = (np.abs(u) <= half).astype(np.float32)
    depth = np.sqrt(np.clip(1 - (u / np.maximum(half, 1e-3)) ** 2, 0, 1)) * mask
    if kind == "box":
        depth = mask * (1 - 0.3 * np.abs(u))
    shade = 0.55 + 0.45 * depth + 0.35 * np.exp(-((u + 0.45) / 0.15) ** 2) * mask  # highlight
    rgb = c * shade[..., None]
    # A label band, so the product has a face.
    if kind in ("bottle", "jar", "can", "tube", "box"):
        band = (v > 0.45) & (v < 0.75)
        lab = _jitter(rng, COLOURS[rng.choice(["white", "beige", "black", "gold"])], 0.03)
        rgb = np.where(band[..., None], lab * shade[..., None], rgb)
    if kind == "jar":
        lid = v < 0.15
        rgb = np.where(lid[..., None], np.array((0.75, 0.75, 0.78)) * shade[..., None], rgb)
    rgba = np.concatenate([np.clip(rgb, 0, 1), mask[..., None]], axis=2).astype(np.float32)
    word = {"tube": "cosmetic tube", "box": "gift box"}.get(kind, kind)
    article = "an" if name[0] in "aeiou" else "a"
    return ProductArt(f"{article} {name} {word}", rgba, "rendered:" + kind, depth.astype(np.float32)), depth


# Products' size in training: this share of the ad's height, capped at this share of its width
# (wide products). export.py records the smallest in the pack, so that the runtime can say when
# a user's product is smaller than any the model saw.
PRODUCT_HEIGHT = (0.35, 0.62)
PRODUCT_MAX_WIDTH = 0.8


def place(scene: Scene, art: ProductArt, rng, h, w):
    """Pastes the product into the scene with a contact shadow; returns image, mask and the
    product's box (x0, y0, width, height) on the canvas."""
    ph, pw = art.rgba.shape[:2]
    target_h = rng.uniform(*PRODUCT_HEIGHT) * h
    s = min(target_h / ph, PRODUCT_MAX_WIDTH * w / pw)
    nh, nw = max(4, int(ph * s)), max(4, int(pw * s))
    im = Image.fromarray((art.rgba * 255).astype(np.uint8), "RGBA").resize((nw, nh), Image.LANCZOS)
    p = np.asarray(im).astype(np.float32) / 255
    cx = w / 2 + rng.uniform(-0.12, 0.12) * w
    bottom = int(np.clip(scene.floor_y * h + rng.uniform(-0.04, 0.04) * h, nh + 2, h - 2))
    x0, y0 = int(cx - nw / 2), bottom - nh
    x0 = int(np.clip(x0, 0, w - nw))
    img = scene.image.copy()
    # Contact shadow: a soft dark ellipse at the base.
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    sx = (x - (x0 + nw / 2)) / (nw * 0.55)
    sy = (y - bottom) / max(4.0, nh * 0.06)
    shadow = np.exp(-(sx**2 + sy**2) * 2) * rng.uniform(0.35, 0.6)
    img = img * (1 - shadow[..., None])
    mask = np.zeros((h, w), np.float32)
    a = p[..., 3:4]
    img[y0:y0 + nh, x0:x0 + nw] = img[y0:y0 + nh, x0:x0 + nw] * (1 - a) + p[..., :3] * a
    mask[y0:y0 + nh, x0:x0 + nw] = p[..., 3]
    return np.clip(img, 0, 1), mask, (x0, y0, nw, nh)


def placed_depth(art: ProductArt, mask, box):
    """The ad's depth map for the ControlNet (training/depth.py's convention): the rendered
    product's own depth resized into its box, or the mask's pseudo-depth for photo cut-outs."""
    from depth import pseudo_depth, rendered_depth

    if art.depth is None:
        return pseudo_depth(mask)
    x0, y0, nw, nh = box
    d = np.asarray(Image.fromarray(art.depth.astype(np.float32), "F").resize((nw, nh), Image.BILINEAR))
    full = np.zeros_like(mask)
    full[y0:y0 + nh, x0:x0 + nw] = d
    return rendered_depth(mask, full)
