"""client/v2.py without a server: requests and answers round-trip through the
contract's server half (tests/client/v2server.py), and every malformed answer is
refused with a LatentServeError instead of being handed back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from client import LatentServeError
from client.protocols import V2, Reply
from client.v2 import Expected, read_infer_response, write_infer_request
from tests.client.v2server import read_request, write_response

RNG = np.random.default_rng(0)
CODE = Expected(("FP32",), (3, "D"))
ENCODED = {"z_mean": CODE, "z_log_var": Expected(("FP32",), (3, "D"), required=False)}


@pytest.mark.parametrize("binary", [True, False])
def test_request_round_trip_keeps_every_tensor_exactly(binary):
    tensors = {
        "u8": RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "f32": RNG.random((2, 5), dtype=np.float32),
        "f64": RNG.random((4,)),
        "big_endian": RNG.random((2, 3)).astype(">f4"),
        "strided": RNG.random((6, 6), dtype=np.float32)[::2, ::3],
    }
    body, headers = write_infer_request(tensors, {"seed": 3}, binary_inputs=binary)
    doc, got = read_request(body, headers)
    assert [i["name"] for i in doc["inputs"]] == list(tensors)
    assert [i["datatype"] for i in doc["inputs"]] == ["UINT8", "FP32", "FP64", "FP32", "FP32"]
    for name, arr in tensors.items():
        assert got[name].shape == arr.shape and np.array_equal(got[name], arr), name
    assert doc["parameters"] == {"seed": 3, "binary_data_output": True}
    if binary:
        assert headers["Content-Type"] == "application/octet-stream"
        assert int(headers["Inference-Header-Content-Length"]) == len(
            json.dumps(doc, separators=(",", ":"))
        )
    else:
        assert headers == {"Content-Type": "application/json"}


def test_request_without_inputs_and_with_named_outputs():
    body, headers = write_infer_request({}, {"n": 2}, ["image"], binary_outputs=False)
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(body) == {
        "inputs": [],
        "outputs": [{"name": "image", "parameters": {"binary_data": False}}],
        "parameters": {"n": 2},
    }
    with pytest.raises(ValueError, match="datatype"):
        write_infer_request({"s": np.array(["a"])})


@pytest.mark.parametrize("binary", [True, False])
def test_answer_round_trip(binary):
    z_mean, z_log_var = RNG.random((3, 4), dtype=np.float32), RNG.random((3, 4), dtype=np.float32)
    body, headers = write_response(
        "m-encode", {"z_mean": z_mean, "z_log_var": z_log_var}, {"seed": 9}, binary
    )
    answer = read_infer_response(body, headers, ENCODED, model_name="m-encode")
    assert np.array_equal(answer.outputs["z_mean"], z_mean)
    assert np.array_equal(answer.outputs["z_log_var"], z_log_var)
    assert answer.outputs["z_mean"].dtype == np.float32 and answer.parameters == {"seed": 9}
    # an optional output may be absent (an AE has no z_log_var)
    body, headers = write_response("m-encode", {"z_mean": z_mean}, binary=binary)
    assert set(read_infer_response(body, headers, ENCODED).outputs) == {"z_mean"}
    # header names are case-insensitive
    body, headers = write_response("m-encode", {"z_mean": z_mean})
    lower = {k.lower(): v for k, v in headers.items()}
    assert np.array_equal(read_infer_response(body, lower, ENCODED).outputs["z_mean"], z_mean)


def _binary_answer(**changes):
    """A valid binary encode answer for 3 x 2 codes, then `changes` to its first output."""
    z = np.arange(6, dtype=np.float32).reshape(3, 2)
    body, headers = write_response("m-encode", {"z_mean": z})
    head_len = int(headers["Inference-Header-Content-Length"])
    doc = json.loads(body[:head_len])
    doc["outputs"][0].update(changes)
    head = json.dumps(doc).encode()
    return head + body[head_len:], {"Inference-Header-Content-Length": str(len(head))}


def _json_answer(data, **changes):
    out = {"name": "z_mean", "datatype": "FP32", "shape": [3, 2], "data": data, **changes}
    return json.dumps({"model_name": "m-encode", "outputs": [out]}).encode(), {}


def _with_header(value):
    body, _ = write_response("m-encode", {"z_mean": np.zeros((3, 2), np.float32)})
    return body, {"Inference-Header-Content-Length": value}


z32 = np.zeros((3, 2), np.float32)
MALFORMED = {
    "header not a number": _with_header("12a"),
    "header negative": _with_header("-5"),
    "header zero": _with_header("0"),
    "header past the body": _with_header("100000"),
    "JSON does not parse": (b"{not json", {}),
    "no outputs": (b'{"model_name": "m-encode"}', {}),
    "outputs not a list": (b'{"outputs": {}}', {}),
    "wrong model": write_response("other-encode", {"z_mean": z32}),
    "parameters not an object": (b'{"model_name": "m-encode", "outputs": [], "parameters": 3}', {}),
    "output without name": (b'{"model_name": "m-encode", "outputs": [{"datatype": "FP32"}]}', {}),
    "unexpected output": write_response("m-encode", {"z_mean": z32, "extra": z32}),
    "missing required output": write_response("m-encode", {"z_log_var": z32}),
    "BYTES datatype": _binary_answer(datatype="BYTES"),
    "unknown datatype": _binary_answer(datatype="FLOAT"),
    "wrong datatype, right size": _binary_answer(datatype="INT32"),
    "shape not a list": _binary_answer(shape="3x2"),
    "negative size": _binary_answer(shape=[-3, -2]),
    "bool size": _binary_answer(shape=[3, True, 2]),
    "float size": _binary_answer(shape=[3.0, 2]),
    "wrong number of items": write_response("m-encode", {"z_mean": np.zeros((4, 2), np.float32)}),
    "wrong rank": write_response("m-encode", {"z_mean": np.zeros((3, 2, 1), np.float32)}),
    "zero latent size": write_response("m-encode", {"z_mean": np.zeros((3, 0), np.float32)}),
    "latent sizes disagree": write_response(
        "m-encode", {"z_mean": z32, "z_log_var": np.zeros((3, 3), np.float32)}
    ),
    "binary size mismatch": _binary_answer(parameters={"binary_data_size": 20}),
    "binary size negative": _binary_answer(parameters={"binary_data_size": -24}),
    "binary size huge": _binary_answer(parameters={"binary_data_size": 2**62}, shape=[3, 2**59]),
    "binary size a string": _binary_answer(parameters={"binary_data_size": "24"}),
    "binary and data": _binary_answer(data=[0] * 6),
    "short buffer": (lambda b, h: (b[:-4], h))(*_binary_answer()),
    "trailing bytes": (lambda b, h: (b + b"\0", h))(*_binary_answer()),
    "binary without the header": (_binary_answer()[0], {}),
    "neither data nor binary": _json_answer(None),
    "too few values": _json_answer([0.0] * 5),
    "nested data": _json_answer([[0.0, 0.0]] * 3),
    "string values": _json_answer(["0.0"] * 6),
    "boolean values": _json_answer([True] * 6),
    "null values": _json_answer([None] * 6),
}
MALFORMED["output twice"] = (
    json.dumps(
        {
            "model_name": "m-encode",
            "outputs": [{"name": "z_mean", "datatype": "FP32", "shape": [3, 2], "data": [0] * 6}]
            * 2,
        }
    ).encode(),
    {},
)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_every_malformed_answer_is_refused(case):
    body, headers = MALFORMED[case]
    with pytest.raises(LatentServeError, match="not a valid inference answer") as info:
        read_infer_response(body, headers, ENCODED, model_name="m-encode", url="http://x/v2")
    assert info.value.status == 200 and info.value.url == "http://x/v2"


def test_integer_data_outside_its_datatype_is_refused():
    out = {"name": "image", "datatype": "UINT8", "shape": [1, 2], "data": [0, 256]}
    body = json.dumps({"outputs": [out]}).encode()
    want = {"image": Expected(("UINT8",), (1, 2))}
    with pytest.raises(LatentServeError, match="values outside UINT8"):
        read_infer_response(body, {}, want)
    out["data"] = [0.5, 1]
    with pytest.raises(LatentServeError, match="flat list of UINT8"):
        read_infer_response(json.dumps({"outputs": [out]}).encode(), {}, want)


def _reply(outputs, parameters=None, items=2, name="m-sample"):
    body, headers = write_response(name, outputs, parameters)
    return Reply(body, headers, "http://x", name, items)


def test_images_must_be_in_range_and_carry_the_seed_sent():
    v2 = V2()
    good = np.full((2, 28, 28), 0.5, np.float32)
    assert np.array_equal(v2.read_images(_reply({"image": good}, {"seed": 4}), True, 4), good)
    bad = good.copy()
    bad[1, 3, 3] = 1.5
    with pytest.raises(LatentServeError, match=r"outside \[0, 1\]"):
        v2.read_images(_reply({"image": bad}), True)
    with pytest.raises(LatentServeError, match="seed 5, sent 4"):
        v2.read_images(_reply({"image": good}, {"seed": 5}), True, 4)
    with pytest.raises(LatentServeError, match="is FP32, expected UINT8"):
        v2.read_images(_reply({"image": good}), False)
    pngs = v2.read_images(_reply({"image": np.full((2, 28, 28), 7, np.uint8)}), False)
    assert [(im.mode, im.size, im.getpixel((0, 0))) for im in pngs] == [("L", (28, 28), 7)] * 2


def test_decode_sends_float32_in_range_and_the_callers_float64_otherwise():
    v2 = V2()
    z = np.array([[0.1, -1000.0], [3.0, 1000.0]])
    _, got = read_request(*v2.decode_request(z, False))
    assert got["z"].dtype == np.float32 and np.array_equal(got["z"], z.astype(np.float32))
    for bad in (1000.00001, np.nan, np.inf):
        z[1, 1] = bad
        _, got = read_request(*v2.decode_request(z, True))
        assert got["z"].dtype == np.float64 and np.array_equal(got["z"], z, equal_nan=True)
    doc, _ = read_request(*v2.decode_request(z, True))
    assert doc["parameters"] == {"image_datatype": "FP32", "binary_data_output": True}


def test_the_servers_own_codec_reads_the_clients_requests_and_writes_what_it_reads():
    """client/v2.py against handlers/wire/v2_read.py and v2_write.py, in-process: what the
    client sends is what the server reads, and the server's answers read back exactly."""
    from handlers.limits import LIMITS
    from handlers.wire.request import RawRequest
    from handlers.wire.v2_read import read_call
    from handlers.wire.v2_write import write_response as server_write

    image = RNG.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    for binary in (True, False):
        body, headers = write_infer_request(
            {"image": image}, {"sample": True, "seed": 7}, binary_inputs=binary
        )
        lower = {k.lower(): v for k, v in headers.items()}
        raw = RawRequest(body, headers["Content-Type"], "v2", {**lower, "explain": "False"})
        call = read_call(raw, LIMITS)
        assert call.parameters == {"sample": True, "seed": 7} and call.binary_output is True
        got = call.inputs["image"]
        assert got.datatype == "UINT8" and np.array_equal(got.array, image)

        z = RNG.standard_normal((4, 3)).astype(np.float32)
        named = {"z_mean": z, "z_log_var": z / 2, "z": z * 3}
        call = read_call(RawRequest(body, None, "v2", lower), LIMITS)
        if not binary:  # the same request asking for JSON data outputs
            call = type(call)(call.id, call.parameters, call.inputs, call.outputs, False)
        text, ctype, extra = server_write("m-encode", "1.0", call, named, {"seed": 7})
        out = text.encode() if isinstance(text, str) else text
        expected = {name: Expected(("FP32",), (4, "D")) for name in named}
        answer = read_infer_response(out, extra, expected, model_name="m-encode")
        assert answer.parameters == {"seed": 7}
        assert ctype == ("application/octet-stream" if binary else "application/json")
        for name, arr in named.items():
            np.testing.assert_array_equal(answer.outputs[name], arr)
