"""A request as the server hands it over, and the checks both wires share.

`RawRequest` is what the adapter builds from TorchServe's batch entry; every
failure raises `RequestError` naming the field, so one bad item rejects only
its own request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import ValidationError

from handlers.errors import RequestError, json_path
from handlers.wire.json_schemas import PIXEL_TAGS

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


def validation_error(err: ValidationError) -> RequestError:
    """pydantic's first error as our 400, with the count of the others."""
    errors = err.errors(include_url=False)
    first = errors[0]
    field = json_path(first["loc"], {"pixels": PIXEL_TAGS})
    code = _CODES.get(first["type"], "invalid_field")
    if (first["type"], field) in (("too_long", "instances"), ("less_than_equal", "n")):
        code = "too_many_items"
    message = first["msg"]
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return RequestError(code, field, message)


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


def check_count(n: int, most: int, field: str) -> None:
    """n items within this model's limit, on either wire (the JSON schema caps a list at
    the largest limit of any model; a model of large images accepts fewer:
    `Limits.for_image`)."""
    if n > most:
        raise RequestError(
            "too_many_items", field, f"{n} items; at most {most} are accepted for this model"
        )
