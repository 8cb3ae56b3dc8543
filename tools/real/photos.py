"""Photos that ship with scikit-image and scikit-learn, and crops of them (no download).

``classifier_crops``: ImageNet-style random resized crops for EfficientNet-Lite1.
``face_windows``: MTCNN's training mix of positive, part-face and negative windows: jittered
boxes around the astronaut's face (IoU with the face box >= 0.65, 0.4-0.65, < 0.3) and the 100
face / 100 non-face 25x25 crops of ``skimage.data.lfw_subset`` (grey, tiled to RGB).
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from .nets import MissingPackage

SKIMAGE_COLOUR = [
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "stereo_motorcycle",
]
SKIMAGE_GREY = ["camera", "coins", "moon", "clock", "brick", "grass", "gravel", "cell"]
# skimage.data.astronaut(): the face (x0, y0, x1, y1), the ONet box regression of a 98 px window
ASTRONAUT_FACE = (176, 57, 270, 173)


def _skimage():
    try:
        import skimage.data as data
    except ImportError as exc:
        raise MissingPackage("scikit-image is not installed: pip install scikit-image") from exc
    return data


def photos() -> dict[str, np.ndarray]:
    """Every bundled photo as uint8 [H, W, 3] (grey ones tiled), keyed by name."""
    data = _skimage()
    from sklearn.datasets import load_sample_images

    out = {}
    for name in SKIMAGE_COLOUR + SKIMAGE_GREY:
        img = getattr(data, name)()
        img = img[0] if isinstance(img, tuple) else img  # stereo_motorcycle: (left, right, disp)
        out[name] = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
    sk = load_sample_images()
    for path, img in zip(sk.filenames, sk.images, strict=True):
        out["sklearn_" + path.rsplit("/", 1)[-1].split(".")[0]] = img
    return out


def window(img: np.ndarray, box: tuple[float, float, float, float], w: int, h: int) -> np.ndarray:
    """The box (may cross the border: zero padding) resized to w x h, uint8 [h, w, 3]."""
    x0, y0, x1, y1 = box
    pil = Image.fromarray(img)
    return np.asarray(pil.transform((w, h), Image.EXTENT, (x0, y0, x1, y1), Image.BILINEAR))


def classifier_crops(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """n random resized crops (area 10-100%, aspect 3/4-4/3, random flip), uint8 [n, s, s, 3]."""
    imgs = list(photos().values())
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = imgs[rng.integers(len(imgs))]
        h, w = img.shape[:2]
        for _ in range(20):
            area = h * w * rng.uniform(0.1, 1.0)
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            cw, ch = np.sqrt(area * ratio), np.sqrt(area / ratio)
            if cw <= w and ch <= h:
                break
        else:
            cw = ch = min(h, w)
        x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
        crop = window(img, (x0, y0, x0 + cw, y0 + ch), size, size)
        out[i] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return out


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _jittered(face, lo: float, hi: float, rng: np.random.Generator):
    """A square box whose IoU with ``face`` is in [lo, hi) (rejection sampling)."""
    fx, fy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
    fs = max(face[2] - face[0], face[3] - face[1])
    spread = 0.15 if lo >= 0.65 else 0.5
    while True:
        s = fs * rng.uniform(0.8, 1.25)
        cx, cy = fx + fs * rng.uniform(-spread, spread), fy + fs * rng.uniform(-spread, spread)
        box = (cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2)
        if lo <= _iou(box, face) < hi:
            return box


def _negative(imgs: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    names = sorted(imgs)
    while True:
        name = names[rng.integers(len(names))]
        img = imgs[name]
        h, w = img.shape[:2]
        s = rng.uniform(size, min(h, w) / 2)
        x0, y0 = rng.uniform(0, w - s), rng.uniform(0, h - s)
        box = (x0, y0, x0 + s, y0 + s)
        if name != "astronaut" or _iou(box, ASTRONAUT_FACE) < 0.3:
            return window(img, box, size, size)


@functools.cache
def _lfw_subset() -> np.ndarray:
    return (_skimage().lfw_subset() * 255).astype(np.uint8)


def _lfw(idx: int, size: int, rng: np.random.Generator) -> np.ndarray:
    face = _lfw_subset()[idx]
    img = np.repeat(face[..., None], 3, axis=2)
    d = rng.uniform(-2, 2, size=2)
    return window(img, (d[0], d[1], 25 + d[0], 25 + d[1]), size, size)


def face_windows(n: int, size: int, rng: np.random.Generator, pnet: bool = False) -> np.ndarray:
    """n windows, uint8 [n, size, size, 3]: 30% astronaut face (IoU >= 0.65), 15% part face,
    15% LFW faces, 10% LFW non-faces, 30% negatives. ``pnet``: faces of 12-40 px anywhere in
    the window (PNet is a sliding 12x12 detector), pasted on negatives for LFW."""
    imgs = photos()
    astro = imgs["astronaut"]
    kinds = rng.choice(5, size=n, p=[0.3, 0.15, 0.15, 0.1, 0.3])
    out = np.empty((n, size, size, 3), np.uint8)
    for i, k in enumerate(kinds):
        if pnet and k in (0, 1):  # the face centre anywhere near the window, 12-40 px wide
            f = ASTRONAUT_FACE
            half = (f[2] - f[0]) * size / rng.uniform(12, 40) / 2
            cx, cy = rng.uniform(f[0], f[2]), rng.uniform(f[1], f[3])
            out[i] = window(astro, (cx - half, cy - half, cx + half, cy + half), size, size)
        elif pnet and k == 2:
            out[i] = _negative(imgs, size, rng)
            px = int(rng.integers(12, 41))
            x, y = rng.integers(0, size - px + 1, size=2)
            out[i, y : y + px, x : x + px] = _lfw(int(rng.integers(100)), px, rng)
        elif k in (0, 1):
            lo, hi = (0.65, 1.0) if k == 0 else (0.4, 0.65)
            out[i] = window(astro, _jittered(ASTRONAUT_FACE, lo, hi, rng), size, size)
        elif k in (2, 3):
            out[i] = _lfw(int(rng.integers(100)) + (100 if k == 3 else 0), size, rng)
        else:
            out[i] = _negative(imgs, size, rng)
        if rng.random() < 0.5:
            out[i] = out[i, :, ::-1]
    return out
