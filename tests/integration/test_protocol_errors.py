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
    message must mention every one of `names` (case-insensitive)."""
    return pytest.param(op, kind, build, names, id=name)


GOOD_HEADER = {"inputs": [binary_input("image", IMAGES)]}
GOOD_JSON = json.dumps(GOOD_HEADER).encode()

CASES = [
    # the binary extension's framing
    case(
        "header-length-past-body",
        "encode",
        lambda d: v2_body(GOOD_HEADER, IMAGES.tobytes(), header_length=10**6),
        HEADER_LENGTH,
    ),
    case(
        "header-length-negative",
        "encode",
        lambda d: v2_body(GOOD_HEADER, IMAGES.tobytes(), header_length=-4),
        HEADER_LENGTH,
    ),
    case(
        "header-length-not-a-number",
        "encode",
        lambda d: (GOOD_JSON + IMAGES.tobytes(), {HEADER_LENGTH: "twelve"}),
        HEADER_LENGTH,
    ),
    case(
        "header-not-json",
        "encode",
        lambda d: (b"\x00\xffnot json" + IMAGES.tobytes(), {HEADER_LENGTH: "10"}),
        "JSON",
    ),
    case(
        "header-length-cuts-the-json",
        "encode",
        lambda d: (GOOD_JSON + IMAGES.tobytes(), {HEADER_LENGTH: str(len(GOOD_JSON) - 5)}),
        "JSON",
    ),
    case(
        "short-binary-buffer",
        "encode",
        lambda d: v2_body(GOOD_HEADER, IMAGES.tobytes()[:-100]),
        "image",
    ),
    case(
        "trailing-bytes",
        "encode",
        lambda d: v2_body(GOOD_HEADER, IMAGES.tobytes() + b"\x00" * 7),
        "binary_data_size",
    ),
    case(
        "size-not-shape-times-itemsize",
        "encode",
        lambda d: v2_body(
            {"inputs": [binary_input("image", IMAGES, size=IMAGES.nbytes - 28)]},
            IMAGES.tobytes()[:-28],
        ),
        "image",
        "binary_data_size",
    ),
    case(
        "size-negative",
        "encode",
        lambda d: binary_body("image", IMAGES, parameters={"binary_data_size": -1568}),
        "binary_data_size",
    ),
    case(
        "size-huge",
        "encode",
        lambda d: binary_body("image", IMAGES, parameters={"binary_data_size": 2**62}),
        "image",
    ),
    case(
        "size-not-an-integer",
        "encode",
        lambda d: binary_body("image", IMAGES, parameters={"binary_data_size": "1568"}),
        "binary_data_size",
    ),
    case(
        "binary-size-without-binary-part",
        "encode",
        lambda d: v2_body(GOOD_HEADER),  # JSON body, no header length, nothing after it
        "image",
    ),
    case(
        "data-and-binary-both",
        "encode",
        lambda d: binary_body("image", IMAGES, data=IMAGES.ravel().tolist()),
        "image",
    ),
    # shapes and datatypes
    case(
        "shape-negative",
        "encode",
        lambda d: binary_body("image", IMAGES, shape=[-2, 28, 28]),
        "image",
    ),
    case(
        "shape-huge",
        "encode",
        lambda d: binary_body("image", IMAGES, shape=[2**40, 28, 28]),
        "image",
    ),
    case(
        "datatype-int8",
        "encode",
        lambda d: binary_body("image", IMAGES.view(np.int8), datatype="INT8"),
        "image",
        "INT8",
    ),
    case(
        "datatype-bytes",
        "encode",
        lambda d: json_body({"name": "image", "shape": [1], "datatype": "BYTES", "data": ["x"]}),
        "image",
        "BYTES",
    ),
    case(
        "datatype-unknown",
        "encode",
        lambda d: binary_body("image", IMAGES, datatype="FP8"),
        "image",
    ),
    case("shape-27x28", "encode", lambda d: binary_body("image", IMAGES[:, :27]), "image"),
    case("rank-2-encode", "encode", lambda d: binary_body("image", IMAGES[0]), "image"),
    case(
        "two-channels",
        "encode",
        lambda d: binary_body("image", np.stack([IMAGES, IMAGES], axis=1)),
        "image",
    ),
    case(
        "data-count-not-shape",
        "encode",
        lambda d: json_body(json_input("image", IMAGES) | {"data": IMAGES[0].ravel().tolist()}),
        "image",
    ),
    case(
        "decode-wrong-latent-dim",
        "decode",
        lambda d: binary_body("z", latents(d + 1)),
        "z",
        "{dim}",
    ),
    case("decode-uint8-z", "decode", lambda d: binary_body("z", np.zeros((2, d), np.uint8)), "z"),
    # names
    case("unknown-input", "encode", lambda d: binary_body("pixels", IMAGES), "pixels"),
    case("no-inputs-for-encode", "encode", lambda d: json_body(), "image"),
    case(
        "input-given-to-sample",
        "sample",
        lambda d: binary_body("z", latents(d)),
        "z",
    ),
    case(
        "unknown-output",
        "encode",
        lambda d: v2_body(GOOD_HEADER | {"outputs": [{"name": "z_foo"}]}, IMAGES.tobytes()),
        "z_foo",
    ),
    case(
        "ae-has-no-z-log-var",
        "encode",
        lambda d: v2_body(GOOD_HEADER | {"outputs": [{"name": "z_log_var"}]}, IMAGES.tobytes()),
        "z_log_var",
        kind="ae",
    ),
    # values and limits
    case(
        "too-many-items",
        "encode",
        lambda d: binary_body("image", np.zeros((LIMITS.max_items + 1, 28, 28), np.uint8)),
        "image",
        str(LIMITS.max_items),
    ),
    case(
        "uint8-300-in-json",
        "encode",
        lambda d: json_body(
            json_input("image", IMAGES) | {"data": [300] + IMAGES.ravel().tolist()[1:]}
        ),
        "image",
    ),
    case("fp32-pixel-1.5", "encode", lambda d: binary_body("image", PIXELS * 1.5), "image"),
    case(
        "fp32-nan-binary-image", "encode", lambda d: binary_body("image", with_nan(PIXELS)), "image"
    ),
    case("fp32-nan-binary-z", "decode", lambda d: binary_body("z", with_nan(latents(d))), "z"),
    case(
        "fp32-nan-json-z",
        "decode",
        lambda d: json_body(json_input("z", with_nan(latents(d)))),
        "z",
    ),
    case(
        "fp32-infinite-binary-z",
        "decode",
        lambda d: binary_body("z", latents(d, value=np.inf)),
        "z",
    ),
    case(
        "z-over-1000",
        "decode",
        lambda d: binary_body("z", latents(d, value=2 * LIMITS.max_abs_latent, dtype=np.float64)),
        "z",
    ),
    case(
        "body-over-the-limit",
        "encode",
        lambda d: binary_body(
            "image", np.zeros((LIMITS.max_body_bytes // 784 + 1, 28, 28), np.uint8)
        ),
        "body",
    ),
    # request parameters
    case("sample-n-0", "sample", lambda d: json_body(parameters={"n": 0}), "n"),
    case("sample-n-over", "sample", lambda d: json_body(parameters={"n": LIMITS.max_n + 1}), "n"),
    case("sample-n-float", "sample", lambda d: json_body(parameters={"n": 2.5}), "n"),
    case("sample-seed-negative", "sample", lambda d: json_body(parameters={"seed": -1}), "seed"),
    case("sample-seed-2**64", "sample", lambda d: json_body(parameters={"seed": 2**64}), "seed"),
    case(
        "sample-temperature-over",
        "sample",
        lambda d: json_body(parameters={"temperature": LIMITS.max_temperature + 1}),
        "temperature",
    ),
    case(
        "sample-image-datatype-int8",
        "sample",
        lambda d: json_body(parameters={"image_datatype": "INT8"}),
        "image_datatype",
    ),
    case(
        "encode-sample-on-an-ae",
        "encode",
        lambda d: v2_body(GOOD_HEADER | {"parameters": {"sample": True}}, IMAGES.tobytes()),
        "sample",
        kind="ae",
    ),
    case(
        "encode-seed-a-string",
        "encode",
        lambda d: v2_body(
            GOOD_HEADER | {"parameters": {"sample": True, "seed": "7"}}, IMAGES.tobytes()
        ),
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
    body, headers = v2_body(GOOD_HEADER, IMAGES.tobytes())
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
