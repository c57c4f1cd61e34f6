"""A block's items -> the model's inputs, item by item, with the service's checks.

Images go through the handlers' own reading (`handlers.wire.images.read_image`:
decoding, conversion to the model's mode and size; then the pixel scaling); arrays
through the checks the Open Inference Protocol applies to its tensors (uint8
as a PNG's pixels; floats finite and in [0, 1]); latents through decode's
(the model's latent_dim, finite, within `max_abs_latent`). An item that fails
gets the HTTP API's error code and message and takes no further part; the
others run together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from batch.reading import Items
from batch.spec import image_shapes
from handlers.errors import RequestError
from handlers.limits import Limits
from handlers.manifest import ModelInfo
from handlers.wire import images
from handlers.wire.request import check_range


@dataclass
class Inputs:
    x: torch.Tensor  # the good items, in order
    ok: list[int]  # their positions in the block
    errors: dict[int, RequestError]
    converted: dict[int, dict] = field(default_factory=dict)  # position -> converted_from


def _finite(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise RequestError("not_finite", name + "".join(f"[{i}]" for i in idx), "NaN or infinity")


def _array_item(info: ModelInfo, limits: Limits, a: np.ndarray) -> np.ndarray:
    """One array image (H x W, or H x W x C) -> (C, H, W) float32, as a v2 tensor is read:
    integers (uint8 arrays, Parquet integer lists) are 0-255 pixel values, floats are
    the model's [0, 1] pixels."""
    c, h, w = info.image_shape
    if a.ndim == 1 and a.size == c * h * w:  # flat pixel lists (Parquet)
        a = a.reshape((h, w) if c == 1 else (h, w, c))
    if tuple(a.shape) not in image_shapes(info):
        want = " or ".join("x".join(map(str, s)) for s in image_shapes(info))
        raise RequestError("wrong_shape", "pixels", f"shape {list(a.shape)}; expected {want}")
    if a.dtype.kind in "iu":  # integers are 8-bit pixel values, as a PNG's (Parquet ints)
        check_range(a, (0, 255), "pixels")
        x = images.scale_pixels(a.astype(np.uint8), info.scale)
    elif a.dtype.kind != "f":
        raise RequestError("invalid_field", "pixels", f"{a.dtype} values; give integers or floats")
    else:
        _finite(a, "pixels")
        check_range(a, limits.pixel_range, "pixels")
        x = a.astype(np.float32)
    return x.reshape(1, h, w) if c == 1 else np.ascontiguousarray(x.transpose(2, 0, 1))


def images_in(info: ModelInfo, limits: Limits, items: Items) -> Inputs:
    """Images (encoded files, or arrays) -> the model's items (n, C, H, W)."""
    errors, ok, rows, converted = dict(items.errors), [], [], {}
    for i in range(len(items)):
        if i in errors:
            continue
        try:
            if items.encoded is not None:  # uint8 pixels, scaled together below
                x, conv = images.read_image(
                    items.encoded[i], info.image_hw, "image", limits, info.mode
                )
                if conv is not None:
                    converted[i] = conv
            else:
                x = _array_item(info, limits, np.asarray(items.array[i]))
        except RequestError as err:
            errors[i] = err
            continue
        ok.append(i)
        rows.append(x)
    if not rows:
        return Inputs(torch.empty(0, *info.image_shape), ok, errors, converted)
    x = np.stack(rows)
    if items.encoded is not None:  # as the service reads a request: scaled at once
        x = images.scale_pixels(x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2), info.scale)
    return Inputs(torch.from_numpy(np.ascontiguousarray(x)), ok, errors, converted)


def array_images_fast(info: ModelInfo, items: Items) -> Inputs | None:
    """A whole uint8 block of the model's shape at once (the common .npy / IDX case)."""
    a = items.array
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or items.errors:
        return None
    c, h, w = info.image_shape
    if tuple(a.shape[1:]) not in image_shapes(info):
        return None
    x = images.scale_pixels(a, info.scale)
    x = x.reshape(len(a), 1, h, w) if c == 1 else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return Inputs(torch.from_numpy(x), list(range(len(a))), {})


def latents_in(info: ModelInfo, limits: Limits, items: Items) -> Inputs:
    """Latents -> decode's items (n, latent_dim), with decode's checks."""
    dim, bound = info.latent_dim, limits.max_abs_latent
    errors, ok, rows = dict(items.errors), [], []
    for i in range(len(items)):
        if i in errors:
            continue
        z = items.array[i]
        try:
            if z is None:
                raise RequestError("invalid_field", "z", "no latent (null)")
            z = np.asarray(z, dtype=np.float64).reshape(-1)
            if len(z) != dim:
                raise RequestError(
                    "wrong_latent_dim",
                    "z",
                    f"expected {dim} values (the model's latent_dim), got {len(z)}",
                )
            _finite(z, "z")
            check_range(z, (-bound, bound), "z")
        except RequestError as err:
            errors[i] = err
            continue
        ok.append(i)
        rows.append(z.astype(np.float32))
    x = torch.from_numpy(np.stack(rows)) if rows else torch.empty(0, dim)
    return Inputs(x, ok, errors)
