"""Malformed Open Inference Protocol (v2) requests against a real TorchServe.

Each body is built by hand (tests/support/v2.py), wrong in one way, and sent
to /v2/models/<model>-<op>/infer. Every one must get a 400 with the protocol's
error body, {"error": "<message>"}, whose message names the tensor, parameter
or header at fault; never a 5xx, and no worker may die or restart (the worker
pids are the same after all of them), and a good request still works.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from handlers.limits import LIMITS
from tests.support.v2 import (
    HEADER_LENGTH,
    binary_body,
    binary_input,
    infer_url,
    json_body,
    json_input,
    post_v2,
    read_v2,
    v2_body,
)

IMAGES = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)  # two valid images
PIXELS = (IMAGES / np.float32(255)).astype(np.float32)


def with_nan(array: np.ndarray) -> np.ndarray:
    out = array.copy()
    out.flat[3] = np.nan
    return out


def latents(dim: int, n: int = 2, value: float = 0.25, dtype=np.float32) -> np.ndarray:
    return np.full((n, dim), value, dtype=dtype)


def case(name: str, op: str, build, *names: str, kind: str = "vae"):
    """`build(latent_dim) -> (body, headers)` sent to <model of kind>-<op>; the error
    message must name every one of `names` (a whole word, any case)."""
    return pytest.param(op, kind, build, names, id=name)


def image_case(case_id: str, array: np.ndarray, *names: str, kind: str = "vae", **desc):
    """encode with one binary input "image": `array`'s bytes, its description changed by desc."""
    return case(case_id, "encode", lambda d: binary_body("image", array, **desc), *names, kind=kind)


def z_case(name: str, z, *names: str):
    """decode with one binary input "z": `z(latent_dim)`."""
    return case(name, "decode", lambda d: binary_body("z", z(d)), *names)


def framed(*, length=None, tail: bytes = b"", header: dict | None = None):
    """The good encode request with its header length, binary part or JSON changed."""
    return lambda d: v2_body(header or GOOD, IMAGES.tobytes() + tail, header_length=length)


GOOD = {"inputs": [binary_input("image", IMAGES)]}
GOOD_JSON = json.dumps(GOOD).encode()
L = HEADER_LENGTH
SIZE = "binary_data_size"
DATA = {"data": IMAGES.ravel().tolist()}
SAMPLE_PARAMETERS = [
    ("n", 0),
    ("n", LIMITS.max_n + 1),
    ("n", 2.5),
    ("seed", -1),
    ("seed", 2**64),
    ("temperature", LIMITS.max_temperature + 1),
    ("image_datatype", "INT8"),
]

CASES = [
    # the binary extension's framing
    case("header-length-past-body", "encode", framed(length=10**6), L),
    case("header-length-negative", "encode", framed(length=-4), L),
    case("header-length-not-a-number", "encode", lambda d: (GOOD_JSON, {L: "twelve"}), L),
    case(
        "header-not-json",
        "encode",
        lambda d: (b"\x00\xffnot json" + b"\x00" * 8, {L: "10"}),
        "JSON",
    ),
    case("header-cuts-the-json", "encode", framed(length=len(GOOD_JSON) - 5), "JSON"),
    case(
        "short-binary-buffer", "encode", lambda d: v2_body(GOOD, IMAGES.tobytes()[:-100]), "image"
    ),
    case("trailing-bytes", "encode", framed(tail=b"\x00" * 7), SIZE),
    case(
        "size-not-shape-times-itemsize",
        "encode",
        lambda d: v2_body(
            {"inputs": [binary_input("image", IMAGES, size=IMAGES.nbytes - 28)]},
            IMAGES.tobytes()[:-28],
        ),
        "image",
        SIZE,
    ),
    image_case("size-negative", IMAGES, SIZE, parameters={SIZE: -1568}),
    image_case("size-huge", IMAGES, "image", parameters={SIZE: 2**62}),
    image_case("size-not-an-integer", IMAGES, SIZE, parameters={SIZE: "1568"}),
    case("binary-size-without-binary-part", "encode", lambda d: v2_body(GOOD), "image"),
    image_case("data-and-binary-both", IMAGES, "image", **DATA),
    # shapes and datatypes
    image_case("shape-negative", IMAGES, "image", shape=[-2, 28, 28]),
    image_case("shape-huge", IMAGES, "image", shape=[2**40, 28, 28]),
    image_case("datatype-int8", IMAGES.view(np.int8), "image", "INT8", datatype="INT8"),
    case(
        "datatype-bytes",
        "encode",
        lambda d: json_body({"name": "image", "shape": [1], "datatype": "BYTES", "data": ["x"]}),
        "image",
        "BYTES",
    ),
    image_case("datatype-unknown", IMAGES, "image", datatype="FP8"),
    image_case("shape-27x28", IMAGES[:, :27], "image"),
    image_case("rank-2-encode", IMAGES[0], "image"),
    image_case("two-channels", np.stack([IMAGES, IMAGES], axis=1), "image"),
    case(
        "data-count-not-shape",
        "encode",
        lambda d: json_body(json_input("image", IMAGES) | {"data": DATA["data"][:784]}),
        "image",
    ),
    z_case("decode-wrong-latent-dim", lambda d: latents(d + 1), "z", "{dim}"),
    z_case("decode-uint8-z", lambda d: np.zeros((2, d), np.uint8), "z"),
    # names
    image_case("unknown-input", IMAGES, "pixels", name="pixels"),
    case("no-inputs-for-encode", "encode", lambda d: json_body(), "image"),
    case("input-given-to-sample", "sample", lambda d: binary_body("z", latents(d)), "z"),
    case(
        "unknown-output", "encode", framed(header=GOOD | {"outputs": [{"name": "z_foo"}]}), "z_foo"
    ),
    case(
        "ae-has-no-z-log-var",
        "encode",
        framed(header=GOOD | {"outputs": [{"name": "z_log_var"}]}),
        "z_log_var",
        kind="ae",
    ),
    # values and limits
    image_case(
        "too-many-items",
        np.zeros((LIMITS.max_items + 1, 28, 28), np.uint8),
        "image",
        str(LIMITS.max_items),
    ),
    case(
        "uint8-300-in-json",
        "encode",
        lambda d: json_body(json_input("image", IMAGES) | {"data": [300] + DATA["data"][1:]}),
        "image",
    ),
    case(
        "uint8-3.5-in-json",
        "encode",
        lambda d: json_body(json_input("image", IMAGES) | {"data": [3.5] + DATA["data"][1:]}),
        "image",
    ),
    image_case("zero-items", np.zeros((0, 28, 28), np.uint8), "image"),
    image_case("fp32-pixel-1.5", PIXELS * 1.5, "image"),
    image_case("fp32-nan-image", with_nan(PIXELS), "image"),
    z_case("fp32-nan-binary-z", lambda d: with_nan(latents(d)), "z"),
    case(
        "fp32-nan-json-z", "decode", lambda d: json_body(json_input("z", with_nan(latents(d)))), "z"
    ),
    z_case("fp32-infinite-binary-z", lambda d: latents(d, value=np.inf), "z"),
    z_case(
        "z-over-1000", lambda d: latents(d, value=2 * LIMITS.max_abs_latent, dtype=np.float64), "z"
    ),
    image_case(
        "body-over-the-limit",
        np.zeros((LIMITS.max_body_bytes // 784 + 1, 28, 28), np.uint8),
        "body",
    ),
    # request parameters
    *[
        case(f"sample-{k}-{v}", "sample", lambda d, k=k, v=v: json_body(parameters={k: v}), k)
        for k, v in SAMPLE_PARAMETERS
    ],
    case(
        "encode-sample-on-an-ae",
        "encode",
        framed(header=GOOD | {"parameters": {"sample": True}}),
        "sample",
        kind="ae",
    ),
    case(
        "encode-seed-a-string",
        "encode",
        framed(header=GOOD | {"parameters": {"sample": True, "seed": "7"}}),
        "seed",
    ),
]


@pytest.fixture(scope="module")
def pids_before(torchserve):
    return torchserve.worker_pids()


def error_of(resp) -> str:
    assert resp.status_code == 400, (resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert body["error"], body
    return body["error"]


@pytest.mark.parametrize(("op", "kind", "build", "names"), CASES)
def test_malformed_request_gets_a_400_naming_it(torchserve, pids_before, op, kind, build, names):
    m = torchserve.model(kind)
    body, headers = build(m.latent_dim)
    message = error_of(post_v2(torchserve, f"{m.name}-{op}", body, headers))
    for name in names:
        name = name.format(dim=m.latent_dim)
        word = rf"(?<![\w-]){re.escape(name)}(?![\w-])"  # "n" must not match "not"
        assert re.search(word, message, re.IGNORECASE), f"{name!r} not in {message!r}"
    assert torchserve.worker_pids()[f"{m.name}-{op}"] == pids_before[f"{m.name}-{op}"]


def test_explain_is_not_supported(torchserve, vae):
    url = infer_url(torchserve, f"{vae.name}-encode").removesuffix("/infer") + "/explain"
    body, headers = v2_body(GOOD, IMAGES.tobytes())
    resp = torchserve.http.post(url, data=body, headers=headers, timeout=60)
    assert error_of(resp) == "explain is not supported"


def test_a_rejected_request_is_counted(torchserve, vae):
    endpoint = f"{vae.name}-encode"
    before = torchserve.metric("latentserve_rejected_total", ModelName=endpoint)
    error_of(post_v2(torchserve, endpoint, *binary_body("image", IMAGES[:, :27])))
    after = torchserve.wait_metric("latentserve_rejected_total", before + 1, ModelName=endpoint)
    assert after == before + 1


def test_workers_unchanged_and_serving_after_all_bad_requests(torchserve, pids_before, vae):
    assert torchserve.worker_pids() == pids_before
    for name, workers in torchserve.process.model_status().items():
        assert workers and set(workers) == {"READY"}, (name, workers)
    meta, out = read_v2(post_v2(torchserve, f"{vae.name}-encode", *binary_body("image", IMAGES)))
    assert meta["model_name"] == f"{vae.name}-encode"
    assert out["z_mean"].shape == (2, vae.latent_dim)
