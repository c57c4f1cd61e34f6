"""Images as model items, on either wire: the inputs of encode and score.

A JSON API request (a raw PNG/JPEG body, or `instances` of base64 images or
pixel lists) or a v2 `image` tensor becomes a float32 tensor (n, C, H, W) in
[0, 1], the model's input (the manifest's image shape and pixel scaling); every
failure is a 400 `RequestError` naming the field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import BaseModel

from handlers.errors import RequestError
from handlers.limits import Limits
from handlers.wire import images, json_read, request, v2_read
from handlers.wire.request import RawRequest
from handlers.wire.v2_read import Tensor

if TYPE_CHECKING:  # the wire reads the model's image shape; it imports no model code
    from handlers.manifest import ModelInfo


def _channels_first(pixels: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) -> (C, H, W)."""
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def read_images(
    info: ModelInfo, limits: Limits, raw: RawRequest, schema: type[BaseModel]
) -> tuple[torch.Tensor, BaseModel | None, list[dict | None]]:
    """A request of images (a raw PNG/JPEG body, or JSON `instances` of `schema`) ->
    (items (n, C, H, W) in [0, 1], the JSON body or None, converted_from per item)."""
    shape, hw, mode, scale = info.image_shape, info.image_hw, info.mode, info.scale
    if request.is_image_body(raw):
        if not isinstance(raw.body, bytes | bytearray):
            raise RequestError("bad_image", "body", "an image body must be binary")
        px, conv = images.read_image(bytes(raw.body), hw, "body", limits, mode)
        x = images.scale_pixels(_channels_first(px), scale)
        return torch.from_numpy(np.ascontiguousarray(x)[None]), None, [conv]
    req = json_read.read_json(raw, schema, limits)
    request.check_count(len(req.instances), limits.max_items, "instances")
    # images are read as uint8 rows, scaled together at the end; pixels come scaled
    x = np.empty((len(req.instances), *shape), dtype=np.float32)
    image_rows, converted = [], []
    for i, inst in enumerate(req.instances):
        if inst.image_b64 is not None:
            f = f"instances[{i}].image_b64"
            data = json_read.read_base64(inst.image_b64, f, limits)
            px, conv = images.read_image(data, hw, f, limits, mode)
            x[i] = _channels_first(px)
            image_rows.append(i)
        else:
            f = f"instances[{i}].pixels"
            x[i] = json_read.read_pixels(inst.pixels, shape, limits.pixel_range, f)
            conv = None
        converted.append(conv)
    if len(image_rows) == len(x):
        x = images.scale_pixels(x, scale)
    elif image_rows:
        x[image_rows] = images.scale_pixels(x[image_rows], scale)
    return torch.from_numpy(x), req, converted


def image_dims(shape: tuple[int, int, int]) -> list[int]:
    """The v2 `image` tensor's dims after the batch: [H, W] (one channel), [H, W, C]."""
    c, h, w = shape
    return [h, w] if c == 1 else [h, w, c]


def read_image_tensor(
    info: ModelInfo, limits: Limits, inputs: dict[str, Tensor], op: str
) -> torch.Tensor:
    """A v2 request's one input `image` -> items (n, C, H, W) in [0, 1].

    One channel: [N, H, W] (or [N, 1, H, W]); colour: [N, H, W, C], as image
    libraries hold images (a [N, C, H, W] tensor would be ambiguous for some sizes).
    """
    image = v2_read.take_inputs(inputs, {"image": ("UINT8", "FP32", "FP64")}, op)
    t, f = image["image"], "input 'image'"
    (c, h, w), dims = info.image_shape, image_dims(info.image_shape)
    shapes = (tuple(dims), (1, h, w)) if c == 1 else (tuple(dims),)
    if tuple(t.array.shape[1:]) not in shapes:
        want = " or ".join("[N," + ",".join(map(str, s)) + "]" for s in shapes)
        raise RequestError("wrong_shape", f, f"shape {list(t.array.shape)}; expected {want}")
    n = v2_read.check_items(t.array.shape[0], limits.max_items, "image")
    if t.datatype == "UINT8":  # exactly as the pixels of a PNG
        x = images.scale_pixels(t.array, info.scale)
    else:
        request.check_range(t.array, limits.pixel_range, f)
        x = t.array.astype(np.float32)
    if c == 1:
        return torch.from_numpy(x.reshape(n, 1, h, w))
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
