"""What `LatentClient.encode` (and `score`) accepts, read into single images.

Accepted: a path (PNG/JPEG file, IDX file, or a folder of PNG/JPEG files), a
PIL image, a numpy array, or a list of any of these. Arrays hold images as image
libraries do, channels last: H x W (one grayscale image), H x W x C (one image,
C 1, 3 or 4: grayscale, RGB or RGBA; so a 3-D array whose last axis is 1, 3 or 4
is one image, any other a stack), N x H x W, N x H x W x C; or channels first
as torch holds them, N x C x H x W (C 1, 3 or 4). An IDX file of 3 dimensions
is always a stack (N x H x W). `as_items` expands them into a flat sequence of
single images without converting anything; client/pixels.py converts them to the
model's image shape and writes them into requests.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from client.errors import InputError

ARRAY_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # an input array's channels -> PIL mode

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# ---- IDX ---------------------------------------------------------------------
# training/sources.py has the project's IDX parser, but importing it imports torch
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
    """An array -> its images (views, no copies): H x W or H x W x C each."""
    if arr.ndim == 2:
        return [arr]
    if arr.ndim == 3:
        if arr.shape[-1] in ARRAY_MODES:  # one image, H x W x C
            return [arr]
        return arr  # iterating an (N, H, W) array yields its images, without copies
    if arr.ndim == 4 and arr.shape[-1] in ARRAY_MODES:  # N x H x W x C
        return arr[..., 0] if arr.shape[-1] == 1 else arr
    if arr.ndim == 4 and arr.shape[1] in ARRAY_MODES:  # N x C x H x W (torch's layout)
        return arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)
    raise InputError(
        "an image array must be H x W, H x W x C, N x H x W, N x H x W x C or N x C x H x W "
        f"(C 1, 3 or 4), got {arr.shape}"
    )


def _expand(obj: Any) -> Sequence[Any]:
    if isinstance(obj, str | Path):
        path = Path(obj)
        if path.is_dir():
            return folder_images(path)
        if not path.is_file():
            raise InputError(f"{path}: no such file or folder")
        if is_idx(path):
            arr = read_idx(path)
            return arr if arr.ndim == 3 else _expand_array(arr)  # idx3: N x H x W, always
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


def has_floats(items: Sequence[Any]) -> bool:
    """Whether any of `as_items`' images is a float (or boolean) array, not 8-bit:
    those travel as floats, which takes more bytes a value than pixels do."""
    if isinstance(items, np.ndarray):
        return items.dtype != np.uint8
    if isinstance(items, _Concat):
        return any(has_floats(part) for part in items._parts)
    return any(isinstance(x, np.ndarray) and x.dtype != np.uint8 for x in items)
