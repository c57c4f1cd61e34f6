"""Request bodies in, response text out: JSON, base64, pixel arrays, floats.

Every failure raises `RequestError` naming the field, so one bad item rejects
only its own request. Images themselves are `handlers.images`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

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

    `body` is bytes (the handler asks TorchServe not to pre-decode), but a
    server that already parsed JSON may pass a dict/list, and text a str.
    `content_type` is the media type of the body part, lower-case, no params.
    """

    body: bytes | str | dict | list | None
    content_type: str | None = None


def media_type(value: str | None) -> str | None:
    """'Application/JSON; charset=utf-8' -> 'application/json'."""
    if not value:
        return None
    return value.split(";", 1)[0].strip().lower() or None


def from_validation_error(err: ValidationError) -> RequestError:
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


def is_image_body(raw: RawRequest) -> bool:
    if raw.content_type in IMAGE_TYPES:
        return True
    return isinstance(raw.body, bytes | bytearray) and raw.body.startswith(_MAGIC)


def parse_json(raw: RawRequest, schema: type[BaseModel], limits: Limits) -> BaseModel:
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
        raise from_validation_error(err) from None


# ---- images -----------------------------------------------------------------
def b64_to_bytes(text: str, field: str, limits: Limits) -> bytes:
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


def pixels_to_array(
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


def array_to_lists(pixels: np.ndarray, decimals: int = 6) -> Any:
    return np.round(np.asarray(pixels, dtype=np.float64), decimals).tolist()


# ---- JSON out -----------------------------------------------------------------
def dumps(body: Any) -> str:
    """Compact JSON; NaN or infinity raise ValueError (they are not JSON)."""
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


FLOAT = "%.9g"  # nine significant digits print every float32 exactly


@lru_cache(maxsize=64)
def float_array_format(d: int, spec: str = FLOAT) -> str:
    """A %-format of a JSON array of d numbers, each printed with `spec`."""
    return "[" + ",".join([spec] * d) + "]"


def json_number(v: float) -> str:
    """A finite float as JSON text: 9 significant digits, and always a float to a
    JSON reader ("%.9g" prints 1.0 as "1" and -0.0 as "-0", integers in JSON)."""
    text = FLOAT % v
    return text if "." in text or "e" in text else text + ".0"


def float_rows(arr: np.ndarray) -> tuple[list[tuple], str]:
    """(n, ...) floats -> (one tuple per item of its values, flattened; their % spec).

    The answers of encode are mostly floats; printing them with one %-format
    per item (`float_array_format`) costs a third of `json.dumps` on lists and
    half the characters of float64's repr, and nine significant digits give
    back the exact float32. Usually the tuples hold the floats and the spec is
    FLOAT; if any value is integral (it would print as a JSON integer) they hold
    `json_number` strings and the spec is "%s". NaN or infinity raise
    ValueError (they are not JSON).
    """
    flat = np.asarray(arr, dtype=np.float32).reshape(len(arr), -1)
    if not np.isfinite(flat).all():
        raise ValueError("Out of range float values are not JSON compliant")
    if (flat == np.trunc(flat)).any():  # rare for a model's output: 0.0, 1.0, ...
        return [tuple(json_number(v) for v in row) for row in flat.tolist()], "%s"
    return [tuple(row) for row in flat.tolist()], FLOAT


def float_rows_json(rows: np.ndarray) -> list[str]:
    """(n, d) floats -> n JSON arrays (see `float_rows`)."""
    values, spec = float_rows(rows)
    fmt = float_array_format(np.shape(rows)[1], spec)
    return [fmt % v for v in values]
