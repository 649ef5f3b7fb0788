"""The photographs and surface textures behind the photographic ad scenes (photo_scenes.py).

`photo_sources.csv` beside this file is the labelled table, one row per source picture:

- `id`: a short stable name (the held-out split hashes it); `package`, `file`: the Debian package and
  the path inside it (`dpkg -x PKG.deb ROOT/PKG` puts it at ROOT/PKG/FILE; an installed package has
  it at /FILE); `licence`, `author`: from the package's copyright file (training/CREDITS.md).
- `use`: `backdrop` (a photograph seen behind the product) or `surface` (a texture laid in
  perspective as the table the product stands on).
- `kind`: the scene kind (lake, mountains, flowers, ...), the ad's scene label; `light`: day,
  sunset, night or soft (backdrops); `phrase`: the caption phrase ("in front of a misty lake",
  "on a walnut table").
- `ground`: for backdrops whose own foreground can carry a product (a jetty, a meadow, a table
  top), the height (fraction from the top) where that ground starts; `ground_phrase` the caption
  phrase for standing on it. Empty: the product always stands on a surface texture.
- `region`: "x0 y0 x1 y1" (fractions) of the picture that crops may use (empty: all of it).
- `colours`: the dominant named colours (scenes.COLOURS), written by `--fill-colours`.

    python training/photo_sources.py --fill-colours   # recompute the colours column
    python training/photo_sources.py --sheet out.png  # contact sheet of every source, held-out marked
    python training/photo_sources.py                  # counts per package, licence and split

Held-out split (`split`): within each use, the sources are ordered by the SHA-1 of their id and
the first max(1, round(n / 10)) are held out; they never appear in the training set, whole or
cropped. Adding a source moves at most one other across the split.
"""

from __future__ import annotations

import csv
import hashlib
import os
import struct
import sys
from dataclasses import dataclass

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
CSV_PATH = os.path.join(HERE, "photo_sources.csv")
# Where `training/fetch_photo_data.sh` unpacks the packages; "/" finds installed ones.
DEFAULT_ROOTS = [os.environ.get("ADCANVAS_PHOTO_DATA", "/tmp/photo-data"), "/"]


@dataclass
class Source:
    id: str
    package: str
    file: str
    licence: str
    author: str
    use: str  # backdrop | surface
    kind: str
    light: str
    phrase: str
    ground: float | None
    ground_phrase: str
    region: tuple[float, float, float, float]
    colours: list[str]

    def path(self, roots=None) -> str | None:
        for root in roots or DEFAULT_ROOTS:
            for p in (os.path.join(root, self.package, self.file), os.path.join(root, self.file)):
                if os.path.exists(p):
                    return p
        return None


def load_table(csv_path=CSV_PATH) -> list[Source]:
    out = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            region = tuple(float(v) for v in r["region"].split()) if r["region"].strip() else (0.0, 0.0, 1.0, 1.0)
            out.append(Source(r["id"], r["package"], r["file"], r["licence"], r["author"], r["use"], r["kind"],
                              r["light"], r["phrase"], float(r["ground"]) if r["ground"].strip() else None,
                              r["ground_phrase"], region, r["colours"].split()))
    ids = [s.id for s in out]
    assert len(ids) == len(set(ids)), "duplicate ids in photo_sources.csv"
    return out


def split(sources: list[Source]) -> tuple[list[Source], list[Source]]:
    """(train, heldout): per use, the max(1, round(n/10)) sources with the smallest SHA-1(id) are held out."""
    train, held = [], []
    for use in sorted({s.use for s in sources}):
        group = sorted((s for s in sources if s.use == use), key=lambda s: hashlib.sha1(s.id.encode()).hexdigest())
        k = max(1, round(len(group) / 10))
        held += group[:k]
        train += group[k:]
    order = {s.id: i for i, s in enumerate(sources)}
    return sorted(train, key=lambda s: order[s.id]), sorted(held, key=lambda s: order[s.id])


def read_gimp_pattern(path) -> Image.Image:
    """A GIMP .pat pattern (header: size, version, width, height, bytes per pixel, 'GPAT', name)."""
    with open(path, "rb") as f:
        b = f.read()
    header, _version, w, h, bpp = struct.unpack(">5I", b[:20])
    if b[20:24] != b"GPAT":
        raise ValueError(f"{path}: not a GIMP pattern")
    a = np.frombuffer(b[header:header + w * h * bpp], np.uint8).reshape(h, w, bpp)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[bpp]
    return Image.fromarray(a[..., 0] if bpp == 1 else a, mode).convert("RGB")


def load_image(src: Source, max_side: int | None = None, roots=None) -> Image.Image:
    """The source as RGB, cropped to its region; photographs downscaled so the region's short
    side is at most `max_side` (JPEG draft mode keeps loading the 6000-pixel ones quick)."""
    p = src.path(roots)
    if p is None:
        raise FileNotFoundError(f"{src.package}/{src.file}: run training/fetch_photo_data.sh")
    if p.endswith(".pat"):
        return read_gimp_pattern(p)
    im = Image.open(p)
    if max_side:
        rw, rh = src.region[2] - src.region[0], src.region[3] - src.region[1]
        short = min(im.width * rw, im.height * rh)
        if short > max_side:
            im.draft("RGB", (int(im.width * max_side / short), int(im.height * max_side / short)))
    im = im.convert("RGB")
    x0, y0, x1, y1 = src.region
    im = im.crop((round(x0 * im.width), round(y0 * im.height), round(x1 * im.width), round(y1 * im.height)))
    if max_side and min(im.size) > max_side:
        s = max_side / min(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
    return im


def _lab(rgb):
    """sRGB in [0, 1] (..., 3) to CIE L*a*b* (D65)."""
    c = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = c @ np.array([[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192], [0.1805, 0.0722, 0.9505]], np.float32)
    xyz /= np.array([0.9505, 1.0, 1.089], np.float32)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def colour_names(im: Image.Image, k=3, min_share=0.12) -> list[str]:
    """The named colours (scenes.COLOURS) covering the most pixels, at most k, each ≥ min_share;
    nearest in L*a*b* with lightness weighted half, so a dark green forest counts as green."""
    from scenes import COLOURS

    names = list(COLOURS)
    w = np.array([0.5, 1.0, 1.0], np.float32)
    ref = _lab(np.array([COLOURS[n] for n in names], np.float32)) * w
    a = np.asarray(im.convert("RGB").resize((96, 96), Image.BILINEAR)).reshape(-1, 3).astype(np.float32) / 255
    d = ((_lab(a)[:, None, :] * w - ref[None]) ** 2).sum(-1)
    share = np.bincount(d.argmin(1), minlength=len(names)) / len(a)
    order = np.argsort(-share)
    out = [names[i] for i in order[:k] if share[i] >= min_share]
    return out or [names[order[0]]]


def fill_colours(csv_path=CSV_PATH):
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
        fields = list(rows[0])
    by_id = {s.id: s for s in load_table(csv_path)}
    for r in rows:
        r["colours"] = " ".join(colour_names(load_image(by_id[r["id"]], 256)))
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def contact_sheet(sources, out, thumb=200, cols=6):
    from PIL import ImageDraw

    _train, held = split(sources)
    held_ids = {s.id for s in held}
    rows = (len(sources) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * thumb, rows * (thumb + 26)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, s in enumerate(sources):
        im = load_image(s, thumb * 2)
        if s.use == "surface":  # tile small patterns so their look (and seams) show
            t = Image.new("RGB", (max(thumb, im.width * 2), max(thumb, im.height * 2)))
            for x in range(0, t.width, im.width):
                for y in range(0, t.height, im.height):
                    t.paste(im, (x, y))
            im = t
        im.thumbnail((thumb, thumb))
        x, y = (i % cols) * thumb, (i // cols) * (thumb + 26)
        sheet.paste(im, (x, y))
        mark = " [HELD OUT]" if s.id in held_ids else ""
        draw.text((x + 2, y + thumb), f"{s.id} {s.kind} {s.light}{mark}", fill="red" if mark else "black")
        draw.text((x + 2, y + thumb + 12), " ".join(s.colours), fill="black")
    sheet.save(out)


def main():
    import argparse

    sys.path.insert(0, HERE)
    ap = argparse.ArgumentParser()
    ap.add_argument("--fill-colours", action="store_true")
    ap.add_argument("--sheet")
    args = ap.parse_args()
    if args.fill_colours:
        fill_colours()
    sources = load_table()
    if args.sheet:
        contact_sheet(sources, args.sheet)
    train, held = split(sources)
    from collections import Counter

    print("per package and licence:")
    for (pkg, lic, use), n in sorted(Counter((s.package, s.licence, s.use) for s in sources).items()):
        print(f"  {pkg:32s} {lic:36s} {use:8s} {n}")
    missing = [s.id for s in sources if s.path() is None]
    print(f"train {len(train)}, held out {len(held)}: {', '.join(s.id for s in held)}")
    if missing:
        print("missing (run training/fetch_photo_data.sh):", ", ".join(missing))


if __name__ == "__main__":
    main()
