"""Rendered text: words from Python standard-library docstrings, drawn with PIL fonts.

``lines``: grey text lines at easyocr's recogniser height (64), resized keeping the aspect ratio
and right-padded with the last column as easyocr's ``AlignCollate``/``NormalizePAD`` do.
``pages``: RGB page-like images with several lines of text (plain paper or photo backgrounds)
for CRAFT. Fonts: every TrueType/OpenType file under the usual font folders, or PIL's bundled
default font when there are none.
"""

from __future__ import annotations

import functools
import importlib
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .nets import EASYOCR_CHARS
from .photos import photos, window

DOC_MODULES = [
    "argparse", "collections", "csv", "datetime", "email", "functools", "http.client", "json",
    "logging", "os", "pathlib", "re", "shutil", "socket", "string", "subprocess", "textwrap",
    "threading", "unittest", "urllib.parse", "zipfile",
]  # fmt: skip
FONT_DIRS = ["/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "C:/Windows/Fonts"]


@functools.cache
def words() -> list[str]:
    """Words of the docstrings of these modules and their public members, in easyocr's
    English character set, deduplicated in first-seen order."""
    seen: dict[str, None] = {}
    allowed = set(EASYOCR_CHARS) - {" "}
    for name in DOC_MODULES:
        mod = importlib.import_module(name)
        docs = [mod.__doc__ or ""] + [
            getattr(getattr(mod, a, None), "__doc__", None) or ""
            for a in sorted(dir(mod))
            if not a.startswith("_")
        ]
        for w in re.findall(r"\S+", " ".join(docs)):
            if 1 < len(w) <= 16 and set(w) <= allowed:
                seen.setdefault(w, None)
    return list(seen)


@functools.cache
def fonts() -> list[str]:
    """Font files found on this machine (sorted), empty when there are none."""
    found = set()
    for d in FONT_DIRS:
        if Path(d).is_dir():
            found |= {str(p) for p in Path(d).rglob("*") if p.suffix.lower() in (".ttf", ".otf")}
    return sorted(f for f in found if _loads(f))


def _loads(path: str) -> bool:
    try:
        ImageFont.truetype(path, 20).getbbox("Ag")
        return True
    except Exception:  # noqa: BLE001  # symbol/broken fonts
        return False


def font(rng: np.random.Generator, px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    files = fonts()
    if not files:
        return ImageFont.load_default(size=px)
    return ImageFont.truetype(files[rng.integers(len(files))], px)


def phrase(rng: np.random.Generator, max_words: int) -> str:
    ws = words()
    return " ".join(ws[i] for i in rng.integers(len(ws), size=rng.integers(1, max_words + 1)))


def _grey(lo: int, hi: int, rng: np.random.Generator) -> int:
    return int(rng.integers(lo, hi))


def lines(n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """n text lines, uint8 [n, h, w]: 1-3 words, dark on light (20% inverted), light blur and
    noise, cropped to the text with a small margin, resized to height h keeping the aspect
    (width capped at w), right-padded with the last column (easyocr's NormalizePAD)."""
    out = np.empty((n, h, w), np.uint8)
    for i in range(n):
        text = phrase(rng, 3)
        f = font(rng, int(rng.integers(24, 48)))
        fg, bg = _grey(0, 90, rng), _grey(160, 256, rng)
        if rng.random() < 0.2:
            fg, bg = 255 - fg, 255 - bg
        x0, y0, x1, y1 = f.getbbox(text)
        m = int(rng.integers(2, 10))
        img = Image.new("L", (x1 - x0 + 2 * m, y1 - y0 + 2 * m), bg)
        ImageDraw.Draw(img).text((m - x0, m - y0), text, fill=fg, font=f)
        if rng.random() < 0.3:
            img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
        rw = min(w, int(np.ceil(h * img.width / img.height)))
        arr = np.asarray(img.resize((rw, h), Image.BICUBIC), np.float32)
        arr = np.clip(arr + rng.normal(0, rng.uniform(0, 8), arr.shape), 0, 255)
        out[i, :, :rw] = arr
        out[i, :, rw:] = out[i, :, rw - 1 : rw]
    return out


def pages(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """n RGB pages, uint8 [n, size, size, 3]: 3-10 lines of 1-5 words at 10-40 px, dark on
    paper (70%) or light/dark on a photo crop (30%), some rotated by up to 5 degrees."""
    imgs = list(photos().values())
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        photo = rng.random() < 0.3
        if photo:
            bg = Image.fromarray(_crop(imgs[rng.integers(len(imgs))], size, rng))
        else:
            bg = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(190, 256, 3)))
        draw = ImageDraw.Draw(bg)
        y = int(rng.integers(0, size // 8))
        for _ in range(int(rng.integers(3, 11))):
            px = int(rng.integers(10, 41))
            if y + px > size:
                break
            colour = tuple(int(v) for v in rng.integers(0, 80, 3))
            if photo and rng.random() < 0.5:
                colour = tuple(255 - c for c in colour)
            x = int(rng.integers(0, size // 4))
            draw.text((x, y), phrase(rng, 5), fill=colour, font=font(rng, px))
            y += int(px * rng.uniform(1.2, 2.2))
        if rng.random() < 0.3:
            bg = bg.rotate(rng.uniform(-5, 5), Image.BILINEAR, fillcolor=bg.getpixel((0, 0)))
        out[i] = np.asarray(bg)
    return out


def _crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square of 50-100% of the shorter side, inside the photo, resized to size."""
    h, w = img.shape[:2]
    s = rng.uniform(0.5, 1.0) * min(h, w)
    x, y = rng.uniform(0, w - s), rng.uniform(0, h - s)
    return window(img, (x, y, x + s, y + s), size, size)
