"""Images as a model takes them: each item of `as_items` converted to the model's
image shape (C, H, W) (client/metadata.py), then into what a request carries.

Called in the client's worker threads, chunk by chunk:

`to_tensor` (the Open Inference Protocol) stacks a chunk into one image tensor:
UINT8 [N, H, W] (one channel) or [N, H, W, C] (colour) when every image is 8-bit
(files, PIL images, uint8 arrays; other sizes and colour modes converted here
exactly as the server converts an upload), else float of the same shape (8-bit
images as uint8 / 255);

`to_instance` (the JSON API) turns one image into an encode instance:

- uint8 arrays and PIL images travel as PNG of the model's mode and size
  (converted here as the server would; lossless, ~10x smaller than JSON floats);
- float arrays travel as `pixels` (values in [0, 1], exact; the server checks them);
- image files travel as their own bytes (the server converts other sizes or
  colour modes and says so), unless they are larger than their share of the
  request body or than the server takes for one upload: those are converted
  here and travel as a PNG of the model's size.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from client.errors import InputError
from client.inputs import ARRAY_MODES
from client.limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

Shape = tuple[int, int, int]  # a model's image shape (C, H, W)
MODES = {1: "L", 3: "RGB"}  # a model's channels -> PIL mode

_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


# ---- conversion (as the server converts an upload) -----------------------------
# A copy of handlers/wire/images.py's `_flatten`, `_to_gray` and `_to_rgb` (the client
# cannot import the handlers): the server converts JSON API uploads with them, so that
# an image the client converts gets the same pixels. tests/client/test_inputs.py
# compares the two.
def _flatten(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer images -> 'L'; transparency composited onto black (RGBA)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        return Image.fromarray(np.clip(np.rint(arr / peak * 255), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return img


def to_gray(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit grayscale 'L'; transparency composites onto black."""
    return _flatten(img).convert("L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit 'RGB' (grayscale replicated); transparency onto black."""
    return _flatten(img).convert("RGB")


CONVERT = {"L": to_gray, "RGB": to_rgb}


def convert(img: Image.Image, shape: Shape) -> Image.Image:
    """A PIL image -> the model's mode and size: converted, then Lanczos-resized."""
    c, h, w = shape
    mode = MODES[c]
    if img.mode != mode or img.size != (w, h):
        img = CONVERT[mode](img)
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.LANCZOS)
    return img


def array_shape(shape: Shape) -> tuple[int, ...]:
    """One image of the model as an array: (H, W), or (H, W, C) for colour."""
    c, h, w = shape
    return (h, w) if c == 1 else (h, w, c)


def _open(path: Path, data: bytes | None = None) -> Image.Image:
    data = path.read_bytes() if data is None else data
    if not data.startswith(_IMAGE_MAGIC):
        raise InputError(f"{path}: not a PNG or JPEG file")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise InputError(f"{path}: image could not be read ({err})") from None
    return img


def _image_array(item: Any) -> np.ndarray:
    """A non-PIL item as one image array: H x W, or H x W x C with C 1, 3 or 4."""
    arr = np.asarray(item)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in ARRAY_MODES)):
        raise InputError(f"an image must be H x W or H x W x C (C 1, 3 or 4), got {arr.shape}")
    return arr


def to_pixels(item: Any, shape: Shape) -> np.ndarray:
    """One image -> the model's (H, W) or (H, W, C): uint8 for 8-bit images (converted
    to the model's mode and size like the server converts an upload), the caller's
    own floats otherwise (which must already have that shape)."""
    want = array_shape(shape)
    if isinstance(item, Path):
        item = _open(item)
    if not isinstance(item, Image.Image):
        arr = _image_array(item)
        if arr.dtype != np.uint8:
            _check_dtype(arr)
            if shape[0] == 1 and arr.ndim == 3 and arr.shape[-1] == 1:
                arr = arr[..., 0]
            if arr.shape != want:
                size = " x ".join(map(str, want))
                raise InputError(
                    f"a float image must be {size} (the model's image), got {arr.shape}; "
                    "resize it, or give uint8 pixels (those are converted like an upload)"
                )
            return arr
        if arr.shape == want:
            return arr
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        item = Image.fromarray(
            np.ascontiguousarray(arr), ARRAY_MODES[1 if arr.ndim == 2 else arr.shape[-1]]
        )
    return np.asarray(convert(item, shape), dtype=np.uint8)


def to_tensor(items: Sequence[Any], shape: Shape) -> np.ndarray:
    """A chunk of images -> UINT8 (N, H, W) or (N, H, W, C) when all are 8-bit, else
    float of that shape.

    Floats go as float32 when every value is in [0, 1] (the server computes in
    float32, so this is the cast it would make); otherwise as float64, the
    caller's own values, so that the server refuses them and names the pixel
    instead of a cast quietly moving a value into range.
    """
    want = array_shape(shape)
    if isinstance(items, np.ndarray) and items.dtype == np.uint8 and items.shape[1:] == want:
        return items  # an IDX file's or a caller's batch: no copy
    pixels = [to_pixels(x, shape) for x in items]
    if all(p.dtype == np.uint8 for p in pixels):
        return np.stack(pixels)
    floats = np.stack(
        [p.astype(np.float32) / np.float32(255) if p.dtype == np.uint8 else p for p in pixels]
    ).astype(np.float64)
    if np.all((floats >= 0.0) & (floats <= 1.0)):
        return floats.astype(np.float32)
    return floats


# ---- JSON API instances -----------------------------------------------------------
def _png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _upload_fits(data: bytes, budget: int) -> bool:
    """Whether a file can travel as its own bytes: within its share of the body and
    the server's limits on one upload (bytes, and pixels by the header alone)."""
    if 4 * math.ceil(len(data) / 3) + 32 > budget or len(data) > MAX_IMAGE_BYTES:
        return False
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            width, height = img.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return True  # the server names what is wrong with it
    return width * height <= MAX_IMAGE_PIXELS


def to_instance(item: Any, shape: Shape, budget: int | None = None) -> dict:
    """One image -> {"image_b64": ...} or {"pixels": [...]} for a model of `shape`;
    `budget` is the bytes the image may take in its request (None: no limit)."""
    if isinstance(item, Path):
        data = item.read_bytes()
        if not data.startswith(_IMAGE_MAGIC):
            raise InputError(f"{item}: not a PNG or JPEG file")
        if _upload_fits(data, budget if budget is not None else math.inf):
            return {"image_b64": base64.b64encode(data).decode("ascii")}
        return {"image_b64": _png_b64(Image.fromarray(to_pixels(_open(item, data), shape)))}
    if isinstance(item, Image.Image):
        return {"image_b64": _png_b64(convert(item, shape))}
    arr = _image_array(item)
    if arr.dtype == np.uint8:
        return {"image_b64": _png_b64(Image.fromarray(np.ascontiguousarray(to_pixels(arr, shape))))}
    _check_dtype(arr)
    if shape[0] == 1 and arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return {"pixels": arr.astype(np.float64).tolist()}


def _check_dtype(arr: np.ndarray) -> None:
    """Integer images must be uint8; floats and booleans are pixel values in [0, 1]."""
    if np.issubdtype(arr.dtype, np.integer):
        raise InputError(
            f"integer images must be uint8 (0..255), got {arr.dtype}; "
            "convert, or pass floats in [0, 1]"
        )
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"unsupported image dtype {arr.dtype}")
