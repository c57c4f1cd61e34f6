"""A model trained elsewhere, of an unusual shape, served beside a shipped one.

A colour VAE of 3x40x40 images is written here with plain torch (tests/support/
external.py), exported as TorchScript, registered with `python -m serving.register
--data`, archived and served by a real TorchServe next to the shipped `fashion-vae`.
Its answers over the JSON API, over the Open Inference Protocol through tritonclient
and through latentserve's client are the in-process model's (z within 1e-5, pixels
within 1/255), and the shipped model beside it answers exactly as before.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import requests
import torch
import tritonclient.http as httpclient
from PIL import Image

from client.inputs import read_idx
from handlers.calibration import score_names
from paths import FASHION_TEST_IMAGES, STORE
from tests.support import external
from tests.support.live import start_live_server

NAME = "my-colour-vae"
Z_ATOL = 1e-5
PIXEL_ATOL = 1 / 255 + 1e-6


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("any-model")
    data = root / "data.npy"
    np.save(data, external.colour_images(300))
    proc = external.register(root / "store", NAME, root / "export", "--data", str(data))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    server = start_live_server(root / "serve", [root / "store" / NAME, STORE / "fashion-vae"])
    yield server, root / "store" / NAME
    server.stop()


@pytest.fixture(scope="module")
def triton(served):
    server, _ = served
    c = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield c
    c.close()


def reference(model_dir):
    enc = torch.jit.load(str(model_dir / "encoder.pt"))
    dec = torch.jit.load(str(model_dir / "decoder.pt"))
    return enc, dec


def png_b64(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_register_wrote_a_calibrated_manifest_of_the_shape(served):
    server, model_dir = served
    manifest = server.models[0].manifest
    assert manifest["image_shape"] == [3, 40, 40] and manifest["body"] == "external"
    assert manifest["prior"]["type"] == "standard_normal" and "calibration" in manifest


def test_encode_and_decode_over_the_json_api_are_the_models(served):
    server, model_dir = served
    enc, dec = reference(model_dir)
    imgs = external.colour_images(4, seed=9)
    with torch.inference_mode():
        z_want = enc(torch.from_numpy(imgs.transpose(0, 3, 1, 2) / 255.0).float())[0].numpy()
    body = {"instances": [{"image_b64": png_b64(im)} for im in imgs]}
    r = server.post(f"{NAME}-encode", json=body)
    assert r.status_code == 200, r.text
    z = np.array([p["z_mean"] for p in r.json()["predictions"]])
    assert np.abs(z - z_want).max() <= Z_ATOL
    pixels = {"instances": [{"pixels": (im / 255).tolist()} for im in imgs[:2]]}
    r = server.post(f"{NAME}-encode", json=pixels)
    assert r.status_code == 200, r.text
    z2 = np.array([p["z_mean"] for p in r.json()["predictions"]])
    assert np.abs(z2 - z_want[:2]).max() <= Z_ATOL
    r = server.post(f"{NAME}-decode", json={"instances": [{"z": row.tolist()} for row in z]})
    assert r.status_code == 200, r.text
    with torch.inference_mode():
        want = dec(torch.from_numpy(z).float()).numpy()
    for p, w in zip(r.json()["predictions"], want, strict=True):
        img = Image.open(io.BytesIO(base64.b64decode(p["image_b64"])))
        assert (img.mode, img.size) == ("RGB", (40, 40))
        assert np.abs(np.asarray(img).transpose(2, 0, 1) / 255 - w).max() <= PIXEL_ATOL


def test_tritonclient_sees_the_shapes_and_gets_the_models_numbers(served, triton):
    _, model_dir = served
    enc, dec = reference(model_dir)
    meta = triton.get_model_metadata(f"{NAME}-encode")
    assert meta["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, 40, 40, 3]}]
    imgs = external.colour_images(5, seed=4)
    image = httpclient.InferInput("image", list(imgs.shape), "UINT8")
    image.set_data_from_numpy(imgs, binary_data=True)
    out = httpclient.InferRequestedOutput("z_mean", binary_data=True)
    z = triton.infer(f"{NAME}-encode", [image], outputs=[out]).as_numpy("z_mean")
    with torch.inference_mode():
        z_want = enc(torch.from_numpy(imgs.transpose(0, 3, 1, 2) / 255.0).float())[0].numpy()
    assert z.shape == (5, external.LATENT) and np.abs(z - z_want).max() <= Z_ATOL
    zin = httpclient.InferInput("z", list(z.shape), "FP32")
    zin.set_data_from_numpy(z, binary_data=True)
    got = triton.infer(f"{NAME}-decode", [zin]).as_numpy("image")
    with torch.inference_mode():
        want = dec(torch.from_numpy(z.copy())).numpy().transpose(0, 2, 3, 1)
    assert got.shape == (5, 40, 40, 3) and got.dtype == np.uint8
    assert np.abs(got / 255 - want).max() <= PIXEL_ATOL
    score = triton.infer(f"{NAME}-score", [image]).as_numpy("p_values")
    assert score.shape == (5, 4) and ((score >= 0) & (score <= 1)).all()


def test_sample_and_score_over_the_json_api(served):
    server, _ = served
    r = server.post(f"{NAME}-sample", json={"n": 3, "seed": 5})
    assert r.status_code == 200, r.text
    imgs = [
        Image.open(io.BytesIO(base64.b64decode(p["image_b64"]))) for p in r.json()["predictions"]
    ]
    assert {(im.mode, im.size) for im in imgs} == {("RGB", (40, 40))}
    r = server.post(
        f"{NAME}-score", json={"instances": [{"image_b64": png_b64(np.asarray(imgs[0]))}]}
    )
    assert r.status_code == 200, r.text
    assert set(r.json()["predictions"][0]["scores"]) == set(score_names("vae"))


def test_a_wrong_shape_is_a_400_naming_the_models_shape(served):
    server, _ = served
    gray = {"instances": [{"pixels": np.zeros((40, 40)).tolist()}]}
    r = server.post(f"{NAME}-encode", json=gray)
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "wrong_shape", err
    assert "40 x 40 x 3" in err["message"]
    wrong = np.zeros((1, 3, 40, 40), np.uint8)  # channels first: ambiguous, refused
    header = (
        '{"inputs":[{"name":"image","datatype":"UINT8","shape":[1,3,40,40],'
        f'"parameters":{{"binary_data_size":{wrong.nbytes}}}}}]}}'
    ).encode()
    r = requests.post(
        f"{server.url}/v2/models/{NAME}-encode/infer",
        data=header + wrong.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
        timeout=60,
    )
    assert r.status_code == 400 and "[N,40,40,3]" in r.json()["error"], r.text


def test_the_shipped_model_beside_it_answers_as_before(served):
    server, _ = served
    images = read_idx(FASHION_TEST_IMAGES)[:8]
    enc = torch.jit.load(str(STORE / "fashion-vae" / "encoder.pt"))
    with torch.inference_mode():
        want = enc(torch.from_numpy(images[:, None] / 255.0).float())[0].numpy()
    body = {"instances": [{"image_b64": png_b64(im)} for im in images]}
    r = server.post("fashion-vae-encode", json=body)
    assert r.status_code == 200, r.text
    z = np.array([p["z_mean"] for p in r.json()["predictions"]])
    assert np.abs(z - want).max() <= Z_ATOL


@pytest.mark.parametrize("protocol", ["v2", "json"])
def test_latentserve_client_takes_the_shape_from_the_server(served, protocol):
    from client import LatentClient

    server, model_dir = served
    enc, dec = reference(model_dir)
    with LatentClient(server.url, model=NAME, protocol=protocol) as c:
        info = c.model_info()
        assert (info.image_shape, info.kind, info.source) == ((3, 40, 40), "vae", "server")
        imgs = external.colour_images(6, seed=11)  # (n, H, W, 3) uint8, as images are held
        codes = c.encode(imgs)
        with torch.inference_mode():
            want = enc(torch.from_numpy(imgs.transpose(0, 3, 1, 2) / 255.0).float())[0].numpy()
        assert np.abs(codes.z_mean - want).max() <= Z_ATOL
        images = c.decode(codes.z_mean)
        assert {(im.mode, im.size) for im in images} == {("RGB", (40, 40))}
        with torch.inference_mode():
            pixels = dec(torch.from_numpy(codes.z_mean.astype(np.float32))).numpy()
        got = np.stack([np.asarray(im) for im in images]).transpose(0, 3, 1, 2) / 255
        assert np.abs(got - pixels).max() <= PIXEL_ATOL
        assert len(c.sample(3, seed=1)) == 3
        assert c.score(imgs).p_values.shape == (6, 4)
