"""Reading the Open Inference Protocol (KServe v2): a request's tensors and parameters.

Which requests are v2 is `handlers.wire.protocol`'s choice. `read_call` reads one:
the JSON header (strict), then the binary part of the binary tensor extension
split exactly as the header's `binary_data_size`s say, every size checked
before anything is allocated, each binary input a zero-copy `np.frombuffer`
view. Every failure is a 400 `RequestError` naming the tensor, parameter or
header; the error's text is written by `handlers.wire.v2_write.write_error`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ValidationError

from handlers.errors import RequestError
from handlers.limits import Limits
from handlers.wire.protocol import HEADER_LENGTH
from handlers.wire.request import FORM_TYPES, RawRequest, check_count, validation_error
from handlers.wire.v2_schemas import InferRequest, InputTensor, RequestedOutput

BINARY_OUTPUT = "binary_data_output"

# Datatypes we read (little-endian, as the binary extension sends them).
# BOOL and BYTES are not: no operation takes them.
DATATYPES: dict[str, np.dtype] = {
    name: np.dtype(code)
    for name, code in {
        "UINT8": "u1",
        "UINT16": "<u2",
        "UINT32": "<u4",
        "UINT64": "<u8",
        "INT8": "i1",
        "INT16": "<i2",
        "INT32": "<i4",
        "INT64": "<i8",
        "FP16": "<f2",
        "FP32": "<f4",
        "FP64": "<f8",
    }.items()
}


@dataclass(frozen=True)
class Tensor:
    datatype: str
    array: np.ndarray  # of the declared shape and datatype


@dataclass(frozen=True)
class Call:
    """One v2 inference request, read and checked."""

    id: str | None
    parameters: dict  # the request parameters, less the wire's own (binary_data_output)
    inputs: dict[str, Tensor]
    outputs: list[RequestedOutput] | None  # None: every output of the operation
    binary_output: bool  # the request parameter binary_data_output

    def binary(self, name: str) -> bool:
        """Is output `name` written binary (its own binary_data, or binary_data_output)?"""
        for o in self.outputs or ():
            if o.name == name and o.parameters and o.parameters.binary_data:
                return True
        return self.binary_output


def read_call(raw: RawRequest, limits: Limits) -> Call:
    """A v2 request (JSON, or JSON + binary part) -> its `Call`, or a 400."""
    if raw.headers.get("explain", "False") != "False":
        raise RequestError("unsupported", "body", "explain is not supported")
    if raw.content_type in FORM_TYPES:  # the frontend has taken the body apart as a form
        raise RequestError(
            "unsupported_media_type",
            "body",
            f"got a body of type {raw.content_type}; send the JSON with 'Content-Type: "
            "application/json', or JSON + binary tensors with application/octet-stream",
        )
    body, length = raw.body, _header_length(raw.headers.get(HEADER_LENGTH))
    if isinstance(body, str):
        body = body.encode("utf-8")
    if isinstance(body, dict | list):  # a server that parsed the JSON already
        if length is not None:
            raise RequestError("invalid_field", "body", "a parsed JSON body has no binary part")
        req, binary = _validate(InferRequest.model_validate, body), memoryview(b"")
    else:
        if not body:
            raise RequestError("bad_json", "body", "the body is empty; expected a JSON object")
        if len(body) > limits.max_body_bytes:
            raise RequestError(
                "payload_too_large",
                "body",
                f"the body has {len(body)} bytes; at most {limits.max_body_bytes} are accepted",
            )
        split = len(body) if length is None else length
        if split > len(body):
            raise RequestError(
                "invalid_field",
                "Inference-Header-Content-Length",
                f"{split} exceeds the body ({len(body)} bytes)",
            )
        req = _validate(InferRequest.model_validate_json, bytes(body[:split]))
        binary = memoryview(body)[split:]
    params = dict(req.parameters)
    for name, value in params.items():
        if not isinstance(value, bool | int | float | str):
            raise RequestError(
                "invalid_field", f"parameter '{name}'", "must be a boolean, number or string"
            )
    binary_output = params.pop(BINARY_OUTPUT, False)
    if not isinstance(binary_output, bool):
        raise RequestError("invalid_field", f"parameter '{BINARY_OUTPUT}'", "must be a boolean")
    inputs, offset = {}, 0
    for t in req.inputs:
        if t.name in inputs:
            raise RequestError("invalid_field", f"input '{t.name}'", "is given twice")
        arr, offset = _read_input(t, binary, offset, has_binary=length is not None)
        inputs[t.name] = Tensor(t.datatype, arr)
    if offset != len(binary):
        raise RequestError(
            "invalid_field",
            "body",
            f"the binary part has {len(binary)} bytes but the inputs' binary_data_size "
            f"add up to {offset}: {len(binary) - offset} bytes are left over",
        )
    names = [o.name for o in req.outputs or ()]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise RequestError("invalid_field", f"output '{name}'", "is requested twice")
    return Call(req.id, params, inputs, req.outputs, binary_output)


def _header_length(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise RequestError(
            "invalid_field",
            "Inference-Header-Content-Length",
            f"{value[:40]!r} is not a byte count (a non-negative integer)",
        )
    return int(text)


def _validate(validate, data) -> InferRequest:
    try:
        return validate(data, strict=True)
    except ValidationError as err:
        e = validation_error(err)
        if e.code == "bad_json":  # say which bytes were read as JSON
            e = RequestError(e.code, e.field, f"the JSON part ({len(data)} bytes): {e.message}")
        raise e from None


def _read_input(
    t: InputTensor, binary: memoryview, offset: int, has_binary: bool
) -> tuple[np.ndarray, int]:
    """One input's array (declared shape and datatype) and the offset past its bytes."""
    field = f"input '{t.name}'"
    dtype = DATATYPES.get(t.datatype)
    if dtype is None:
        raise RequestError("invalid_field", field, f"datatype {t.datatype} is not supported here")
    if any(d < 0 for d in t.shape):
        raise RequestError("wrong_shape", field, f"shape {t.shape} has a negative dimension")
    count = math.prod(t.shape)
    size = t.parameters.binary_data_size if t.parameters else None
    if size is None:
        if t.data is None:
            raise RequestError(
                "invalid_field", field, "has neither data nor parameters.binary_data_size"
            )
        return _read_data(t.data, dtype, t.shape, count, field), offset
    if t.data is not None:
        raise RequestError("invalid_field", field, "has both data and parameters.binary_data_size")
    if not has_binary:
        raise RequestError(
            "invalid_field",
            field,
            "has parameters.binary_data_size but the request has no binary part "
            "(no Inference-Header-Content-Length header)",
        )
    want = count * dtype.itemsize
    if size != want:
        raise RequestError(
            "wrong_shape",
            field,
            f"binary_data_size {size} does not match shape {t.shape} x {t.datatype} ({want} bytes)",
        )
    if offset + size > len(binary):
        raise RequestError(
            "invalid_field",
            field,
            f"binary_data_size {size} runs past the binary part "
            f"({len(binary) - offset} bytes left of {len(binary)})",
        )
    arr = np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(t.shape)
    return _check_finite(arr, field), offset + size


def _read_data(data: list, dtype: np.dtype, shape: list[int], count: int, field: str):
    """JSON `data` (nested or flat, row-major) -> an array of `dtype` and `shape`, exactly."""
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError):
        raise RequestError("wrong_shape", field, "data is not a regular array") from None
    if arr.size != count:
        raise RequestError(
            "wrong_shape", field, f"data has {arr.size} values; shape {shape} needs {count}"
        )
    if not count:
        return np.zeros(shape, dtype=dtype)
    if dtype.kind == "f":
        if arr.dtype.kind not in "iuf":
            raise RequestError("invalid_field", field, f"data must be numbers ({dtype.name})")
        with np.errstate(over="ignore"):  # past float32's range: infinity, answered below
            out = arr.astype(dtype).reshape(shape)
        return _check_finite(out, field)
    # integers, exactly and in range; numpy reads ints past int64 as floats or objects,
    # so those (rare: UINT64's top half) are checked as the Python ints JSON gave
    values = arr if arr.dtype.kind in "iu" else np.asarray(data, dtype=object).ravel().tolist()
    if arr.dtype.kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
    elif arr.dtype.kind in "fO" and all(type(v) is int for v in values):
        lo, hi = min(values), max(values)
    else:
        raise RequestError("invalid_field", field, f"data must be integers ({dtype.name})")
    info = np.iinfo(dtype)
    if lo < info.min or hi > info.max:
        bad = lo if lo < info.min else hi
        raise RequestError("out_of_range", field, f"value {bad} is outside {dtype.name}'s range")
    return np.asarray(values, dtype=dtype).reshape(shape)


def _check_finite(arr: np.ndarray, field: str) -> np.ndarray:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise RequestError("not_finite", field + "".join(f"[{i}]" for i in idx), "NaN or infinity")
    return arr


# ---- helpers of the operations ------------------------------------------------
def read_parameters(params: dict, schema: type[BaseModel]) -> BaseModel:
    """The request parameters against an operation's schema (strict, no unknown names)."""
    try:
        return schema.model_validate(params, strict=True)
    except ValidationError as err:
        e = validation_error(err)
        raise RequestError(e.code, f"parameter '{e.field}'", e.message) from None


def take_inputs(
    inputs: dict[str, Tensor], accepted: dict[str, tuple[str, ...]], op: str
) -> dict[str, Tensor]:
    """Exactly the inputs an operation takes ({name: accepted datatypes}), or a 400."""
    for name in inputs:
        if name not in accepted:
            takes = ", ".join(accepted) or "none"
            raise RequestError(
                "invalid_field", f"input '{name}'", f"is not an input of {op} (inputs: {takes})"
            )
    for name, datatypes in accepted.items():
        if name not in inputs:
            raise RequestError("invalid_field", f"input '{name}'", "is missing")
        if inputs[name].datatype not in datatypes:
            raise RequestError(
                "invalid_field",
                f"input '{name}'",
                f"datatype {inputs[name].datatype} not accepted; use {_one_of(datatypes)}",
            )
    return inputs


def _one_of(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def check_items(n: int, most: int, name: str) -> int:
    """The first dimension of an input: 1..most items."""
    if n < 1:
        raise RequestError("invalid_field", f"input '{name}'", "has no items (shape[0] is 0)")
    check_count(n, most, f"input '{name}'")
    return n


def check_outputs(call: Call, names: tuple[str, ...], op: str) -> None:
    """Every requested output is one the operation writes for this request."""
    for o in call.outputs or ():
        if o.name not in names:
            raise RequestError(
                "invalid_field",
                f"output '{o.name}'",
                f"is not an output of {op} for this request (outputs: {', '.join(names)})",
            )
