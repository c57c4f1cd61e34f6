"""The one error type of the serving logic and the JSON body it becomes.

A `RequestError` belongs to one request: the engine catches it, answers that
request with its status and body, and lets every other request of the batch go
on. `code` is a short machine-readable reason (also the `Reason` label of the
rejected-requests metric), `field` names the offending JSON path.
"""

from __future__ import annotations

import json

# The closed set of rejection codes (metric label values stay bounded).
CODES = (
    "bad_json",  # body is not valid JSON
    "bad_base64",  # image_b64 is not valid base64
    "bad_image",  # bytes are not a decodable PNG/JPEG, or too many pixels
    "unsupported_media_type",  # a body this operation cannot take (e.g. an image for decode)
    "payload_too_large",  # body or image bytes over the limit
    "too_many_items",  # instances or n over the limit
    "invalid_field",  # missing/extra/mistyped field
    "wrong_shape",  # pixel array is not H x W
    "wrong_latent_dim",  # z has the wrong length
    "not_finite",  # NaN or infinity
    "out_of_range",  # a number outside its documented range
    "unsupported",  # valid request this model cannot serve (e.g. sample on an AE)
    "internal_error",  # a bug: answered 500 for that request only, logged
)


class RequestError(Exception):
    def __init__(self, code: str, field: str, message: str, status: int = 400) -> None:
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(f"{field}: {message}")
        self.code = code
        self.field = field
        self.message = message
        self.status = status

    def body(self) -> dict:
        return {
            "error": {
                "status": self.status,
                "code": self.code,
                "field": self.field,
                "message": self.message,
            }
        }

    def to_json(self) -> str:
        return json.dumps(self.body(), separators=(",", ":"))


def json_path(loc: tuple, tags: dict[str, tuple[str, ...]] | None = None) -> str:
    """('instances', 0, 'pixels', 3, 5) -> 'instances[0].pixels[3][5]'. `tags`: field ->
    the names pydantic gives its tagged union's branches, left out after that field."""
    out, before = "", None
    for part in loc:
        skip = tags is not None and before in tags and part in tags[before]
        before = part
        if skip:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"
