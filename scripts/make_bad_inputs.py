"""Writes tests/fixtures/bad/: the photos, masks and style references a seller (or a hostile file)
may hand the studio, each small, for tests/bad_inputs.rs and the browser's bad-input walk.

    ~/.cache/adcanvas-py/bin/python scripts/make_bad_inputs.py      (Pillow; deterministic)
"""
import io
import os
import struct

import numpy as np

from PIL import Image, ImageDraw

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "bad")
os.makedirs(OUT, exist_ok=True)


def product(mode="RGB", size=(96, 72), bg=(255, 255, 255)):
    """A red mug-like box with a dark handle on a plain background."""
    img = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(img)
    w, h = size
    d.rectangle([w * 0.3, h * 0.25, w * 0.62, h * 0.85], fill=(190, 40, 30))
    d.rectangle([w * 0.62, h * 0.4, w * 0.72, h * 0.65], fill=(60, 20, 20))
    return img.convert(mode) if mode != "RGB" else img


def save(name, img, **kw):
    img.save(os.path.join(OUT, name), **kw)


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


white = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "product_white.jpg")
jpeg = open(white, "rb").read()
write("empty.jpg", b"")
write("truncated.jpg", jpeg[: len(jpeg) // 2])
write("text_named.jpg", b"This is not a photo, just a text file with the wrong name.\n")
buf = io.BytesIO()
product().save(buf, "PNG")
write("png_named.jpg", buf.getvalue())
save("cmyk.jpg", product("CMYK"), quality=95)
save("grey.png", product("L"))
save("grey_alpha.png", product("LA"))
grey = np.asarray(product("L"), dtype=np.uint16) * 257  # the full 16-bit range
save("grey16.png", Image.fromarray(grey.astype("<u2")))
save("palette.png", product("P"))
# A palette cut-out: the background is the transparent palette entry (tRNS).
p = product().convert("P", palette=Image.ADAPTIVE, colors=8)
bg_index = p.getpixel((0, 0))
save("palette_transparent.png", p, transparency=bg_index)
frames = [product(bg=(255, 255, 255)), product(bg=(250, 250, 250))]
frames[0].save(os.path.join(OUT, "animated.gif"), save_all=True, append_images=frames[1:], duration=100, loop=0)
frames[0].save(os.path.join(OUT, "animated.webp"), save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
# A portrait product photo as phones store it: pixels on their side, EXIF orientation 6 (rotate
# 90° clockwise to show). Used upright: 72 × 96.
exif = Image.Exif()
exif[0x0112] = 6
save("exif_rotated_product.jpg", product(size=(72, 96)).transpose(Image.Transpose.ROTATE_90), quality=95, exif=exif)
save("tiny_8x8.png", product(size=(8, 8)))
save("transparent.png", Image.new("RGBA", (64, 48), (255, 255, 255, 0)))
# A 12000 × 9000 JPEG header (SOF0 patched into a small JPEG): refused from the header, before
# any pixel is allocated.
small = io.BytesIO()
product(size=(16, 16)).save(small, "JPEG", quality=80)
b = bytearray(small.getvalue())
i = b.index(b"\xff\xc0")
b[i + 5 : i + 9] = struct.pack(">HH", 9000, 12000)
write("huge_12000x9000.jpg", bytes(b))
# Masks for product_white.jpg (its size): nothing selected, everything selected, another size.
size = Image.open(white).size
save("mask_empty.png", Image.new("L", size, 0))
save("mask_full.png", Image.new("L", size, 255))
save("mask_wrong_size.png", Image.new("L", (size[0] // 2, size[1]), 255))
print("wrote", sorted(os.listdir(OUT)))
