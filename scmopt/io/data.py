"""Calibration data: .npz / .npy files or a folder of images, checked against the model inputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from scmopt.errors import ScmoptError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

Specs = dict[str, tuple[list[int | str | None], np.dtype]]


class DataWarning(UserWarning):
    """Calibration data that is usable but probably not what the user meant (the CLI prints
    these as `scmopt: warning:` lines)."""


def load_data(path: str | Path, specs: Specs) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Reads calibration inputs (keyed by input name) and optional labels `y`, and checks them."""
    path = Path(path)
    if not path.exists():
        raise ScmoptError(f"{path}: no such file or folder")
    if path.is_dir():
        feeds, labels = _images(path, specs), None
    elif path.suffix == ".npz":
        feeds, labels = _npz(path, specs)
    elif path.suffix == ".npy":
        feeds, labels = _single(specs, _np_load(path), path), None
    else:
        raise ScmoptError(f"{path}: data must be .npz, .npy or a folder of images")
    return check_data(feeds, labels, specs), labels


def _np_load(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "Object arrays" in str(exc):
            raise ScmoptError(_objects(path)) from exc
        raise ScmoptError(f"{path}: not a readable numpy file ({type(exc).__name__})") from exc
    except Exception as exc:
        raise ScmoptError(f"{path}: not a readable numpy file ({type(exc).__name__})") from exc


def _objects(path: Path, key: str | None = None) -> str:
    what = f"array {key!r}" if key else "the array"
    return (
        f"{path}: {what} holds Python objects (dtype object), which are not read (pickles can "
        "run code); save numeric arrays, e.g. np.stack(list_of_arrays)"
    )


def _single(specs: Specs, array: np.ndarray, path: Path) -> dict[str, np.ndarray]:
    if len(specs) != 1:
        raise ScmoptError(
            f"{path}: a single array only fits a single-input model; this one takes "
            f"{', '.join(specs)} (use an .npz keyed by input name)"
        )
    return {next(iter(specs)): array}


def _npz(path: Path, specs: Specs) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    arrays = {}
    with _np_load(path) as z:
        for k in z.files:
            try:
                arrays[k] = z[k]
            except ValueError as exc:  # object arrays refuse to load without pickle
                raise ScmoptError(_objects(path, k)) from exc
            except Exception as exc:
                raise ScmoptError(f"{path}: array {k!r} is unreadable ({exc})") from exc
    labels = arrays.pop("y", None)
    if set(specs) <= set(arrays):
        return {k: arrays[k] for k in specs}, labels
    if len(arrays) == 1 and len(specs) == 1:
        return _single(specs, next(iter(arrays.values())), path), labels
    missing = sorted(set(specs) - set(arrays))
    raise ScmoptError(f"{path}: no array for model input(s) {', '.join(missing)}")


def _images(folder: Path, specs: Specs) -> dict[str, np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ScmoptError(f"{folder}: no images found")
    if len(specs) != 1:
        raise ScmoptError("a folder of images only fits a single-input model")
    name, (shape, _) = next(iter(specs.items()))
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
        raise ScmoptError(f"input {name!r} is not a static [N, C, H, W] image tensor")
    try:
        from PIL import Image
    except ImportError as exc:
        raise ScmoptError("reading image folders needs Pillow (pip install pillow)") from exc
    c, h, w = shape[1:]
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(c)
    if mode is None:
        raise ScmoptError(f"input {name!r} has {c} channels; images need 1, 3 or 4")
    out = []
    for f in files:
        try:
            img = Image.open(f).convert(mode).resize((w, h))
        except Exception as exc:
            raise ScmoptError(f"{f}: unreadable image ({type(exc).__name__})") from exc
        arr = np.asarray(img, dtype=np.float32) / 255.0
        out.append(arr.reshape(h, w, c).transpose(2, 0, 1))
    return {name: np.stack(out)}


def check_data(
    feeds: dict[str, np.ndarray], labels: np.ndarray | None, specs: Specs
) -> dict[str, np.ndarray]:
    """Dtype, shape (batch free), finiteness, equal lengths; returns the feeds cast safely."""
    missing = [name for name in specs if name not in feeds]
    if missing:
        got = ", ".join(map(str, feeds)) or "none"
        raise ScmoptError(
            f"calibration data has no array for model input(s) {', '.join(missing)} (got: {got})"
        )
    lengths = set()
    out = {}
    for name, (shape, dtype) in specs.items():
        arr = np.asarray(feeds[name])
        if arr.dtype != dtype:
            if np.can_cast(arr.dtype, dtype, casting="same_kind"):
                if arr.dtype.kind != dtype.kind:  # e.g. int32 pixels into a float32 input
                    warnings.warn(
                        f"input {name!r}: {arr.dtype} data cast to the model's {dtype}; check "
                        "its scale (e.g. pixels in 0..255 where the model expects 0..1)",
                        DataWarning,
                        stacklevel=2,
                    )
                arr = arr.astype(dtype)
            else:
                raise ScmoptError(f"input {name!r}: dtype {arr.dtype}, model expects {dtype}")
        if arr.ndim != len(shape):
            raise ScmoptError(
                f"input {name!r}: shape {list(arr.shape)}, model expects {_fmt(shape)}"
            )
        for got, want in zip(arr.shape[1:], shape[1:], strict=True):
            if isinstance(want, int) and got != want:
                raise ScmoptError(
                    f"input {name!r}: shape {list(arr.shape)}, model expects {_fmt(shape)}"
                )
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise ScmoptError(f"input {name!r} contains NaN or Inf")
        lengths.add(len(arr))
        out[name] = arr
    if labels is not None:
        _check_labels(np.asarray(labels))
        lengths.add(len(labels))
    if len(lengths) > 1:
        raise ScmoptError(f"inputs (and labels) have different numbers of samples: {lengths}")
    if 0 in lengths:
        raise ScmoptError("calibration data is empty")
    return out


def _check_labels(y: np.ndarray) -> None:
    """Labels `y` are one class index per sample (they are compared with the logits' argmax)."""
    if y.ndim == 2 and y.shape[1] > 1:
        raise ScmoptError(
            f"labels y have shape {list(y.shape)} (one-hot or scores?): expected one class "
            f"index per sample, shape [N]; save y.argmax(1) instead"
        )
    if y.ndim != 1:
        raise ScmoptError(f"labels y have shape {list(y.shape)}: expected class indices [N]")
    integral = y.dtype.kind in "iub" or (
        y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))
    )
    if not integral:
        raise ScmoptError(f"labels y ({y.dtype}) must be integer class indices")


def random_data(specs: Specs, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal inputs (for models without data: statistics are then not meaningful)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (shape, dtype) in specs.items():
        dims = [n] + [d if isinstance(d, int) else 1 for d in shape[1:]]
        if not all(isinstance(d, int) for d in shape[1:]):
            raise ScmoptError(f"input {name!r} has dynamic dims {_fmt(shape)}: pass --data")
        arr = rng.standard_normal(dims)
        out[name] = arr.astype(dtype) if np.issubdtype(dtype, np.floating) else arr.astype(dtype)
    return out


def _fmt(shape) -> str:
    return "[" + ", ".join("N" if i == 0 else str(d) for i, d in enumerate(shape)) + "]"


def padding_mask(feeds: dict[str, np.ndarray]) -> str | None:
    """The input holding a [B, T] padding mask (an attention mask: a name with "mask", 0/1
    values, some zeros), or None. Statistics skip the positions it marks 0."""
    for name, v in feeds.items():
        if "mask" not in name.lower() or np.asarray(v).ndim != 2:
            continue
        a = np.asarray(v)
        if a.dtype.kind in "biuf" and np.isin(a, (0, 1)).all() and not a.all():
            return name
    return None


def token_positions(feeds: dict[str, np.ndarray]) -> np.ndarray | None:
    """[B, T] float weights of the real token positions (the padding mask), or None."""
    name = padding_mask(feeds)
    return None if name is None else np.asarray(feeds[name], dtype=np.float64)
