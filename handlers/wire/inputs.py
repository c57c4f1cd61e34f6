"""Images as model items, on either wire: the inputs of encode and score.

A JSON API request (a raw PNG/JPEG body, or `instances` of base64 images or
pixel lists) or a v2 `image` tensor becomes a float32 tensor (n, 1, H, W) in
[0, 1], the model's input (the manifest's pixel scaling); every failure is a
400 `RequestError` naming the field.
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
    from handlers.model import ModelInfo


def read_images(
    info: ModelInfo, limits: Limits, raw: RawRequest, schema: type[BaseModel]
) -> tuple[torch.Tensor, BaseModel | None, list[dict | None]]:
    """A request of images (a raw PNG/JPEG body, or JSON `instances` of `schema`) ->
    (items (n, 1, H, W) in [0, 1], the JSON body or None, converted_from per item)."""
    hw, scale = info.image_hw, info.scale
    if request.is_image_body(raw):
        if not isinstance(raw.body, bytes | bytearray):
            raise RequestError("bad_image", "body", "an image body must be binary")
        gray, conv = images.read_image(bytes(raw.body), hw, "body", limits)
        return torch.from_numpy(images.scale_pixels(gray, scale)[None, None]), None, [conv]
    req = json_read.read_json(raw, schema, limits)
    # images are read as uint8 rows, scaled together at the end; pixels come scaled
    x = np.empty((len(req.instances), *hw), dtype=np.float32)
    image_rows, converted = [], []
    for i, inst in enumerate(req.instances):
        if inst.image_b64 is not None:
            f = f"instances[{i}].image_b64"
            data = json_read.read_base64(inst.image_b64, f, limits)
            x[i], conv = images.read_image(data, hw, f, limits)
            image_rows.append(i)
        else:
            f = f"instances[{i}].pixels"
            x[i] = json_read.read_pixels(inst.pixels, hw, limits.pixel_range, f)
            conv = None
        converted.append(conv)
    if len(image_rows) == len(x):
        x = images.scale_pixels(x, scale)
    elif image_rows:
        x[image_rows] = images.scale_pixels(x[image_rows], scale)
    return torch.from_numpy(x[:, None]), req, converted


def read_image_tensor(
    info: ModelInfo, limits: Limits, inputs: dict[str, Tensor], op: str
) -> torch.Tensor:
    """A v2 request's one input `image` -> items (n, 1, H, W) in [0, 1]."""
    image = v2_read.take_inputs(inputs, {"image": ("UINT8", "FP32", "FP64")}, op)
    t, f, (h, w) = image["image"], "input 'image'", info.image_hw
    if tuple(t.array.shape[1:]) not in ((h, w), (1, h, w)):
        want = f"expected [N,{h},{w}] or [N,1,{h},{w}]"
        raise RequestError("wrong_shape", f, f"shape {list(t.array.shape)}; {want}")
    n = v2_read.check_items(t.array.shape[0], limits.max_items, "image")
    if t.datatype == "UINT8":  # exactly as the pixels of a PNG
        x = images.scale_pixels(t.array, info.scale)
    else:
        request.check_range(t.array, limits.pixel_range, f)
        x = t.array.astype(np.float32)
    return torch.from_numpy(x.reshape(n, 1, h, w))
