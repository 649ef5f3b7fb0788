"""Photographic ad scenes: a real photograph behind the product, a real surface under it.

Each scene is drawn from a seed with numpy, so a data set is reproducible from this file,
`photo_sources.csv` (the labelled pictures, training/photo_sources.py) and the Debian packages
named there (training/fetch_photo_data.sh unpacks them without installing anything).

Two layouts:
- **table** (every backdrop): a random crop of the photograph, blurred as a lens focused on the
  product blurs a far background (depth of field), behind a table top: a GIMP surface pattern
  (wood, marble, granite, slate, burlap, cork) tiled and laid in true perspective (a homography
  of the table plane), its far part softened too. The product stands on the table.
- **ground** (backdrops labelled with a `ground` line: a jetty, a meadow, a table photographed
  in perspective): the crop keeps that ground in the lower part of the frame and the product
  stands on it; rows above the product's base blur progressively (tilt of focus).

Light that agrees with the backdrop: the crop's mean colour and brightness tint and scale the
table and the product (more at sunset and at night than in daylight), the product is shaded
from the crop's brighter side, and one film grain covers the whole frame. The product and its
contact shadow come from scenes.place (the procedural set's placement, on the floor line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageFilter

import scenes
from photo_sources import Source, load_image

LIGHT_PHRASES = {
    "day": ["bright daylight", "natural daylight", "sunny daylight"],
    "sunset": ["warm sunset light", "golden hour light", "warm evening light"],
    "night": ["blue evening light", "dim evening light"],
    "soft": ["soft light", "soft natural light", "diffuse light"],
}
# How strongly the backdrop's colour cast carries over to the table and product, per light.
TINT = {"day": 0.25, "soft": 0.3, "sunset": 0.55, "night": 0.5}
GROUND_SHARE = 0.45  # of ads on a backdrop with a ground line, this share stand on it
# Close-ups (a flower, a leaf, a splash) behind a table blur more: sharp, they dwarf the product.
MACRO_KINDS = {"flowers", "plants", "water", "autumn", "grass"}

# Stamps that read as a product on a table in a photograph: photo cut-outs of things a shop sells
# that stand (or lie) on a surface at table scale. Left out: clip-art drawings (clothes, hats,
# pizza, tooth), flower heads and trees (they float upright on a table), vehicles, a toilet, bins
# and a cement mixer (wrong scale), tools photographed flat from above at a slant (they hover when stood
# on a floor line; a carrot and a chile pepper, stood on their tips), the police-car decals, and
# the measuring tape's mirrored copy (it would double that product).
PHOTO_PRODUCTS = re.compile(
    r"^photo:(food/(fruit|nuts|vegetables|spices)/(?!garlics|carrot|chilepepper|sliced_)"
    r"|hobbies/(binoculars|camera_35mm|music/brass/trumpet|music/string/(guitar|violin)|music/wind/bassoon)"
    r"|household/(Lightbulb|arttools/pen_dryerase|dishes/(glass|mug|pitcher_small|teapot)"
    r"|dishes/utensils/pepper_grinder|kettle|rubberduck|tools/(measuring_tape\.|toolbox))"
    r"|plants/mushrooms/|plants/trees/pinecone|sports/(?!tennis_racket)|vehicles/ship/walnutBoat)")
# Stamp captions that are sentences, not product names.
PRODUCT_NAMES = {
    "Eat your broccoli!": "a head of broccoli", "Sweet yellow corn": "an ear of sweet yellow corn",
    "Measuring tape": "a measuring tape",
    "It's a cep, or they are two ceps?": "two ceps",
    "a Seville orange, also called a bitter orange": "a Seville orange",
    "a football used in Australian Rules": "an Australian rules football",
}


# Many stamps are small (an apple is 50 pixels high): scenes.place scales a product to
# PRODUCT_HEIGHT of the ad, so a stamp that would be enlarged more than this is left out at that
# ad size (a blurred product against a sharp table reads as pasted).
MAX_UPSCALE = 3.5


def max_upscale(p: scenes.ProductArt, size: int) -> float:
    """The most scenes.place can enlarge this stamp in a size² ad."""
    h, w = p.rgba.shape[:2]
    return min(scenes.PRODUCT_HEIGHT[1] * size / h, scenes.PRODUCT_MAX_WIDTH * size / w)


def photo_products(stamps: list[scenes.ProductArt], size: int = 256) -> list[scenes.ProductArt]:
    """The stamps fit for photo scenes (PHOTO_PRODUCTS, at most MAX_UPSCALE enlarged at this
    size), with product-name captions."""
    out = []
    for p in stamps:
        if not PHOTO_PRODUCTS.search(p.source) or max_upscale(p, size) > MAX_UPSCALE:
            continue
        name = PRODUCT_NAMES.get(p.name, p.name)
        name = re.sub(r"[“”'!]", "", name).replace(", ", " ").strip()
        out.append(replace(p, name=name))
    return out


@dataclass
class PhotoScene(scenes.Scene):
    light: str = "soft"
    light_phrase: str = ""
    short_phrase: str = ""  # the scene alone, for scene-only captions ("a walnut table in front of a lake")
    tint: np.ndarray = field(default_factory=lambda: np.ones(3, np.float32))
    side: float = 0.0  # -1: light from the left, +1: from the right
    meta: dict = field(default_factory=dict)


@dataclass
class Library:
    """The split's pictures, loaded once: backdrops at a working resolution, surface patterns as they are."""
    backdrops: list[tuple[Source, np.ndarray]]
    surfaces: list[tuple[Source, Image.Image]]


def load_library(sources: list[Source], size: int, roots=None) -> Library:
    work = int(size * 2)  # crops take 45-100 % of the short side: 0.9-2x the ad's side
    backdrops = [(s, np.asarray(load_image(s, work, roots))) for s in sources if s.use == "backdrop"]
    surfaces = [(s, load_image(s, None, roots)) for s in sources if s.use == "surface"]
    if not backdrops or not surfaces:
        raise ValueError("the library needs at least one backdrop and one surface")
    return Library(backdrops, surfaces)


def _f32(im: Image.Image) -> np.ndarray:
    return np.asarray(im).astype(np.float32) / 255


def _u8(a: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8))


def _homography(src, dst):
    """Coefficients for PIL's PERSPECTIVE transform mapping output points `dst` to input `src`."""
    A, b = [], []
    for (x, y), (u, v) in zip(dst, src):
        A.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        A.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    return np.linalg.solve(np.array(A, np.float64), np.array(b, np.float64))


def _crop(rng, photo: np.ndarray, size: int, ground: float | None):
    """A square crop resized to size², and where the photo's ground line falls in it (or None)."""
    H, W = photo.shape[:2]
    short = min(H, W)
    for _ in range(8):
        c = int(short * rng.uniform(0.45, 1.0))
        x0 = int(rng.integers(0, W - c + 1))
        if ground is None:
            y0, g = int(rng.integers(0, H - c + 1)), None
        else:
            gy = ground * H
            y0 = int(np.clip(gy - rng.uniform(0.2, 0.55) * c, 0, H - c))
            g = (gy - y0) / c
            if g > 0.6:  # the ground would sit too low for a product to stand on it
                continue
        break
    else:
        return None, None
    im = Image.fromarray(photo[y0:y0 + c, x0:x0 + c]).resize((size, size), Image.LANCZOS)
    return _f32(im), g


def _row_blend(sharp, blurred, weight_rows):
    w = np.clip(weight_rows, 0, 1)[:, None, None].astype(np.float32)
    return sharp * (1 - w) + blurred * w


def _blur(img, radius):
    return _f32(_u8(img).filter(ImageFilter.GaussianBlur(radius)))


def _light(rng, crop: np.ndarray, light: str):
    """Tint (3,), brightness and side (-1..1) of the light, read off the backdrop crop."""
    small = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize((32, 32), Image.BILINEAR)) / 255.0
    m = small.reshape(-1, 3).mean(0)
    lum = small @ np.array([0.299, 0.587, 0.114])
    s = TINT[light]
    tint = np.clip(1 + s * (m / max(m.mean(), 1e-3) - 1), 0.72, 1.3)
    bright = float(np.clip(0.62 + 0.55 * lum.mean(), 0.62, 1.04))
    if light == "night":
        bright *= 0.85
    side = float(np.clip((lum[:, 22:].mean() - lum[:, :10].mean()) * 3, -1, 1))
    return (tint * bright).astype(np.float32), side


def _table(rng, tex: Image.Image, size: int, edge: float, floor_y: float):
    """The surface pattern tiled on a table plane seen in perspective; rows < edge·size are empty."""
    ss = 3 if size <= 256 else 2  # supersampled, then reduced: the far side is minified a lot
    S = size * ss
    tile = tex.rotate(90 * int(rng.integers(4)), expand=True)
    if rng.random() < 0.5:
        tile = tile.transpose(Image.FLIP_LEFT_RIGHT)
    # The near (bottom) edge spans n_near tiles, the far edge k times as many; the plane's depth
    # is a share of the near width (a shallower table looks more top-down).
    tw, th = tile.size
    n_near = rng.uniform(2.0, 4.5) * (96 / max(tw, th)) ** 0.5
    n_near = max(n_near, size / (1.4 * tw))  # the patterns are small: enlarge them at most 1.4x at the front
    k = rng.uniform(1.8, 3.2)
    near = n_near * tw
    far = near * k
    depth = near * rng.uniform(0.45, 0.9)
    pad = 4
    cw, ch = int(far + 2 * pad * tw), int(depth + 2 * pad * th)
    canvas = Image.new("RGB", (cw, ch))
    for x in range(0, cw, tw):
        for y in range(0, ch, th):
            canvas.paste(tile, (x, y))
    # Low-frequency light and colour variation across the plane (cells of about two tiles), so
    # the repeats of a small pattern do not line up into a visible grid.
    cells = (max(2, int(cw / (2 * tw))), max(2, int(ch / (2 * th))))
    vary = Image.fromarray((rng.random((cells[1], cells[0])) * 255).astype(np.uint8)).resize((cw, ch), Image.BICUBIC)
    amount = rng.uniform(0.08, 0.16)
    canvas = _u8(_f32(canvas) * (1 - amount / 2 + amount * _f32(vary))[..., None])
    cx = cw / 2 + rng.uniform(-1, 1) * tw
    y_far, y_near = pad * th, pad * th + depth
    e = edge * S
    src = [(cx - far / 2, y_far), (cx + far / 2, y_far), (cx + near / 2, y_near), (cx - near / 2, y_near)]
    coeffs = _homography(src, [(0, e), (S, e), (S, S), (0, S)])
    plane = canvas.transform((S, S), Image.PERSPECTIVE, tuple(coeffs), Image.BICUBIC)
    plane = _f32(plane.resize((size, size), Image.LANCZOS))
    # Shade: a little darker towards the front and back, a soft light pool near the product.
    y = (np.arange(size, dtype=np.float32) + 0.5) / size
    shade = (rng.uniform(0.88, 1.0) + 0.08 * np.exp(-((y - floor_y) / 0.25) ** 2)
             - 0.06 * np.clip((y - edge) / (1 - edge), 0, 1))
    plane = plane * shade[:, None, None]
    # Depth of field: the far part of the table is softer than where the product stands.
    far_blur = _blur(plane, size * rng.uniform(0.004, 0.008))
    w = ((floor_y - y) / max(floor_y - edge, 1e-3)) * 0.9
    return _row_blend(plane, far_blur, w)


def make_photo_scene(rng, lib: Library, size: int) -> PhotoScene:
    src, photo = lib.backdrops[rng.integers(len(lib.backdrops))]
    # A backdrop that is itself a surface ("on a pale wooden table") is always stood on.
    always = src.ground is not None and src.phrase.startswith("on ")
    mode = "ground" if src.ground is not None and (always or rng.random() < GROUND_SHARE) else "table"
    crop, g = _crop(rng, photo, size, src.ground if mode == "ground" else None)
    if crop is None:  # no crop keeps the ground high enough: fall back to a table
        mode = "table"
        crop, g = _crop(rng, photo, size, None)
    if rng.random() < 0.5:
        crop = crop[:, ::-1].copy()
    tint, side = _light(rng, crop, src.light)
    y = (np.arange(size, dtype=np.float32) + 0.5) / size
    meta = {"backdrop": src.id, "mode": mode, "surface": None}
    if mode == "table":
        edge = rng.uniform(0.5, 0.7)
        floor_y = rng.uniform(max(edge + 0.14, 0.72), 0.93)
        back = _blur(crop, size * rng.uniform(0.008, 0.022) * (1.6 if src.kind in MACRO_KINDS else 1.0))
        tsrc, tex = lib.surfaces[rng.integers(len(lib.surfaces))]
        table = _table(rng, tex, size, edge, floor_y)
        table = table * (1 + rng.uniform(0.6, 1.0) * (tint - 1))  # the table sits in the backdrop's light
        e = int(round(edge * size))
        img = back.copy()
        img[e:] = table[e:]
        img[e:e + max(1, size // 256)] *= 0.82  # the table's back edge
        phrase = f"{tsrc.phrase} {src.phrase}"
        short = f"{tsrc.phrase.removeprefix('on ')} {src.phrase}"
        meta["surface"] = tsrc.id
    else:
        floor_y = rng.uniform(max(g + 0.2, 0.72), 0.94)
        # A close-up in the landscape: the ground in focus where the product stands, the rest
        # of the view strongly blurred (otherwise the product looks giant next to the trees).
        blurred = _blur(crop, size * rng.uniform(0.014, 0.028))
        img = _row_blend(crop, blurred, (floor_y - 0.04 - y) / 0.22)
        phrase = src.ground_phrase
        short = src.ground_phrase.removeprefix("on ")
    light_phrase = LIGHT_PHRASES[src.light][rng.integers(len(LIGHT_PHRASES[src.light]))]
    return PhotoScene(np.clip(img, 0, 1).astype(np.float32), src.kind, phrase, float(floor_y), light=src.light,
                      light_phrase=light_phrase, short_phrase=short, tint=tint, side=side, meta=meta)


def lit_product(art: scenes.ProductArt, scene: PhotoScene, rng) -> scenes.ProductArt:
    """The product in the scene's light: tinted and scaled like the backdrop, brighter on the lit side."""
    rgba = art.rgba.copy()
    w = rgba.shape[1]
    u = (np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1
    side = 1 + rng.uniform(0.08, 0.2) * scene.side * u
    gain = 1 + rng.uniform(0.5, 0.8) * (scene.tint - 1)
    rgba[..., :3] = np.clip(rgba[..., :3] * gain[None, None, :] * side[None, :, None], 0, 1)
    return replace(art, rgba=rgba)


def place_in_photo(scene: PhotoScene, art: scenes.ProductArt, rng, size: int):
    """scenes.place with the product lit like the scene, then one grain over the whole frame."""
    img, mask, box = scenes.place(scene, lit_product(art, scene, rng), rng, size, size)
    grain = rng.normal(0, 0.008, (size, size, 1)).astype(np.float32)
    return np.clip(img + grain, 0, 1), mask, box


def caption_for(rng, product: str, scene: PhotoScene) -> str:
    r = rng.random()
    if r < 0.5:
        return f"{product} {scene.phrase}, {scene.light_phrase}"
    if r < 0.85:
        return f"{product} {scene.phrase}"
    return scene.short_phrase
