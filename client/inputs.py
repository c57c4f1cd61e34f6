"""What `LatentClient.encode` accepts, turned into API instances.

Accepted: a path (PNG/JPEG file, IDX file, or a folder of PNG/JPEG files), a
PIL image, a numpy array (H x W, N x H x W or N x 1 x H x W), or a list of any
of these. `as_items` expands them into a flat sequence of single images without
converting anything. Then, in the client's worker threads, chunk by chunk:

`to_tensor` (the Open Inference Protocol) stacks a chunk into one image tensor:
UINT8 [N, 28, 28] when every image is 8-bit (files, PIL images, uint8 arrays;
other sizes and colour modes converted here exactly as the server converts an
upload), else float [N, 28, 28] (8-bit images as uint8 / 255);

`to_instance` (the JSON API) turns one image into an encode instance:

- uint8 arrays and PIL images travel as PNG (lossless, ~10x smaller than JSON
  floats; the server divides by 255 exactly like training's `to_float`);
- float arrays travel as `pixels` (values in [0, 1], exact);
- image files travel as their own bytes (the server converts other sizes or
  colour modes and says so).
"""

from __future__ import annotations

import base64
import gzip
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from client.errors import InputError
from client.limits import IMAGE_HW

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


# ---- IDX ---------------------------------------------------------------------
# training/data.py has the project's IDX parser, but importing it imports torch
# (training.data builds tensors), and the client must install and import with
# numpy + Pillow + requests only. So the client keeps this small reader of the
# same format; tests/client/test_inputs.py checks that both agree on the real
# Fashion-MNIST test file.
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzipped or not) into an array."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise InputError(f"{path}: corrupt gzip stream ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 3:
        raise InputError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(dims)):
        raise InputError(f"{path}: IDX dimensions {dims} do not match {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def is_idx(path: Path) -> bool:
    """IDX by content: gzip or the 00 00 08 0n magic (image files are not IDX)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head[:2] == b"\x1f\x8b" or (
        len(head) == 4 and head[:3] == b"\x00\x00\x08" and 1 <= head[3] <= 3
    )


def idx_labels_path(images_path: Path) -> Path | None:
    """The labels file next to an images file (t10k-images-idx3 -> t10k-labels-idx1)."""
    name = Path(images_path).name
    if "images-idx3" not in name:
        return None
    candidate = Path(images_path).with_name(name.replace("images-idx3", "labels-idx1"))
    return candidate if candidate.exists() else None


# ---- folders -----------------------------------------------------------------
def folder_images(folder: Path) -> list[Path]:
    """Every PNG/JPEG file under `folder`, recursively, in sorted path order."""
    files = sorted(
        p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise InputError(f"{folder}: no .png/.jpg/.jpeg files found")
    return files


# ---- expansion ---------------------------------------------------------------
def _expand_array(arr: np.ndarray) -> Sequence[np.ndarray]:
    if arr.ndim == 2:
        return [arr]
    if arr.ndim == 3:
        return arr  # iterating an (N, H, W) array yields its images, without copies
    if arr.ndim == 4 and arr.shape[1] == 1:
        return arr[:, 0]
    raise InputError(f"an image array must be H x W, N x H x W or N x 1 x H x W, got {arr.shape}")


def _expand(obj: Any) -> Sequence[Any]:
    if isinstance(obj, str | Path):
        path = Path(obj)
        if path.is_dir():
            return folder_images(path)
        if not path.is_file():
            raise InputError(f"{path}: no such file or folder")
        if is_idx(path):
            return _expand_array(read_idx(path))
        return [path]
    if isinstance(obj, Image.Image):
        return [obj]
    if isinstance(obj, np.ndarray):
        return _expand_array(obj)
    raise InputError(
        f"cannot encode a {type(obj).__name__}: give paths, PIL images or numpy arrays"
    )


class _Concat(Sequence):
    """A read-only concatenation of sequences (keeps big arrays as views)."""

    def __init__(self, parts: list[Sequence[Any]]) -> None:
        self._parts = [p for p in parts if len(p)]
        self._starts = np.cumsum([0] + [len(p) for p in self._parts])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        part = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._parts[part][i - int(self._starts[part])]


def as_items(images: Any) -> Sequence[Any]:
    """Flatten the accepted inputs into a sequence of single images (no conversion)."""
    if isinstance(images, list | tuple):
        parts = [_expand(obj) for obj in images]
        return parts[0] if len(parts) == 1 else _Concat(parts)
    return _expand(images)


# ---- conversion --------------------------------------------------------------
def _png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def to_instance(item: Any) -> dict:
    """One image -> {"image_b64": ...} or {"pixels": [[...]]}."""
    if isinstance(item, Path):
        data = item.read_bytes()
        if not data.startswith(_IMAGE_MAGIC):
            raise InputError(f"{item}: not a PNG or JPEG file")
        return {"image_b64": base64.b64encode(data).decode("ascii")}
    if isinstance(item, Image.Image):
        return {"image_b64": _png_b64(item)}
    arr = np.asarray(item)
    if arr.ndim != 2:
        raise InputError(f"an image must be H x W, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return {"image_b64": _png_b64(Image.fromarray(np.ascontiguousarray(arr), "L"))}
    _check_dtype(arr)
    return {"pixels": arr.astype(np.float64).tolist()}


# ---- tensors (Open Inference Protocol) ----------------------------------------
def to_gray(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit grayscale 'L'; transparency composites onto black.

    A copy of handlers/wire/images.py's `_to_gray` (the client cannot import the
    handlers): the server converts JSON API uploads with it, so that an image sent
    as a tensor gets the same pixels. tests/client/test_inputs.py compares the two.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        return Image.fromarray(np.clip(np.rint(arr / peak * 255), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return img.convert("L")


def _open(path: Path) -> Image.Image:
    data = path.read_bytes()
    if not data.startswith(_IMAGE_MAGIC):
        raise InputError(f"{path}: not a PNG or JPEG file")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise InputError(f"{path}: image could not be read ({err})") from None
    return img


def to_pixels(item: Any, hw: tuple[int, int] = IMAGE_HW) -> np.ndarray:
    """One image -> H x W: uint8 for 8-bit images (converted to grayscale and resized
    like the server does), the caller's own floats otherwise (which must be H x W)."""
    if isinstance(item, Path):
        item = _open(item)
    if not isinstance(item, Image.Image):
        arr = np.asarray(item)
        if arr.ndim != 2:
            raise InputError(f"an image must be H x W, got shape {arr.shape}")
        if arr.dtype != np.uint8:
            _check_dtype(arr)
            if arr.shape != hw:
                raise InputError(
                    f"a float image must be {hw[0]} x {hw[1]}, got {arr.shape}; "
                    "resize it, or give uint8 pixels (those are resized like an upload)"
                )
            return arr
        if arr.shape == hw:
            return arr
        item = Image.fromarray(np.ascontiguousarray(arr), "L")
    img = item
    if img.mode != "L" or img.size != (hw[1], hw[0]):
        img = to_gray(img)
        if img.size != (hw[1], hw[0]):
            img = img.resize((hw[1], hw[0]), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def to_tensor(items: Sequence[Any], hw: tuple[int, int] = IMAGE_HW) -> np.ndarray:
    """A chunk of images -> UINT8 (N, H, W) when all are 8-bit, else float (N, H, W).

    Floats go as float32 when every value is in [0, 1] (the server computes in
    float32, so this is the cast it would make); otherwise as float64, the
    caller's own values, so that the server refuses them and names the pixel
    instead of a cast quietly moving a value into range.
    """
    if isinstance(items, np.ndarray) and items.dtype == np.uint8 and items.shape[1:] == hw:
        return items  # an IDX file's or a caller's batch: no copy
    pixels = [to_pixels(x, hw) for x in items]
    if all(p.dtype == np.uint8 for p in pixels):
        return np.stack(pixels)
    floats = np.stack(
        [p.astype(np.float32) / np.float32(255) if p.dtype == np.uint8 else p for p in pixels]
    ).astype(np.float64)
    if np.all((floats >= 0.0) & (floats <= 1.0)):
        return floats.astype(np.float32)
    return floats


def _check_dtype(arr: np.ndarray) -> None:
    """Integer images must be uint8; floats and booleans are pixel values in [0, 1]."""
    if np.issubdtype(arr.dtype, np.integer):
        raise InputError(
            f"integer images must be uint8 (0..255), got {arr.dtype}; "
            "convert, or pass floats in [0, 1]"
        )
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"unsupported image dtype {arr.dtype}")
