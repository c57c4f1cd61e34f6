"""The Open Inference Protocol (KServe v2) with a real standard client: tritonclient.

tritonclient.http talks to the session TorchServe at /v2/models/<model>-<op>/infer
with binary tensors (the `Inference-Header-Content-Length` extension) and with
JSON tensors, and every answer is compared with the project's JSON API
(/predictions/<model>-<op>) on the same Fashion-MNIST test images, latents and seeds.

Tolerances: both paths run the same TorchScript on the same float32 inputs, and
the tests send one request at a time, so each runs alone in its batch of the
same size and the floats are normally bit-identical. The CPU kernels of the
conv models pick other code paths for other batch sizes (last-bit differences
up to ~2e-6, see tests/reliability/test_isolation.py), so a batch shaped
differently by the frontend must not fail the test: latents compare within
1e-5. Decoded pixels: UINT8 exactly (the same rounding as the JSON API's PNG);
FP32 within 1e-6 of the JSON API's `array` format, which rounds to 6 decimals.
"""

from __future__ import annotations

import base64
import functools
import io

import numpy as np
import pytest
import tritonclient.http as httpclient
from PIL import Image

from client.inputs import read_idx
from handlers.limits import LIMITS
from loadtests.payloads import png_b64
from paths import FASHION_TEST_IMAGES

N = 5  # images per request (odd, small)
LATENT_ATOL = 1e-5  # see the module docstring
PIXEL_ATOL = 1e-6


@functools.cache
def fashion_images() -> np.ndarray:
    """Fashion-MNIST test images, uint8 (10000, 28, 28)."""
    return read_idx(FASHION_TEST_IMAGES)


def outputs_of(kind: str) -> list[str]:
    return ["z_mean", "z_log_var"] if kind == "vae" else ["z_mean"]


def requested(names: list[str], binary: bool) -> list:
    return [httpclient.InferRequestedOutput(n, binary_data=binary) for n in names]


def tensor(name: str, array: np.ndarray, datatype: str, binary: bool):
    inp = httpclient.InferInput(name, list(array.shape), datatype)
    return inp.set_data_from_numpy(array, binary_data=binary)


def check_outputs(result, names: list[str], shape: list[int], datatype: str, binary: bool):
    """The answer's outputs: exactly `names`, in order, binary or JSON as asked."""
    outs = result.get_response()["outputs"]
    assert [o["name"] for o in outs] == names, outs
    for o in outs:
        assert (o["datatype"], o["shape"]) == (datatype, shape), o
        if binary:
            assert "data" not in o and o["parameters"]["binary_data_size"] > 0, o
        else:
            assert len(o["data"]) == int(np.prod(shape)), o["name"]
            assert "binary_data_size" not in (o.get("parameters") or {}), o


# ---- the JSON API's answers, the reference ------------------------------------------
def json_api(torchserve, endpoint: str, body: dict) -> dict:
    resp = torchserve.post(endpoint, json=body)
    assert resp.status_code == 200, resp.text[:500]
    return resp.json()


def json_encode(torchserve, model: str, images: np.ndarray, **extra) -> dict:
    """{"z_mean": (N, D), ...} from the JSON API, the images sent as base64 PNGs."""
    body = {"instances": [{"image_b64": png_b64(im)} for im in images], **extra}
    answer = json_api(torchserve, f"{model}-encode", body)
    preds = answer["predictions"]
    out = {
        k: np.array([p[k] for p in preds], dtype=np.float32)
        for k in ("z_mean", "z_log_var", "z")
        if preds[0].get(k) is not None
    }
    return out | {"seed": answer.get("seed")}


def png_pixels(predictions: list[dict]) -> np.ndarray:
    return np.stack(
        [np.asarray(Image.open(io.BytesIO(base64.b64decode(p["image_b64"])))) for p in predictions]
    )


def json_images(torchserve, endpoint: str, body: dict, datatype: str) -> np.ndarray:
    """The JSON API's images: PNG pixels (uint8) or its `array` format (float32)."""
    if datatype == "UINT8":
        return png_pixels(json_api(torchserve, endpoint, body)["predictions"])
    preds = json_api(torchserve, endpoint, {**body, "format": "array"})["predictions"]
    return np.array([p["pixels"] for p in preds], dtype=np.float32)


_latents: dict[str, np.ndarray] = {}


def latents(torchserve, model: str) -> np.ndarray:
    """Real latents: the JSON API's z_mean of N test images (float32, exact)."""
    if model not in _latents:
        _latents[model] = json_encode(torchserve, model, fashion_images()[100 : 100 + N])["z_mean"]
    return _latents[model]


# ---- encode ------------------------------------------------------------------------------
LAYOUTS = [("UINT8", 3), ("UINT8", 4), ("FP32", 3), ("FP32", 4), ("FP64", 3)]


@pytest.mark.parametrize("kind", ["vae", "ae"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize(("datatype", "rank"), LAYOUTS, ids=[f"{d}-rank{r}" for d, r in LAYOUTS])
def test_encode_equals_the_json_api(torchserve, client, kind, binary, datatype, rank):
    m = torchserve.model(kind)
    images = fashion_images()[:N]
    x = images if datatype == "UINT8" else images / np.float64(255.0)
    x = x.astype({"UINT8": np.uint8, "FP32": np.float32, "FP64": np.float64}[datatype])
    if rank == 4:
        x = x[:, None]
    names = outputs_of(kind)
    result = client.infer(
        f"{m.name}-encode", [tensor("image", x, datatype, binary)], outputs=requested(names, binary)
    )
    assert result.get_response()["model_name"] == f"{m.name}-encode"
    check_outputs(result, names, [N, m.latent_dim], "FP32", binary)
    want = json_encode(torchserve, m.name, images)
    for name in names:
        got = result.as_numpy(name)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want[name], rtol=0, atol=LATENT_ATOL, err_msg=name)


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_no_outputs_named_gives_all_of_them_binary(torchserve, client, kind):
    """tritonclient without `outputs` sends parameters.binary_data_output = true."""
    m = torchserve.model(kind)
    images = fashion_images()[:N]
    result = client.infer(f"{m.name}-encode", [tensor("image", images, "UINT8", True)])
    check_outputs(result, outputs_of(kind), [N, m.latent_dim], "FP32", binary=True)
    want = json_encode(torchserve, m.name, images)
    np.testing.assert_allclose(result.as_numpy("z_mean"), want["z_mean"], atol=LATENT_ATOL)


def test_only_the_named_outputs_each_binary_or_not(torchserve, client, vae):
    images = fashion_images()[:N]
    x = tensor("image", images, "UINT8", True)
    only = client.infer(f"{vae.name}-encode", [x], outputs=requested(["z_log_var"], True))
    check_outputs(only, ["z_log_var"], [N, vae.latent_dim], "FP32", binary=True)
    mixed = [
        httpclient.InferRequestedOutput("z_log_var", binary_data=False),
        httpclient.InferRequestedOutput("z_mean", binary_data=True),
    ]
    result = client.infer(f"{vae.name}-encode", [x], outputs=mixed, request_id="req-7")
    response = result.get_response()
    assert response["id"] == "req-7"
    assert [o["name"] for o in response["outputs"]] == ["z_log_var", "z_mean"]
    assert "data" in response["outputs"][0] and "data" not in response["outputs"][1]
    want = json_encode(torchserve, vae.name, images)
    for name in ("z_mean", "z_log_var"):
        np.testing.assert_allclose(result.as_numpy(name), want[name], atol=LATENT_ATOL)
    np.testing.assert_array_equal(only.as_numpy("z_log_var"), result.as_numpy("z_log_var"))


def test_encode_max_items_binary(torchserve, client, vae):
    images = fashion_images()[1000 : 1000 + LIMITS.max_items]
    result = client.infer(
        f"{vae.name}-encode",
        [tensor("image", images[:, None], "UINT8", True)],
        outputs=requested(["z_mean"], True),
    )
    want = json_encode(torchserve, vae.name, images)["z_mean"]
    np.testing.assert_allclose(result.as_numpy("z_mean"), want, rtol=0, atol=LATENT_ATOL)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_encode_sample_with_a_seed_equals_the_json_api(torchserve, client, vae, binary):
    images = fashion_images()[:N]
    result = client.infer(
        f"{vae.name}-encode",
        [tensor("image", images, "UINT8", binary)],
        outputs=requested(["z_mean", "z_log_var", "z"], binary),
        parameters={"sample": True, "seed": 2024},
    )
    assert result.get_response()["parameters"]["seed"] == 2024
    check_outputs(result, ["z_mean", "z_log_var", "z"], [N, vae.latent_dim], "FP32", binary)
    want = json_encode(torchserve, vae.name, images, sample=True, seed=2024)
    assert want["seed"] == 2024
    for name in ("z_mean", "z"):
        np.testing.assert_allclose(result.as_numpy(name), want[name], atol=LATENT_ATOL)
    # no seed: one is drawn, returned, and replays the same z
    drawn = client.infer(
        f"{vae.name}-encode", [tensor("image", images, "UINT8", True)], parameters={"sample": True}
    )
    seed = drawn.get_response()["parameters"]["seed"]
    assert isinstance(seed, int) and 0 <= seed <= LIMITS.max_seed
    replay = json_encode(torchserve, vae.name, images, sample=True, seed=seed)
    np.testing.assert_allclose(drawn.as_numpy("z"), replay["z"], atol=LATENT_ATOL)


# ---- decode ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["vae", "ae"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("z_datatype", ["FP32", "FP64"])
@pytest.mark.parametrize("image_datatype", ["UINT8", "FP32"])
def test_decode_equals_the_json_api(torchserve, client, kind, binary, z_datatype, image_datatype):
    m = torchserve.model(kind)
    z = latents(torchserve, m.name)
    zin = z.astype(np.float64) if z_datatype == "FP64" else z
    result = client.infer(
        f"{m.name}-decode",
        [tensor("z", zin, z_datatype, binary)],
        outputs=requested(["image"], binary),
        parameters={"image_datatype": "FP32"} if image_datatype == "FP32" else None,
    )
    assert result.get_response()["model_name"] == f"{m.name}-decode"
    check_outputs(result, ["image"], [N, 28, 28], image_datatype, binary)
    body = {"instances": [{"z": v} for v in z.tolist()]}
    want = json_images(torchserve, f"{m.name}-decode", body, image_datatype)
    got = result.as_numpy("image")
    if image_datatype == "UINT8":
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)
    else:
        assert got.dtype == np.float32 and got.min() >= 0.0 and got.max() <= 1.0
        np.testing.assert_allclose(got, want, rtol=0, atol=PIXEL_ATOL)


# ---- sample ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["vae", "ae"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("image_datatype", ["UINT8", "FP32"])
def test_sample_by_seed_equals_the_json_api(torchserve, client, kind, binary, image_datatype):
    m = torchserve.model(kind)
    params = {"n": 6, "seed": 31337, "temperature": 0.7}
    extra = {"image_datatype": "FP32"} if image_datatype == "FP32" else {}
    result = client.infer(
        f"{m.name}-sample", [], outputs=requested(["image"], binary), parameters=params | extra
    )
    response = result.get_response()
    assert response["model_name"] == f"{m.name}-sample"
    assert response["parameters"] == {"seed": 31337, "temperature": 0.7}
    check_outputs(result, ["image"], [6, 28, 28], image_datatype, binary)
    want = json_images(torchserve, f"{m.name}-sample", params, image_datatype)
    if image_datatype == "UINT8":
        np.testing.assert_array_equal(result.as_numpy("image"), want)
    else:
        np.testing.assert_allclose(result.as_numpy("image"), want, rtol=0, atol=PIXEL_ATOL)


def test_sample_defaults_and_replay(torchserve, client, vae):
    """No parameters: one image at temperature 1, a drawn seed that replays it."""
    drawn = client.infer(f"{vae.name}-sample", [])
    response = drawn.get_response()
    assert response["parameters"]["temperature"] == 1.0
    seed = response["parameters"]["seed"]
    check_outputs(drawn, ["image"], [1, 28, 28], "UINT8", binary=True)
    replay = client.infer(f"{vae.name}-sample", [], parameters={"seed": seed})
    np.testing.assert_array_equal(drawn.as_numpy("image"), replay.as_numpy("image"))
    want = json_images(torchserve, f"{vae.name}-sample", {"n": 1, "seed": seed}, "UINT8")
    np.testing.assert_array_equal(drawn.as_numpy("image"), want)


def test_round_trip_through_the_protocol(torchserve, client, vae):
    """encode -> decode entirely in binary tensors equals the same via the JSON API."""
    images = fashion_images()[200 : 200 + N]
    z = client.infer(f"{vae.name}-encode", [tensor("image", images, "UINT8", True)]).as_numpy(
        "z_mean"
    )
    recon = client.infer(f"{vae.name}-decode", [tensor("z", z, "FP32", True)]).as_numpy("image")
    want_z = json_encode(torchserve, vae.name, images)["z_mean"]
    np.testing.assert_allclose(z, want_z, atol=LATENT_ATOL)
    body = {"instances": [{"z": v} for v in want_z.tolist()]}
    want = json_images(torchserve, f"{vae.name}-decode", body, "UINT8")
    # the latents may differ in the last bits (batching, see above): a pixel may round apart
    assert np.abs(recon.astype(np.int16) - want).max() <= 1


def test_a_json_api_body_on_the_v2_route_is_answered_by_the_json_api(torchserve, vae):
    """KServe's route, but no "inputs" and no header length: the project's JSON API
    (its {"instances": ...} is KServe v1's shape)."""
    images = fashion_images()[300 : 300 + N]
    body = {"instances": [{"image_b64": png_b64(im)} for im in images]}
    url = f"{torchserve.url}/v2/models/{vae.name}-encode/infer"
    resp = torchserve.http.post(url, json=body, timeout=120)
    assert resp.status_code == 200, resp.text[:300]
    got = np.array([p["z_mean"] for p in resp.json()["predictions"]], dtype=np.float32)
    want = json_encode(torchserve, vae.name, images)["z_mean"]
    np.testing.assert_allclose(got, want, rtol=0, atol=LATENT_ATOL)


# ---- health and model metadata (the frontend agent, deploy/agent/) ------------------
def test_server_health_and_metadata_through_tritonclient(torchserve, client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "latentserve" and "binary_tensor_data" in meta["extensions"]


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_model_metadata_states_the_shapes(torchserve, client, kind):
    model = torchserve.model(kind)
    c, h, w = model.image_shape
    image = [-1, h, w] if c == 1 else [-1, h, w, c]
    d = model.latent_dim
    for op in ("encode", "decode", "sample", "score"):
        name = f"{model.name}-{op}"
        assert client.is_model_ready(name)
        assert client.is_model_ready(name, model_version="1.0")
        meta = client.get_model_metadata(name)
        assert meta["name"] == name and meta["versions"] == ["1.0"]
        assert meta["platform"] == "latentserve"
        params = meta["parameters"]
        assert params["image_shape"] == [c, h, w] and params["latent_dim"] == d
        assert (params["model"], params["operation"], params["kind"]) == (model.name, op, kind)
        inputs = {t["name"]: t for t in meta["inputs"]}
        outputs = {t["name"]: t for t in meta["outputs"]}
        if op in ("encode", "score"):
            assert inputs["image"] == {"name": "image", "datatype": "UINT8", "shape": image}
        if op == "encode":
            assert outputs["z_mean"]["shape"] == [-1, d]
            assert ("z_log_var" in outputs) == (kind == "vae")
        if op == "decode":
            assert inputs["z"]["shape"] == [-1, d] and outputs["image"]["shape"] == image
        if op == "sample":
            assert inputs == {} and outputs["image"]["shape"] == image


def test_unknown_models_and_versions_are_404(torchserve, client, vae):
    from tritonclient.utils import InferenceServerException

    for call in (
        lambda: client.get_model_metadata("no-such-model"),
        lambda: client.get_model_metadata(f"{vae.name}-encode", model_version="7"),
    ):
        with pytest.raises(InferenceServerException, match="not served here"):
            call()
    assert not client.is_model_ready("no-such-model")
