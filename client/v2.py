"""The Open Inference Protocol (KServe v2) on the wire: requests out, answers in.

`write_infer_request` writes named numpy tensors as one request body, binary
(the `Inference-Header-Content-Length` extension that tritonclient and the
kserve client use) or JSON `data`. `read_infer_response` reads an answer, binary
outputs or JSON `data`, and checks it against what the caller asked for: every
size, datatype and shape must be exactly right, or it raises `LatentServeError`
(the server said 200, but a wrong answer is never handed back as a result).
Knows numpy only, nothing of latentserve's operations (client/protocols.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from client.errors import LatentServeError

HEADER_LENGTH = "Inference-Header-Content-Length"
# The protocol's numeric datatypes, as little-endian numpy dtypes (BYTES is not used here).
DATATYPES: dict[str, np.dtype] = {
    name: np.dtype(code)
    for name, code in (
        ("BOOL", "?"),
        ("UINT8", "u1"),
        ("UINT16", "<u2"),
        ("UINT32", "<u4"),
        ("UINT64", "<u8"),
        ("INT8", "i1"),
        ("INT16", "<i2"),
        ("INT32", "<i4"),
        ("INT64", "<i8"),
        ("FP16", "<f2"),
        ("FP32", "<f4"),
        ("FP64", "<f8"),
    )
}


def datatype_of(arr: np.ndarray) -> str:
    """The protocol's name for an array's dtype (of either byte order)."""
    for name, dtype in DATATYPES.items():
        if (arr.dtype.kind, arr.dtype.itemsize) == (dtype.kind, dtype.itemsize):
            return name
    raise ValueError(f"no Open Inference Protocol datatype for numpy {arr.dtype}")


def write_infer_request(
    inputs: Mapping[str, np.ndarray],
    parameters: Mapping | None = None,
    outputs: Sequence[str] | None = None,
    *,
    binary_inputs: bool = True,
    binary_outputs: bool = True,
) -> tuple[bytes, dict[str, str]]:
    """Named tensors (+ request parameters) -> (body, HTTP headers).

    `outputs` None asks for every output of the model (binary ones through the
    `binary_data_output` parameter); a list asks for exactly those.
    """
    params = dict(parameters or {})
    doc: dict = {"inputs": []}
    blobs: list[bytes] = []
    for name, arr in inputs.items():
        arr = np.asarray(arr)
        datatype = datatype_of(arr)
        entry: dict = {"name": name, "shape": list(arr.shape), "datatype": datatype}
        if binary_inputs:
            blob = np.ascontiguousarray(arr, dtype=DATATYPES[datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = arr.reshape(-1).tolist()
        doc["inputs"].append(entry)
    if outputs is None:
        if binary_outputs:
            params["binary_data_output"] = True
    else:
        doc["outputs"] = [
            {"name": name, "parameters": {"binary_data": binary_outputs}} for name in outputs
        ]
    if params:
        doc["parameters"] = params
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return head, {"Content-Type": "application/json"}
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
    return b"".join([head, *blobs]), headers


@dataclass(frozen=True)
class Expected:
    """What one output must be. `shape` entries are sizes, or names of sizes that
    must agree across the outputs of one answer (e.g. "D", the latent size)."""

    datatypes: tuple[str, ...]
    shape: tuple[int | str, ...]
    required: bool = True


@dataclass(frozen=True)
class InferResponse:
    outputs: dict[str, np.ndarray]
    parameters: dict


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():  # requests' headers are case-insensitive; dicts are not
        if key.lower() == name.lower():
            return value
    return None


def read_infer_response(
    body: bytes,
    headers: Mapping[str, str],
    expected: Mapping[str, Expected],
    *,
    model_name: str | None = None,
    url: str | None = None,
) -> InferResponse:
    """A 200 answer -> its outputs as numpy arrays (only the `expected` ones, each
    checked) and its parameters; anything else is a `LatentServeError`."""

    def bad(why: str) -> LatentServeError:
        return LatentServeError(f"not a valid inference answer: {why}", status=200, url=url)

    length = _header(headers, HEADER_LENGTH)
    if length is None:
        head_len = len(body)
    elif not length.strip().isdigit() or not 0 < int(length) <= len(body):
        raise bad(f"{HEADER_LENGTH} {length!r} does not fit a body of {len(body)} bytes")
    else:
        head_len = int(length)
    try:
        doc = json.loads(body[:head_len])
    except ValueError:
        where = "" if length is not None else f" (and there is no {HEADER_LENGTH} header)"
        raise bad(f"the JSON part does not parse{where}: {body[:200]!r}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("outputs"), list):
        raise bad("no 'outputs' list")
    if model_name is not None and doc.get("model_name") != model_name:
        raise bad(f"model_name {doc.get('model_name')!r}, asked {model_name!r}")
    params = doc.get("parameters", {})
    if not isinstance(params, dict):
        raise bad("'parameters' is not an object")

    arrays: dict[str, np.ndarray] = {}
    offset = head_len
    for out in doc["outputs"]:
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise bad(f"an output without a name: {str(out)[:100]}")
        name = out["name"]
        if name in arrays:
            raise bad(f"output {name!r} twice")
        if name not in expected:
            raise bad(f"unexpected output {name!r} (expected {sorted(expected)})")
        arr, offset = _read_output(out, body, offset, bad)
        arrays[name] = arr
    if offset != len(body):
        raise bad(f"{len(body) - offset} bytes after the last binary output")
    _check(arrays, expected, bad)
    return InferResponse(arrays, params)


def _read_output(out: dict, body: bytes, offset: int, bad) -> tuple[np.ndarray, int]:
    """One output's array, from `body` at `offset` when binary -> (array, next offset)."""
    name, datatype, shape = out["name"], out.get("datatype"), out.get("shape")
    if datatype not in DATATYPES:
        raise bad(f"output {name!r}: datatype {datatype!r} is not a numeric datatype")
    if (
        not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape)  # noqa: E721 (bool is no size)
    ):
        raise bad(f"output {name!r}: shape {shape!r} is not a list of sizes")
    count, dtype = math.prod(shape), DATATYPES[datatype]
    params = out.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if "data" in out:
            raise bad(f"output {name!r} has both 'data' and binary_data_size")
        if type(size) is not int or size != count * dtype.itemsize:  # noqa: E721
            raise bad(
                f"output {name!r}: binary_data_size {size!r}, but shape {shape} of {datatype} "
                f"is {count * dtype.itemsize} bytes"
            )
        if offset + size > len(body):
            raise bad(f"output {name!r}: {size} bytes announced, {len(body) - offset} left")
        arr = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
        return arr.reshape(shape), offset + size
    data = out.get("data")
    if not isinstance(data, list):
        raise bad(f"output {name!r} has neither 'data' nor binary_data_size")
    values = np.asarray(data) if data else np.zeros(0, dtype)
    kinds = "b" if datatype == "BOOL" else ("iu" if dtype.kind in "iu" else "iuf")
    if values.ndim != 1 or values.dtype.kind not in kinds:
        raise bad(f"output {name!r}: 'data' is not a flat list of {datatype} values")
    if len(values) != count:
        raise bad(f"output {name!r}: {len(values)} values for shape {shape}")
    if dtype.kind in "iu" and len(values):
        info = np.iinfo(dtype)
        if values.min() < info.min or values.max() > info.max:
            raise bad(f"output {name!r}: values outside {datatype}")
    return values.astype(dtype).reshape(shape), offset


def _check(arrays: dict[str, np.ndarray], expected: Mapping[str, Expected], bad) -> None:
    sizes: dict[str, int] = {}
    for name, want in expected.items():
        if name not in arrays:
            if want.required:
                raise bad(f"output {name!r} is missing")
            continue
        arr = arrays[name]
        if datatype_of(arr) not in want.datatypes:
            raise bad(f"output {name!r} is {datatype_of(arr)}, expected {'/'.join(want.datatypes)}")
        ok = arr.ndim == len(want.shape)
        for got, dim in zip(arr.shape, want.shape, strict=False):
            if isinstance(dim, str):
                ok = ok and got >= 1 and sizes.setdefault(dim, got) == got
            else:
                ok = ok and got == dim
        if not ok:
            want_shape = [sizes.get(d, d) if isinstance(d, str) else d for d in want.shape]
            raise bad(f"output {name!r} has shape {list(arr.shape)}, expected {want_shape}")
