"""Models of any image shape through the engine: a 3x40x40 colour VAE and AE, both wires,
every operation, against the model's own numbers; the v2 metadata each archive carries
matches the answers; limits scale with the image; what a model lacks gets a 400."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from handlers.calibration import score_names
from handlers.engine import Engine
from handlers.limits import LIMITS
from handlers.manifest import ModelInfo
from handlers.operations.metadata import tensors, v2_metadata
from handlers.wire.json_schemas import RESPONSES
from tests.handlers.tiny import json_request, make_engine, v2_request
from tests.support.exports import calibrate_fixture
from training.export import export_model
from training.models import ModelConfig, build_model

SHAPE = (3, 40, 40)
LATENT = 6


def export_colour(out, kind: str, shape=SHAPE, prior: bool = True, calibrate: bool = True):
    torch.manual_seed(1)
    cfg = ModelConfig(kind=kind, body="mlp", latent_dim=LATENT, hidden=32, image_shape=shape)
    code_prior = None
    if kind == "ae":  # the export needs one; `prior=False` drops it below
        code_prior = {"type": "gaussian", "mean": [0.1] * LATENT, "cov": np.eye(LATENT).tolist()}
    export_model(
        build_model(cfg),
        out,
        x_check=torch.rand(4, *shape),
        dataset={"name": "test colour"},
        code_prior=code_prior,
    )
    if kind == "ae" and not prior:  # as serving.register writes an AE registered without data
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["prior"] = {"type": "none"}
        (out / "manifest.json").write_text(json.dumps(manifest))
    if calibrate:
        calibrate_fixture(out, channels=shape[0], hw=shape[1:])
    return out


@pytest.fixture(scope="module")
def colour_vae(tmp_path_factory):
    return export_colour(tmp_path_factory.mktemp("colour") / "vae", "vae")


@pytest.fixture(scope="module")
def colour_ae_bare(tmp_path_factory):
    out = tmp_path_factory.mktemp("colour") / "ae"
    return export_colour(out, "ae", prior=False, calibrate=False)


def rgb_images(n: int, seed: int = 0) -> np.ndarray:
    """(n, 40, 40, 3) uint8, as image libraries hold colour images."""
    return np.random.default_rng(seed).integers(0, 256, (n, 40, 40, 3), dtype=np.uint8)


def png_b64(arr: np.ndarray, mode: str | None = None) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def model_z(model_dir, x_nchw: np.ndarray) -> np.ndarray:
    enc = torch.jit.load(str(model_dir / "encoder.pt"))
    with torch.inference_mode():
        return enc(torch.from_numpy(x_nchw.astype(np.float32) / 255))[0].numpy()


def model_pixels(model_dir, z: np.ndarray) -> np.ndarray:
    dec = torch.jit.load(str(model_dir / "decoder.pt"))
    with torch.inference_mode():
        return dec(torch.from_numpy(z.astype(np.float32))).numpy()


def binary_image(arr: np.ndarray) -> dict:
    return {
        "name": "image",
        "datatype": "UINT8",
        "shape": list(arr.shape),
        "parameters": {"binary_data_size": arr.nbytes},
    }


def v2_json(reply) -> dict:
    head = int(reply.headers.get("Inference-Header-Content-Length", len(reply.body)))
    return json.loads(reply.body[:head])


def test_manifest_shape_reaches_the_model_info(colour_vae):
    info = ModelInfo.from_dir(colour_vae)
    assert (info.image_shape, info.channels, info.image_hw, info.mode) == (
        SHAPE,
        3,
        (40, 40),
        "RGB",
    )


def test_encode_colour_over_both_wires_gives_the_models_z(colour_vae):
    imgs = rgb_images(3)
    want = model_z(colour_vae, imgs.transpose(0, 3, 1, 2))
    engine = make_engine(colour_vae, "encode")
    pixels = {"instances": [{"pixels": (im / 255).tolist()} for im in imgs]}
    pngs = {"instances": [{"image_b64": png_b64(im)} for im in imgs]}
    header = {"inputs": [binary_image(imgs)], "outputs": [{"name": "z_mean"}]}
    replies, _ = engine.handle(
        [json_request(pixels), json_request(pngs), v2_request(header, imgs.tobytes())]
    )
    assert [r.status for r in replies] == [200, 200, 200], [r.body[:300] for r in replies]
    for reply in replies[:2]:
        body = json.loads(reply.body)
        RESPONSES["encode"].model_validate(body)
        got = np.array([p["z_mean"] for p in body["predictions"]])
        assert np.abs(got - want).max() <= 1e-5
        assert all(p["converted_from"] is None for p in body["predictions"])
    out = v2_json(replies[2])["outputs"][0]
    assert out["shape"] == [3, LATENT]


def test_colour_uploads_of_other_modes_and_sizes_are_converted(colour_vae):
    engine = make_engine(colour_vae, "encode")
    gray = np.full((20, 30), 200, np.uint8)
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128  # half-transparent red onto black
    body = {"instances": [{"image_b64": png_b64(gray)}, {"image_b64": png_b64(rgba, "RGBA")}]}
    (reply,), _ = engine.handle([json_request(body)])
    assert reply.status == 200, reply.body
    conv = [p["converted_from"] for p in json.loads(reply.body)["predictions"]]
    assert conv == [
        {"mode": "L", "width": 30, "height": 20},
        {"mode": "RGBA", "width": 40, "height": 40},
    ]
    # the converted pixels are what the model saw: gray replicated, red composited onto black
    rgb_of_gray = np.full((1, 3, 40, 40), 200, np.uint8)
    got = np.array(json.loads(reply.body)["predictions"][0]["z_mean"])
    assert np.abs(got - model_z(colour_vae, rgb_of_gray)[0]).max() <= 1e-5


@pytest.mark.parametrize(
    ("shape", "field"),
    [
        ([2, 40, 40], "input 'image'"),
        ([2, 3, 40, 40], "input 'image'"),
        ([2, 40, 40, 4], "input 'image'"),
    ],
)
def test_v2_colour_images_must_be_n_h_w_c(colour_vae, shape, field):
    arr = np.zeros(shape, np.uint8)
    (reply,), _ = make_engine(colour_vae, "encode").handle(
        [v2_request({"inputs": [binary_image(arr)]}, arr.tobytes())]
    )
    err = json.loads(reply.body)["error"]  # the protocol's error: "<field>: <message>"
    assert reply.status == 400 and err.startswith(f"{field}: shape {shape}")
    assert "expected [N,40,40,3]" in err


def test_decode_and_sample_answer_rgb_images_of_the_models_size(colour_vae):
    z = np.random.default_rng(2).normal(size=(2, LATENT)).astype(np.float32)
    want = model_pixels(colour_vae, z)  # (2, 3, 40, 40) in [0, 1]
    engine = make_engine(colour_vae, "decode")
    png = {"instances": [{"z": row.tolist()} for row in z]}
    arr = dict(png, format="array")
    v2 = {
        "inputs": [
            {"name": "z", "datatype": "FP32", "shape": [2, LATENT], "data": z.ravel().tolist()}
        ]
    }
    replies, _ = engine.handle([json_request(png), json_request(arr), v2_request(v2)])
    assert [r.status for r in replies] == [200, 200, 200]
    for i, p in enumerate(json.loads(replies[0].body)["predictions"]):
        img = Image.open(io.BytesIO(base64.b64decode(p["image_b64"])))
        assert (img.mode, img.size) == ("RGB", (40, 40))
        got = np.asarray(img).transpose(2, 0, 1) / 255
        assert np.abs(got - want[i]).max() <= 1 / 255 + 1e-6
    pixels = np.array([p["pixels"] for p in json.loads(replies[1].body)["predictions"]])
    assert pixels.shape == (2, 40, 40, 3)
    assert np.abs(pixels - want.transpose(0, 2, 3, 1)).max() <= 1e-6
    out = v2_json(replies[2])["outputs"][0]
    assert (out["datatype"], out["shape"]) == ("UINT8", [2, 40, 40, 3])
    (sample,), _ = make_engine(colour_vae, "sample").handle([json_request({"n": 3, "seed": 1})])
    preds = json.loads(sample.body)["predictions"]
    modes = {Image.open(io.BytesIO(base64.b64decode(p["image_b64"]))).mode for p in preds}
    assert sample.status == 200 and len(preds) == 3 and modes == {"RGB"}


def test_score_of_a_colour_model(colour_vae):
    imgs = rgb_images(4, seed=3)
    engine = make_engine(colour_vae, "score")
    body = {"instances": [{"image_b64": png_b64(im)} for im in imgs], "error_map": True}
    header = {"inputs": [binary_image(imgs)]}
    replies, _ = engine.handle([json_request(body), v2_request(header, imgs.tobytes())])
    assert [r.status for r in replies] == [200, 200], replies[0].body[:300]
    answer = json.loads(replies[0].body)
    RESPONSES["score"].model_validate(answer)
    emap = Image.open(io.BytesIO(base64.b64decode(answer["predictions"][0]["error_map"])))
    assert (emap.mode, emap.size) == ("RGB", (40, 40))
    bpd = answer["predictions"][0]["bits_per_dim"]
    assert bpd == pytest.approx(answer["predictions"][0]["neg_elbo_nats"] / np.log(2) / 4800)
    v2_scores = [o for o in v2_json(replies[1])["outputs"] if o["name"] == "scores"][0]
    assert v2_scores["shape"] == [4, len(score_names("vae"))]


def test_what_a_bare_model_lacks_is_a_400_that_says_so(colour_ae_bare):
    (sample,), _ = make_engine(colour_ae_bare, "sample").handle([json_request({"n": 1})])
    err = json.loads(sample.body)["error"]
    assert sample.status == 400 and err["code"] == "unsupported" and "prior" in err["message"]
    imgs = rgb_images(1)
    (score,), _ = make_engine(colour_ae_bare, "score").handle(
        [v2_request({"inputs": [binary_image(imgs)]}, imgs.tobytes())]
    )
    err = v2_json(score)["error"]
    assert score.status == 400 and "calibration" in err
    (enc,), _ = make_engine(colour_ae_bare, "encode").handle(
        [json_request({"instances": [{"image_b64": png_b64(imgs[0])}]})]
    )
    assert enc.status == 200  # the rest of the model works


def test_limits_scale_with_the_image(tmp_path):
    assert LIMITS.for_image((1, 28, 28)).max_items == 256
    big = LIMITS.for_image((3, 64, 64))
    assert (big.max_items, big.max_n) == (85, 85)
    model = export_colour(tmp_path / "big", "vae", shape=(3, 64, 64), calibrate=False)
    engine = Engine.from_dir(model, "decode")
    assert engine.op.limits.max_items == 85
    ok = {"instances": [{"z": [0.0] * LATENT}] * 85}
    over = {"instances": [{"z": [0.0] * LATENT}] * 86}
    replies, _ = engine.handle([json_request(ok), json_request(over)])
    err = json.loads(replies[1].body)["error"]
    assert replies[0].status == 200 and replies[1].status == 400
    assert (err["code"], err["field"]) == ("too_many_items", "instances") and "85" in err["message"]


@pytest.mark.parametrize("op", ["encode", "decode", "sample", "score"])
def test_the_v2_metadata_lists_what_the_answers_carry(colour_vae, op, vae_dir):
    for model_dir in (colour_vae, vae_dir):
        info = ModelInfo.from_dir(model_dir)
        inputs, outputs = tensors(info, op)
        engine = make_engine(model_dir, op)
        dims = list(info.image_shape[1:]) + ([3] if info.channels == 3 else [])
        arrays = {
            "image": np.zeros((2, *dims), np.uint8),
            "z": np.zeros((2, info.latent_dim), np.float32),
        }
        header = {
            "inputs": [
                {
                    "name": t["name"],
                    "datatype": t["datatype"],
                    "shape": [2, *t["shape"][1:]],
                    "parameters": {"binary_data_size": arrays[t["name"]].nbytes},
                }
                for t in inputs
            ],  # fmt: skip
            "parameters": {"n": 2}
            if op == "sample"
            else {"sample": True}
            if op == "encode"
            else {"error_map": True}
            if op == "score"
            else {},  # fmt: skip
        }
        blob = b"".join(arrays[t["name"]].tobytes() for t in inputs)
        (reply,), _ = engine.handle([v2_request(header, blob)])
        assert reply.status == 200, reply.body[:300]
        got = [(o["name"], o["datatype"], [-1, *o["shape"][1:]]) for o in v2_json(reply)["outputs"]]
        assert got == [(t["name"], t["datatype"], t["shape"]) for t in outputs]
    doc = v2_metadata(ModelInfo.from_dir(colour_vae), op, "served-as")
    assert doc["name"] == f"served-as-{op}" and doc["parameters"]["model"] == "served-as"
    assert doc["parameters"]["image_shape"] == list(SHAPE) and doc["versions"] == ["1.0"]


def test_png_bits_of_a_colour_image_is_the_length_of_its_rgb_png():
    from handlers.calibration import png_bits, write_png_file

    imgs = rgb_images(3, seed=5)
    imgs[1] = 7  # flat: compresses far better
    bits = png_bits(imgs)
    for im, b in zip(imgs, bits, strict=True):
        data = write_png_file(im)
        back = Image.open(io.BytesIO(data))
        assert back.mode == "RGB" and np.array_equal(np.asarray(back), im)
        assert len(data) * 8 == b
    assert bits[1] < bits[0] / 10
