"""The Open Inference Protocol reader: wire choice, tensors in JSON and binary, every 400."""

from __future__ import annotations

import json

import numpy as np
import pytest

from handlers.limits import LIMITS, Limits
from handlers.wire.protocol import JSON, V2, wire_protocol
from handlers.wire.request import RawRequest
from handlers.wire.v2_read import DATATYPES, read_call
from tests.handlers.tiny import rejects, v2_request
from tests.support.v2 import binary_input

KSERVE = {"explain": "False"}  # what TorchServe adds on /v1/models/x:predict and /v2/.../infer
PREDICTIONS = {"url_path": "", "explain": "False"}  # what it adds on /predictions/x


@pytest.mark.parametrize(
    ("headers", "body", "wire"),
    [
        (PREDICTIONS, b'{"inputs": []}', JSON),  # /predictions is always the JSON API
        ({**PREDICTIONS, "inference-header-content-length": "2"}, b"{}xx", JSON),
        ({}, b'{"inputs": []}', JSON),  # no route header: not TorchServe's KServe route
        (KSERVE, b'{"inputs": []}', V2),
        (KSERVE, b' \n{ "parameters": {"n": 2}}', V2),
        (KSERVE, b'{"id": "a", "inputs": []}', V2),
        (KSERVE, b'{"outputs": [], "inputs": []}', V2),
        (KSERVE, {"inputs": []}, V2),  # a body the server parsed already
        (KSERVE, '{"inputs": []}', V2),
        ({**KSERVE, "inference-header-content-length": "9"}, b"\x00\x01", V2),
        ({"explain": "True"}, b'{"instances": []}', V2),  # answered "explain is not supported"
        (KSERVE, b'{"instances": [{"z": [0.5]}]}', JSON),  # KServe v1 = the JSON API's shape
        (KSERVE, b'{"n": 2, "seed": 1}', JSON),
        (KSERVE, b"{}", JSON),
        (KSERVE, {"instances": []}, JSON),
        (KSERVE, b"\x89PNG\r\n\x1a\n", JSON),
        (KSERVE, b"", JSON),
        (KSERVE, None, JSON),
    ],
)
def test_wire_protocol_from_route_headers_and_body(headers, body, wire):
    assert wire_protocol(headers, body) == wire


@pytest.mark.parametrize("name", sorted(DATATYPES))
@pytest.mark.parametrize("binary", [True, False])
def test_every_datatype_round_trips(name, binary):
    dtype = DATATYPES[name]
    rng = np.random.default_rng(1)
    if dtype.kind == "f":
        arr = rng.normal(size=(2, 3, 4)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        arr = rng.integers(max(info.min, -1000), min(info.max, 1000), (2, 3, 4)).astype(dtype)
    arr.flat[0] = np.iinfo(dtype).max if dtype.kind in "iu" else arr.flat[0]
    if binary:
        raw = v2_request({"inputs": [binary_input("x", arr, name)]}, arr.tobytes())
    else:
        tensor = {"name": "x", "shape": [2, 3, 4], "datatype": name, "data": arr.tolist()}
        raw = v2_request({"inputs": [tensor]})
    t = read_call(raw, LIMITS).inputs["x"]
    assert t.datatype == name and t.array.dtype == dtype and t.array.shape == (2, 3, 4)
    assert np.array_equal(t.array, arr)


def test_flat_and_nested_data_are_the_same_tensor():
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    flat = {"name": "x", "shape": [2, 3, 4], "datatype": "FP32", "data": arr.ravel().tolist()}
    nested = {**flat, "data": arr.tolist()}
    a = read_call(v2_request({"inputs": [flat]}), LIMITS).inputs["x"].array
    b = read_call(v2_request({"inputs": [nested]}), LIMITS).inputs["x"].array
    assert np.array_equal(a, arr) and np.array_equal(b, arr)


def test_mixed_binary_and_json_inputs_split_in_order():
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    b = np.linspace(0, 1, 4, dtype=np.float64).reshape(4, 1)
    c = np.array([[1.5, -2.5]], dtype=np.float32)
    header = {
        "id": "req-7",
        "inputs": [
            binary_input("a", a, "UINT8"),
            {"name": "j", "shape": [2], "datatype": "INT32", "data": [5, -6]},
            binary_input("b", b, "FP64"),
            binary_input("c", c, "FP32"),
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "w"}],
        "parameters": {"seed": 3},
    }
    call = read_call(v2_request(header, a.tobytes() + b.tobytes() + c.tobytes()), LIMITS)
    assert call.id == "req-7" and call.parameters == {"seed": 3}
    assert list(call.inputs) == ["a", "j", "b", "c"]
    for name, want in (("a", a), ("b", b), ("c", c), ("j", np.array([5, -6]))):
        assert np.array_equal(call.inputs[name].array, want)
    assert (call.binary("y"), call.binary("w"), call.binary("other")) == (True, False, False)


def test_binary_data_output_makes_every_output_binary():
    call = read_call(v2_request({"inputs": [], "parameters": {"binary_data_output": True}}), LIMITS)
    assert call.binary_output and call.binary("anything") and call.parameters == {}
    assert call.outputs is None


def test_a_binary_input_is_a_view_of_the_body_not_a_copy():
    arr = np.arange(12, dtype=np.float32)
    raw = v2_request({"inputs": [binary_input("x", arr, "FP32")]}, arr.tobytes())
    body = bytearray(raw.body)  # TorchServe's worker hands over a bytearray
    raw = RawRequest(body, raw.content_type, raw.protocol, raw.headers)
    t = read_call(raw, LIMITS).inputs["x"]
    assert np.shares_memory(t.array, np.frombuffer(body, dtype=np.uint8))


U8 = np.zeros((1, 28, 28), dtype=np.uint8)
IMAGE = binary_input("image", U8, "UINT8")
LEN = "inference-header-content-length"


def head_len(header: dict) -> str:
    return str(len(json.dumps(header).encode()))


@pytest.mark.parametrize(
    ("header", "binary", "headers", "code", "field", "says"),
    [
        # the header's length and the binary part
        ({"inputs": [IMAGE]}, U8.tobytes(), {LEN: "9000"}, "invalid_field",
         "Inference-Header-Content-Length", "9000 exceeds the body"),
        ({"inputs": [IMAGE]}, U8.tobytes(), {LEN: "-5"}, "invalid_field",
         "Inference-Header-Content-Length", "not a byte count"),
        ({"inputs": [IMAGE]}, U8.tobytes(), {LEN: "12x"}, "invalid_field",
         "Inference-Header-Content-Length", "not a byte count"),
        ({"inputs": [IMAGE]}, U8.tobytes(), {LEN: "10"}, "bad_json", "body",
         "the JSON part (10 bytes): Invalid JSON"),
        ({"inputs": [IMAGE]}, U8.tobytes()[:700], {}, "invalid_field", "input 'image'",
         "runs past the binary part (700 bytes left of 700)"),
        ({"inputs": [IMAGE]}, U8.tobytes() + b"\x00\x00", {}, "invalid_field", "body",
         "2 bytes are left over"),
        ({"inputs": [{**IMAGE, "parameters": {"binary_data_size": 700}}]}, U8.tobytes(), {},
         "wrong_shape", "input 'image'", "does not match shape [1, 28, 28] x UINT8 (784 bytes)"),
        ({"inputs": [{**IMAGE, "parameters": {"binary_data_size": -1}}]}, U8.tobytes(), {},
         "out_of_range", "inputs[0].parameters.binary_data_size", "greater than or equal to 0"),
        ({"inputs": [{**IMAGE, "parameters": {"binary_data_size": 2**62}}]}, U8.tobytes(), {},
         "wrong_shape", "input 'image'", "does not match"),
        ({"inputs": [{**IMAGE, "shape": [2**40, 28, 28],
                      "parameters": {"binary_data_size": 2**62}}]},
         U8.tobytes(), {}, "wrong_shape", "input 'image'", "does not match"),
        ({"inputs": [{**IMAGE, "shape": [-1, 28, 28]}]}, U8.tobytes(), {}, "wrong_shape",
         "input 'image'", "negative dimension"),
        ({"inputs": [IMAGE]}, b"", {}, "invalid_field", "input 'image'",
         "no binary part (no Inference-Header-Content-Length header)"),
        ({"inputs": [{**IMAGE, "data": [0] * 784}]}, U8.tobytes(), {}, "invalid_field",
         "input 'image'", "both data and parameters.binary_data_size"),
        ({"inputs": [{"name": "image", "shape": [1], "datatype": "UINT8"}]}, b"", {},
         "invalid_field", "input 'image'", "neither data nor"),
        ({"inputs": [{**IMAGE, "datatype": "BYTES"}]}, U8.tobytes(), {}, "invalid_field",
         "input 'image'", "datatype BYTES is not supported"),
        ({"inputs": [{**IMAGE, "datatype": "FP128"}]}, U8.tobytes(), {}, "invalid_field",
         "input 'image'", "datatype FP128"),
        ({"inputs": [IMAGE, IMAGE]}, U8.tobytes() * 2, {}, "invalid_field", "input 'image'",
         "given twice"),
        # JSON data
        ({"inputs": [{"name": "x", "shape": [2**40, 3], "datatype": "FP32", "data": [1.0]}]},
         b"", {}, "wrong_shape", "input 'x'", "data has 1 values; shape [1099511627776, 3]"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [[1.0], [2, 3]]}]},
         b"", {}, "wrong_shape", "input 'x'", "not a regular array"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": ["a", "b"]}]},
         b"", {}, "invalid_field", "input 'x'", "must be numbers"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "UINT8", "data": [1.5, 2]}]},
         b"", {}, "invalid_field", "input 'x'", "must be integers"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "UINT8", "data": [1, 300]}]},
         b"", {}, "out_of_range", "input 'x'", "300 is outside uint8's range"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "UINT8", "data": [True, False]}]},
         b"", {}, "invalid_field", "input 'x'", "must be integers"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 1e39]}]},
         b"", {}, "not_finite", "input 'x'[1]", "NaN or infinity"),
        # the header itself
        ({"inputs": [IMAGE], "extra": 1}, U8.tobytes(), {}, "invalid_field", "extra",
         "Extra inputs are not permitted"),
        ({"inputs": [{**IMAGE, "shape": "28"}]}, U8.tobytes(), {}, "invalid_field",
         "inputs[0].shape", "valid array"),
        ({"inputs": [{**IMAGE, "parameters": {"binary_data_size": 784, "x": 1}}]},
         U8.tobytes(), {}, "invalid_field", "inputs[0].parameters.x", "Extra inputs"),
        ({"inputs": [], "parameters": {"binary_data_output": "yes"}}, b"", {}, "invalid_field",
         "parameter 'binary_data_output'", "must be a boolean"),
        ({"inputs": [], "outputs": [{"name": "a"}, {"name": "a"}]}, b"", {}, "invalid_field",
         "output 'a'", "requested twice"),
        ({"inputs": [], "outputs": [{"name": "a", "parameters": {"binary_data": 1}}]}, b"", {},
         "invalid_field", "outputs[0].parameters.binary_data", "valid boolean"),
        ({"inputs": [], "parameters": {"seed": {"a": 1}}}, b"", {}, "invalid_field",
         "parameter 'seed'", "must be a boolean, number or string"),
        ({"inputs": []}, b"", {"explain": "True"}, "unsupported", "body",
         "explain is not supported"),
    ],
)  # fmt: skip
def test_malformed_requests_are_400s_naming_the_part(header, binary, headers, code, field, says):
    raw = v2_request(header, binary)
    raw.headers.update(headers)
    err = rejects(code, field, read_call, raw, LIMITS)
    assert says in err.message


def test_malformed_bodies():
    def raw(body: bytes, content_type="application/json", **headers) -> RawRequest:
        return RawRequest(body, content_type, V2, {"explain": "False", **headers})

    nan = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [NaN]}]}'
    rejects("not_finite", "input 'x'[0]", read_call, raw(nan), LIMITS)
    rejects("bad_json", "body", read_call, raw(b"{not json"), LIMITS)
    rejects("bad_json", "body", read_call, raw(b"\xff\xfe\x00"), LIMITS)
    rejects("bad_json", "body", read_call, raw(b""), LIMITS)
    rejects("invalid_field", "body", read_call, raw(b"[1, 2]"), LIMITS)
    form = raw(b"", "application/x-www-form-urlencoded")
    err = rejects("unsupported_media_type", "body", read_call, form, LIMITS)
    assert "application/octet-stream" in err.message
    big = raw(b'{"inputs": []}' + b" " * 100)
    rejects("payload_too_large", "body", read_call, big, Limits(max_body_bytes=100))
    nan32 = np.array([1.0, np.nan], dtype=np.float32)
    header = {"inputs": [binary_input("x", nan32, "FP32")]}
    rejects("not_finite", "input 'x'[1]", read_call, v2_request(header, nan32.tobytes()), LIMITS)
    parsed = RawRequest({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]},
                        "application/json", V2, {"explain": "False"})  # fmt: skip
    assert read_call(parsed, LIMITS).inputs["x"].array.tolist() == [1.0]
