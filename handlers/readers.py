"""Request reading: a request as the server hands it over, JSON bodies, base64, pixel lists.

Every failure raises `RequestError` naming the field, so one bad item rejects
only its own request. Image bytes are read by `handlers.images`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ValidationError

from handlers.errors import RequestError, json_path
from handlers.limits import Limits

IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")

# pydantic error type -> our error code (anything else is "invalid_field")
_CODES = {
    "json_invalid": "bad_json",
    "finite_number": "not_finite",
    "less_than_equal": "out_of_range",
    "greater_than_equal": "out_of_range",
    "less_than": "out_of_range",
    "greater_than": "out_of_range",
}


@dataclass(frozen=True)
class RawRequest:
    """One HTTP request as the server hands it over.

    `body` is bytes (the handler asks TorchServe not to pre-parse), but a
    server that already parsed JSON may pass a dict/list, and text a str.
    `content_type` is the media type of the body part, lower-case, no params.
    """

    body: bytes | str | dict | list | None
    content_type: str | None = None
    protocol: str = "json"  # json: the project's JSON API; v2: the Open Inference Protocol
    headers: dict[str, str] = field(default_factory=dict)  # HTTP headers, names lower-case


def media_type(value: str | None) -> str | None:
    """'Application/JSON; charset=utf-8' -> 'application/json'."""
    if not value:
        return None
    return value.split(";", 1)[0].strip().lower() or None


def is_image_body(raw: RawRequest) -> bool:
    if raw.content_type in IMAGE_TYPES:
        return True
    return isinstance(raw.body, bytes | bytearray) and raw.body.startswith(_MAGIC)


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


def validation_error(err: ValidationError) -> RequestError:
    """pydantic's first error as our 400, with the count of the others."""
    errors = err.errors(include_url=False)
    first = errors[0]
    field = json_path(first["loc"])
    code = _CODES.get(first["type"], "invalid_field")
    if (first["type"], field) in (("too_long", "instances"), ("less_than_equal", "n")):
        code = "too_many_items"
    message = first["msg"]
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return RequestError(code, field, message)


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
    rows: list[list[float]], hw: tuple[int, int], value_range: tuple[float, float], field: str
) -> np.ndarray:
    """Validated nested list -> H x W float32; exact shape and range or a 400."""
    h, w = hw
    if len(rows) != h:
        raise RequestError(
            "wrong_shape", field, f"expected {h} rows of {w} values, got {len(rows)}"
        )
    for r, row in enumerate(rows):
        if len(row) != w:
            raise RequestError(
                "wrong_shape", f"{field}[{r}]", f"expected {w} values, got {len(row)}"
            )
    arr = np.asarray(rows, dtype=np.float64)
    check_range(arr, value_range, field)
    return arr.astype(np.float32)


def check_range(arr: np.ndarray, value_range: tuple[float, float], field: str) -> None:
    """A 400 naming the first value outside [lo, hi] (and how many are)."""
    lo, hi = value_range
    bad = np.argwhere((arr < lo) | (arr > hi))
    if len(bad):
        idx = tuple(int(i) for i in bad[0])
        where = "".join(f"[{i}]" for i in idx)
        raise RequestError(
            "out_of_range",
            f"{field}{where}",
            f"value {float(arr[idx])!r} is outside [{lo}, {hi}]"
            + (f" ({len(bad)} values are)" if len(bad) > 1 else ""),
        )
