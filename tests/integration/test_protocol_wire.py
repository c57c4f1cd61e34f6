"""The Open Inference Protocol on the wire, where tritonclient does not go.

Raw HTTP requests (tests/support/v2.py) to a real TorchServe check what a
standard client hides or never sends: the response's content type, header
length and model_version; nested `data`; the header named in another case
(curl users type it so); the request parameter `binary_data_output`; the JSON
API's answer to the same images as the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from loadtests import payloads
from tests.support.v2 import (
    HEADER_LENGTH,
    binary_body,
    binary_input,
    json_body,
    json_input,
    post_v2,
    read_v2,
    v2_body,
)

N = 3


def images() -> np.ndarray:
    return payloads.test_images()[500 : 500 + N]


def reference(torchserve, model: str) -> np.ndarray:
    """The JSON API's z_mean of `images()` (same batch size: bit-identical floats)."""
    resp = torchserve.post(f"{model}-encode", data=payloads.encode_body(images()))
    assert resp.status_code == 200, resp.text[:300]
    return np.array([p["z_mean"] for p in resp.json()["predictions"]], dtype=np.float32)


def test_binary_answer_has_its_header_length_and_octet_stream(torchserve, vae):
    binary = {"binary_data": True}
    header = {
        "inputs": [binary_input("image", images())],
        "outputs": [{"name": n, "parameters": binary} for n in ("z_mean", "z_log_var")],
    }
    resp = post_v2(torchserve, f"{vae.name}-encode", *v2_body(header, images().tobytes()))
    assert resp.headers["content-type"].startswith("application/octet-stream")
    meta, out = read_v2(resp)  # checks the header length and that no byte is left over
    assert int(resp.headers[HEADER_LENGTH]) < len(resp.content)
    assert (meta["model_name"], meta["model_version"]) == (f"{vae.name}-encode", "1.0")
    assert [o["name"] for o in meta["outputs"]] == ["z_mean", "z_log_var"]
    size = N * vae.latent_dim * 4
    assert all(o["parameters"]["binary_data_size"] == size for o in meta["outputs"])
    np.testing.assert_allclose(out["z_mean"], reference(torchserve, vae.name), atol=1e-5)


def test_json_answer_is_application_json_without_header_length(torchserve, vae):
    header = {"inputs": [json_input("image", images())], "outputs": [{"name": "z_mean"}]}
    resp = post_v2(torchserve, f"{vae.name}-encode", *v2_body(header))
    assert resp.headers["content-type"].startswith("application/json")
    assert HEADER_LENGTH not in resp.headers
    meta, out = read_v2(resp)
    assert [o["name"] for o in meta["outputs"]] == ["z_mean"]
    assert isinstance(meta["outputs"][0]["data"][0], float)  # flat, as tritonclient reads it
    np.testing.assert_allclose(out["z_mean"], reference(torchserve, vae.name), atol=1e-5)


def test_binary_inputs_alone_do_not_make_the_outputs_binary(torchserve, ae):
    """Outputs are binary only when asked (per output or binary_data_output)."""
    resp = post_v2(torchserve, f"{ae.name}-encode", *binary_body("image", images()))
    assert resp.headers["content-type"].startswith("application/json")
    meta, out = read_v2(resp)
    assert [o["name"] for o in meta["outputs"]] == ["z_mean"] and "data" in meta["outputs"][0]
    np.testing.assert_allclose(out["z_mean"], reference(torchserve, ae.name), atol=1e-5)


def test_nested_data_equals_flat_data(torchserve, vae):
    flat = json_input("image", images())
    nested = flat | {"data": images().tolist()}
    answers = [
        read_v2(post_v2(torchserve, f"{vae.name}-encode", *json_body(inp)))[1]["z_mean"]
        for inp in (flat, nested)
    ]
    np.testing.assert_array_equal(*answers)


@pytest.mark.parametrize("name", [HEADER_LENGTH.lower(), HEADER_LENGTH.upper()])
def test_the_header_length_in_any_case(torchserve, vae, name):
    body, headers = binary_body("image", images())
    headers = {name: headers.pop(HEADER_LENGTH), **headers}
    _, out = read_v2(post_v2(torchserve, f"{vae.name}-encode", body, headers))
    np.testing.assert_allclose(out["z_mean"], reference(torchserve, vae.name), atol=1e-5)


def test_binary_data_output_parameter_makes_every_output_binary(torchserve, ae):
    header = {
        "inputs": [binary_input("image", images())],
        "parameters": {"binary_data_output": True},
    }
    resp = post_v2(torchserve, f"{ae.name}-encode", *v2_body(header, images().tobytes()))
    meta, out = read_v2(resp)
    assert [o["name"] for o in meta["outputs"]] == ["z_mean"]  # an AE: no z_log_var
    assert "data" not in meta["outputs"][0]
    np.testing.assert_allclose(out["z_mean"], reference(torchserve, ae.name), atol=1e-5)


def test_decode_binary_fp64_with_a_json_fp32_image(torchserve, vae):
    z = reference(torchserve, vae.name).astype(np.float64)
    header = {
        "inputs": [binary_input("z", z)],
        "outputs": [{"name": "image", "parameters": {"binary_data": False}}],
        "parameters": {"image_datatype": "FP32"},
    }
    meta, out = read_v2(post_v2(torchserve, f"{vae.name}-decode", *v2_body(header, z.tobytes())))
    assert meta["outputs"][0]["datatype"] == "FP32" and "data" in meta["outputs"][0]
    got = out["image"]
    assert got.shape == (N, 28, 28) and got.min() >= 0.0 and got.max() <= 1.0
    binary = read_v2(post_v2(torchserve, f"{vae.name}-decode", *binary_body("z", z)))[1]
    expected = np.rint(np.clip(got.astype(np.float64), 0, 1) * 255)  # round(clip(x,0,1)*255)
    assert np.abs(binary["image"].astype(np.int16) - expected).max() == 0
