"""The bench's v2 bodies and answer checks, without a server.

`make bench` counts every answer `check_v2` rejects as an error, so a check
that let a short or mislabelled binary answer through would hide a broken
server; and the bodies must be laid out exactly as tritonclient lays them out.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from client.v2 import write_infer_request
from loadtests.bench import compute
from loadtests.bench.httpgen import _request
from loadtests.payloads import (
    V2_HEADER,
    check_v2,
    v2_decode_pool,
    v2_encode_pool,
    v2_sample_pool,
)


def split(body: bytes, headers: dict) -> tuple[dict, bytes]:
    n = int(headers[V2_HEADER]) if V2_HEADER in headers else len(body)
    return json.loads(body[:n]), body[n:]


def test_binary_body_is_header_then_little_endian_tensors():
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    body, headers = write_infer_request({"image": images})
    assert headers["Content-Type"] == "application/octet-stream"
    head, raw = split(body, headers)
    (tensor,) = head["inputs"]
    assert tensor == {
        "name": "image",
        "shape": [2, 28, 28],
        "datatype": "UINT8",
        "parameters": {"binary_data_size": 2 * 784},
    }
    assert head["parameters"] == {"binary_data_output": True}  # all outputs binary
    assert raw == images.tobytes()


def test_decode_pool_sends_fp32_codes_little_endian():
    latents = np.random.default_rng(0).normal(size=(10, 32))  # float64 in, FP32 on the wire
    pool = v2_decode_pool(latents, 3, count=2)
    body, headers = pool.next_request()
    head, raw = split(body, headers)
    assert head["inputs"][0]["datatype"] == "FP32" and head["inputs"][0]["shape"] == [3, 32]
    z = np.frombuffer(raw, dtype="<f4").reshape(3, 32)
    assert np.isin(z, latents.astype(np.float32)).all()
    assert pool.next_request()[0] != body  # the pool cycles through distinct bodies


def test_json_tensors_and_sample_without_inputs_carry_no_binary_part():
    z = np.array([[0.5, -1.25]], dtype=np.float32)
    body, headers = write_infer_request({"z": z}, binary_inputs=False, binary_outputs=False)
    assert headers == {"Content-Type": "application/json"}
    head = json.loads(body)
    assert head["inputs"][0]["data"] == [0.5, -1.25] and "parameters" not in head
    body, headers = v2_sample_pool(4, count=3, seed=10).next_request()
    assert V2_HEADER not in headers
    # "inputs": [] is what tritonclient sends, and what routes the body to the protocol
    assert json.loads(body) == {
        "inputs": [],
        "parameters": {"n": 4, "seed": 10, "binary_data_output": True},
    }


def answer(outputs: list[dict], binary: bytes = b"") -> tuple[bytes, dict]:
    head = json.dumps({"model_name": "m-encode", "outputs": outputs}).encode()
    headers = {V2_HEADER.lower(): str(len(head))} if binary else {}
    return head + binary, headers


ZM = {"name": "z_mean", "datatype": "FP32", "shape": [2, 4], "parameters": {"binary_data_size": 32}}
ZLV = dict(ZM, name="z_log_var")
EXPECTED = {"z_mean": "FP32", "z_log_var": "FP32"}


def test_check_v2_accepts_a_right_binary_and_a_right_json_answer():
    body, headers = answer([ZM, ZLV], bytes(64))
    assert check_v2(200, body, headers, 2, EXPECTED) is None
    data = {"name": "image", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 784}
    body, headers = answer([data])
    assert check_v2(200, body, headers, 1, {"image": "UINT8"}) is None


def test_check_v2_rejects_wrong_answers():
    body, headers = answer([ZM, ZLV], bytes(64))
    assert check_v2(400, b'{"error": "x"}', {}, 2, EXPECTED).startswith("HTTP 400")
    assert "bytes, expected" in check_v2(200, body[:-1], headers, 2, EXPECTED)  # short
    assert "bytes, expected" in check_v2(200, body + b"\0", headers, 2, EXPECTED)  # trailing
    assert "header" in check_v2(200, body, {}, 2, EXPECTED)  # binary without the header
    assert "outputs" in check_v2(200, *answer([ZM], bytes(32)), 2, EXPECTED)  # one missing
    assert "[3, ...]" in check_v2(200, body, headers, 3, EXPECTED)  # another item count
    wrong_size = dict(ZLV, parameters={"binary_data_size": 31})
    assert "binary_data_size 31" in check_v2(200, *answer([ZM, wrong_size], bytes(63)), 2, EXPECTED)
    as_fp64 = dict(ZLV, datatype="FP64")
    assert "FP64" in check_v2(200, *answer([ZM, as_fp64], bytes(64)), 2, EXPECTED)
    short_data = {"name": "image", "datatype": "UINT8", "shape": [1, 28, 28], "data": [0] * 783}
    assert "784 values" in check_v2(200, *answer([short_data]), 1, {"image": "UINT8"})
    assert "not a v2 answer" in check_v2(200, b"<html>", {}, 1, {"image": "UINT8"})


def test_request_carries_the_bodys_own_headers():
    raw = _request("h", 1, "/v2/models/m/infer", b"xyz", {V2_HEADER: "2"}, "application/json")
    head = raw.decode("latin-1")
    assert f"{V2_HEADER}: 2\r\n" in head and "Content-Type: application/json\r\n" in head
    assert head.endswith("Content-Length: 3\r\nConnection: keep-alive\r\n\r\nxyz")
    raw = _request("h", 1, "/p", b"", {"Content-Type": "application/octet-stream"}, "x/y")
    assert raw.decode("latin-1").count("Content-Type") == 1


def test_compute_measure_gives_items_per_second_and_the_median_call():
    module = torch.nn.Linear(8, 8)
    rate, p50_ms = compute.measure(module, torch.zeros(4, 8), seconds=0.05)
    assert rate > 0 and 0 < p50_ms < 50
    assert rate * p50_ms / 1000 < 4 * 2  # items/s and the call time describe the same calls


def test_the_real_engine_answers_the_bench_bodies_as_the_checks_expect():
    """The bench's v2 bodies, through the shipped model's engine (no server): every answer
    passes `check_v2`, so a bench error means the server, not the harness."""
    from handlers.engine import Engine
    from handlers.wire.protocol import wire_protocol
    from handlers.wire.request import RawRequest, media_type
    from loadtests.bench.checks import v2_outputs
    from paths import STORE

    latents = np.random.default_rng(1).normal(size=(64, 32)).astype(np.float32)
    pools = {
        "encode": v2_encode_pool(3, count=1),
        "decode": v2_decode_pool(latents, 3, count=1),
        "sample": v2_sample_pool(3, count=1),
    }
    outputs = v2_outputs("fashion-vae")
    for op, pool in pools.items():
        body, headers = pool.next_request()
        # what TorchServe hands the handler on /v2/models/<archive>/infer
        http = {k.lower(): v for k, v in headers.items()} | {"explain": "False"}
        raw = RawRequest(body, media_type(http["content-type"]), wire_protocol(http, body), http)
        assert raw.protocol == "v2", op
        (reply,), _ = Engine.from_dir(STORE / "fashion-vae", op).handle([raw])
        got = {k.lower(): v for k, v in reply.headers.items()}
        got["content-type"] = reply.content_type
        assert V2_HEADER.lower() in got, op  # every output binary, as the bench asks
        assert check_v2(reply.status, reply.body, got, 3, outputs[op]) is None, (
            op,
            reply.body[:200],
        )
