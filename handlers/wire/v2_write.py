"""Writing Open Inference Protocol (KServe v2) responses and errors.

An answer names each output with its datatype and shape; its values go either
into the JSON as a flat row-major `data` list (floats with the JSON API's
nine-significant-digit %-format, which gives back the exact float32) or, with
the binary tensor extension, after the JSON as raw little-endian bytes, the
JSON's length in the `Inference-Header-Content-Length` header.
"""

from __future__ import annotations

import numpy as np

from handlers.errors import RequestError
from handlers.wire.json_write import FLOAT, write_json
from handlers.wire.v2_read import Call

JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPE_NAMES = {
    np.dtype(np.bool_): "BOOL",  # one byte per value in the binary extension
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.int64): "INT64",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
}


def write_data(arr: np.ndarray) -> str:
    """An array's values as the inside of a flat JSON list (row-major).

    Floats are printed with `FLOAT`: exact for float32, and shorter than
    float64's repr. NaN or infinity raise ValueError (they are not JSON).
    """
    flat = arr.ravel().tolist()
    if arr.dtype.kind == "b":
        return ",".join("true" if v else "false" for v in flat)
    if arr.dtype.kind != "f":
        return ",".join(map(str, flat))
    if not np.isfinite(arr).all():
        raise ValueError("Out of range float values are not JSON compliant")
    return ",".join([FLOAT] * len(flat)) % tuple(flat)


def write_response(
    model_name: str,
    model_version: str,
    call: Call,
    named: dict[str, np.ndarray],
    parameters: dict,
) -> tuple[str | bytes, str, dict[str, str]]:
    """A call's outputs -> (body, content type, headers).

    `named` holds every output of the operation for this request, in the
    protocol's order; the call picks which (and which of them binary).
    """
    names = list(named) if call.outputs is None else [o.name for o in call.outputs]
    parts, blobs = [], []
    for name in names:
        arr = named[name]
        head = {"name": name, "datatype": DATATYPE_NAMES[arr.dtype], "shape": list(arr.shape)}
        if call.binary(name):
            data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            head["parameters"] = {"binary_data_size": len(data)}
            parts.append(write_json(head))
            blobs.append(data)
        else:
            parts.append(write_json(head)[:-1] + ',"data":[' + write_data(arr) + "]}")
    top = {"model_name": model_name, "model_version": model_version}
    if call.id is not None:
        top["id"] = call.id
    if parameters:
        top["parameters"] = parameters
    text = write_json(top)[:-1] + ',"outputs":[' + ",".join(parts) + "]}"
    if not blobs:
        return text, JSON_TYPE, {}
    head_bytes = text.encode()
    return head_bytes + b"".join(blobs), BINARY_TYPE, {HEADER_LENGTH: str(len(head_bytes))}


def write_error(err: RequestError) -> str:
    """The protocol's error body: {"error": "<tensor/parameter/header>: <message>"}."""
    text = err.message if err.field == "body" else f"{err.field}: {err.message}"
    return write_json({"error": text})
