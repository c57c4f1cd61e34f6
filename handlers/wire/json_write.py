"""Response writing: compact JSON, float vectors as text, images as PNG or pixel lists.

Values that are not JSON (NaN, infinity) raise ValueError: the engine answers
that request with a 500 and the others go on.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import numpy as np

from handlers.wire.images import write_png

FLOAT = "%.9g"  # nine significant digits print every float32 exactly


def write_json(body: Any) -> str:
    """Compact JSON; NaN or infinity raise ValueError (they are not JSON)."""
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


@lru_cache(maxsize=64)
def float_array_format(d: int, spec: str = FLOAT) -> str:
    """A %-format of a JSON array of d numbers, each printed with `spec`."""
    return "[" + ",".join([spec] * d) + "]"


def json_number(v: float) -> str:
    """A finite float as JSON text: 9 significant digits, and always a float to a
    JSON reader ("%.9g" prints 1.0 as "1" and -0.0 as "-0", integers in JSON)."""
    text = FLOAT % v
    return text if "." in text or "e" in text else text + ".0"


def printable_floats(arr: np.ndarray) -> tuple[list[tuple], str]:
    """(n, ...) floats -> (per item a tuple of its values, flattened; their % spec).

    Answers made mostly of floats are written with one %-format per item
    (`float_array_format`): cheaper than `json.dumps` on lists, and shorter than
    float64's repr, while nine significant digits give back the exact float32.
    Usually the tuples hold the floats and the spec is FLOAT; if any value is
    integral (it would print as a JSON integer) they hold `json_number` strings
    and the spec is "%s". NaN or infinity raise ValueError (they are not JSON).
    """
    flat = np.asarray(arr, dtype=np.float32).reshape(len(arr), -1)
    if not np.isfinite(flat).all():
        raise ValueError("Out of range float values are not JSON compliant")
    if (flat == np.trunc(flat)).any():  # rare for a model's output: 0.0, 1.0, ...
        return [tuple(json_number(v) for v in row) for row in flat.tolist()], "%s"
    return [tuple(row) for row in flat.tolist()], FLOAT


def write_float_arrays(rows: np.ndarray) -> list[str]:
    """(n, d) floats -> n JSON arrays (see `printable_floats`)."""
    values, spec = printable_floats(rows)
    fmt = float_array_format(np.shape(rows)[1], spec)
    return [fmt % v for v in values]


def write_images(pixels: np.ndarray, fmt: str, scale: float) -> list[dict]:
    """(n, H, W) or (n, H, W, C) floats in [0, 1] -> n predictions: base64 PNG, or pixel
    lists ("array")."""
    if fmt == "array":
        return [{"pixels": np.round(a.astype(np.float64), 6).tolist()} for a in pixels]
    return [{"image_b64": write_png(a, scale)} for a in pixels]
