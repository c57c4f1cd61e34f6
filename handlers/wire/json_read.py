"""The project's JSON API in: JSON bodies, base64 images, pixel lists.

Every failure raises `RequestError` naming the field, so one bad item rejects
only its own request. Image bytes are read by `handlers.wire.images`.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np
from pydantic import BaseModel, ValidationError

from handlers.errors import RequestError
from handlers.limits import Limits
from handlers.wire.request import FORM_TYPES, RawRequest, check_range, validation_error


def read_json(raw: RawRequest, schema: type[BaseModel], limits: Limits) -> BaseModel:
    """Validate a JSON body against `schema` (strict), or raise a 400."""
    body = raw.body
    if raw.content_type in FORM_TYPES or (body is None and raw.content_type):
        raise RequestError(
            "unsupported_media_type",
            "body",
            f"got a body of type {raw.content_type}; "
            "send JSON with 'Content-Type: application/json'",
        )
    if body is None or len(body) == 0:
        raise RequestError("bad_json", "body", "the body is empty; expected a JSON object")
    if isinstance(body, str):
        body = body.encode("utf-8")
    try:
        if isinstance(body, bytes | bytearray):
            if len(body) > limits.max_body_bytes:
                raise RequestError(
                    "payload_too_large",
                    "body",
                    f"{len(body)} bytes; at most {limits.max_body_bytes} bytes are accepted",
                )
            return schema.model_validate_json(body, strict=True)
        return schema.model_validate(body, strict=True)
    except ValidationError as err:
        raise validation_error(err) from None


def read_base64(text: str, field: str, limits: Limits) -> bytes:
    """base64 text (a `data:...;base64,` prefix allowed) -> the bytes, within the image limit."""
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if not head.endswith(";base64"):
            raise RequestError("bad_base64", field, "a data: URI must be ';base64,' encoded")
    max_chars = 4 * ((limits.max_image_bytes + 2) // 3)
    if len(text) > max_chars:
        raise RequestError(
            "payload_too_large",
            field,
            f"{len(text)} base64 characters; an image may have at most "
            f"{limits.max_image_bytes} bytes ({max_chars} characters)",
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError("bad_base64", field, f"not valid base64: {err}") from None


def read_pixels(
    rows: list, shape: tuple[int, int, int], value_range: tuple[float, float], field: str
) -> np.ndarray:
    """Validated nested list -> (C, H, W) float32: H x W lists for one channel, H x W x C
    for colour; exact shape and range or a 400."""
    c, h, w = shape
    want = f"{h} x {w}" if c == 1 else f"{h} x {w} x {c}"
    nested = bool(rows) and bool(rows[0]) and isinstance(rows[0][0], list)
    if rows and rows[0] and nested != (c > 1):  # colour for a one-channel model, or vice versa
        model = "one-channel" if c == 1 else f"{c}-channel"
        got = "lists of pixels" if nested else "numbers"
        raise RequestError(
            "wrong_shape", field, f"expected {want} values (a {model} model), got {got}"
        )
    if len(rows) != h:
        raise RequestError("wrong_shape", field, f"expected {h} rows, got {len(rows)}")
    for r, row in enumerate(rows):
        if len(row) != w:
            raise RequestError(
                "wrong_shape", f"{field}[{r}]", f"expected {w} pixels, got {len(row)}"
            )
    try:
        arr = np.asarray(rows, dtype=np.float64)
    except ValueError:  # ragged pixels, or numbers and lists mixed
        arr = None
    if arr is None or arr.shape != ((h, w) if c == 1 else (h, w, c)):
        got = "ragged lists" if arr is None else " x ".join(map(str, arr.shape))
        raise RequestError("wrong_shape", field, f"expected {want} values, got {got}")
    check_range(arr, value_range, field)
    arr = arr.astype(np.float32)
    return arr[None] if c == 1 else np.ascontiguousarray(arr.transpose(2, 0, 1))
