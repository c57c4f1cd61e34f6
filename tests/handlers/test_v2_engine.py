"""The Open Inference Protocol through the engine: the same answers as the JSON API, 400s."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from handlers.engine import Reply
from handlers.limits import LIMITS
from handlers.wire.v2_write import HEADER_LENGTH
from tests.handlers.test_engine import total
from tests.handlers.tiny import LATENT, json_request, make_engine, v2_request
from tests.support.v2 import binary_input
from tests.support.v2 import read_reply as support_read_reply


def read_reply(reply: Reply) -> tuple[dict, dict[str, np.ndarray]]:
    """A v2 answer -> (its JSON, {output name: array}), with the content type its
    layout calls for (JSON alone, or JSON then binary tensors)."""
    head, arrays = support_read_reply(reply)
    binary = HEADER_LENGTH in reply.headers
    assert reply.content_type == ("application/octet-stream" if binary else "application/json")
    return head, arrays


def json_answer(reply: Reply) -> dict:
    assert reply.status == 200, reply.body
    return json.loads(reply.body)


def v2_error(reply: Reply) -> str:
    assert reply.status == 400 and reply.content_type == "application/json"
    body = json.loads(reply.body)
    assert list(body) == ["error"] and isinstance(body["error"], str)
    return body["error"]


def png_b64(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def read_png(b64: str) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(base64.b64decode(b64))))


IMAGES = np.random.default_rng(5).integers(0, 256, (3, 28, 28), dtype=np.uint8)


def encode_v2(images: np.ndarray, datatype: str, binary: bool, **params) -> object:
    arr = images if datatype == "UINT8" else (images / 255.0).astype(np.float32)
    if binary:
        header = {"inputs": [binary_input("image", arr, datatype)], "parameters": params}
        return v2_request(header, arr.tobytes())
    tensor = {"name": "image", "shape": list(arr.shape), "datatype": datatype}
    return v2_request({"inputs": [{**tensor, "data": arr.tolist()}], "parameters": params})


def test_encode_equals_the_json_api_on_every_input_form(vae_dir):
    engine = make_engine(vae_dir, "encode")
    pngs = json_request({"instances": [{"image_b64": png_b64(a)} for a in IMAGES]})
    chw = IMAGES[:, None]
    raws = [
        pngs,
        encode_v2(IMAGES, "UINT8", binary=True),
        encode_v2(IMAGES, "UINT8", binary=False),
        encode_v2(chw, "UINT8", binary=True),  # [N,1,28,28]
        encode_v2(IMAGES, "FP32", binary=True),
        encode_v2(IMAGES, "FP32", binary=False),
    ]
    replies, rec = engine.handle(raws)
    want = json_answer(replies[0])["predictions"]
    z_mean = np.array([p["z_mean"] for p in want], dtype=np.float32)
    z_log_var = np.array([p["z_log_var"] for p in want], dtype=np.float32)
    for i, reply in enumerate(replies[1:], 1):
        head, arrays = read_reply(reply)
        assert head["model_name"] == "tiny-vae-encode" and head["model_version"] == "1.0"
        assert [o["name"] for o in head["outputs"]] == ["z_mean", "z_log_var"]
        exact = i <= 3  # uint8 pixels: the PNG's; FP32 = uint8 / 255 in float32, to rounding
        for name, ref in (("z_mean", z_mean), ("z_log_var", z_log_var)):
            assert arrays[name].shape == (3, LATENT) and arrays[name].dtype == np.float32
            if exact:
                assert np.array_equal(arrays[name], ref), (i, name)
            else:
                assert np.allclose(arrays[name], ref, atol=1e-5), (i, name)
    assert total(rec, "latentserve_items_total", Operation="encode") == 18


def test_encode_sample_seed_matches_the_json_api_and_is_drawn_when_absent(vae_dir, ae_dir):
    engine = make_engine(vae_dir, "encode")
    js = json_request({"instances": [{"image_b64": png_b64(a)} for a in IMAGES], "sample": True,
                       "seed": 9})  # fmt: skip
    v2 = encode_v2(IMAGES, "UINT8", binary=True, sample=True, seed=9, binary_data_output=True)
    drawn = encode_v2(IMAGES, "UINT8", binary=True, sample=True)
    (a, b, c), _ = engine.handle([js, v2, drawn])
    want = np.array([p["z"] for p in json_answer(a)["predictions"]], dtype=np.float32)
    head, arrays = read_reply(b)
    assert head["parameters"] == {"seed": 9}
    assert [o["name"] for o in head["outputs"]] == ["z_mean", "z_log_var", "z"]
    assert np.array_equal(arrays["z"], want)
    head, _ = read_reply(c)
    assert 0 <= head["parameters"]["seed"] <= LIMITS.max_seed
    ae = make_engine(ae_dir, "encode")
    (plain, sample, log_var), _ = ae.handle(
        [
            encode_v2(IMAGES, "UINT8", binary=True),
            encode_v2(IMAGES, "UINT8", binary=True, sample=True),
            v2_request(
                {
                    **json.loads(encode_v2(IMAGES, "UINT8", False).body),
                    "outputs": [{"name": "z_log_var"}],
                }
            ),  # fmt: skip
        ]
    )
    head, arrays = read_reply(plain)
    assert list(arrays) == ["z_mean"]
    assert "parameter 'sample'" in v2_error(sample) and "is an AE" in v2_error(sample)
    assert v2_error(log_var).startswith("output 'z_log_var': is not an output of encode")


def test_requested_outputs_pick_and_order_and_binary_per_output(vae_dir):
    engine = make_engine(vae_dir, "encode")
    header = json.loads(encode_v2(IMAGES, "UINT8", binary=False).body)
    picks = [
        [{"name": "z_log_var"}],
        [{"name": "z_log_var", "parameters": {"binary_data": True}}, {"name": "z_mean"}],
        [{"name": "z"}],
    ]
    replies, _ = engine.handle([v2_request({**header, "outputs": o, "id": "x"}) for o in picks])
    head, _ = read_reply(replies[0])
    assert [o["name"] for o in head["outputs"]] == ["z_log_var"] and head["id"] == "x"
    assert "data" in head["outputs"][0] and HEADER_LENGTH not in replies[0].headers
    head, arrays = read_reply(replies[1])
    assert [o["name"] for o in head["outputs"]] == ["z_log_var", "z_mean"]
    assert "data" not in head["outputs"][0] and "data" in head["outputs"][1]
    assert "output 'z': is not an output" in v2_error(replies[2])


@pytest.mark.parametrize("binary", [True, False])
def test_decode_uint8_is_the_json_apis_png_and_fp32_its_array(vae_dir, binary):
    engine = make_engine(vae_dir, "decode")
    z = np.random.default_rng(2).normal(size=(4, LATENT)).astype(np.float32)
    if binary:
        tensor = binary_input("z", z, "FP32")
        data = z.tobytes()
    else:
        tensor, data = (
            {"name": "z", "shape": [4, LATENT], "datatype": "FP32", "data": z.tolist()},
            b"",
        )
    z64 = z.astype(np.float64)
    raws = [
        json_request({"instances": [{"z": row} for row in z.tolist()]}),
        json_request({"instances": [{"z": row} for row in z.tolist()], "format": "array"}),
        v2_request({"inputs": [tensor]}, data),
        v2_request({"inputs": [tensor], "parameters": {"image_datatype": "FP32"}}, data),
        v2_request({"inputs": [binary_input("z", z64, "FP64")]}, z64.tobytes()),
    ]
    replies, _ = engine.handle(raws)
    pngs = np.stack([read_png(p["image_b64"]) for p in json_answer(replies[0])["predictions"]])
    arrays = np.array([p["pixels"] for p in json_answer(replies[1])["predictions"]])
    _, u8 = read_reply(replies[2])
    _, fp = read_reply(replies[3])
    _, u8_from_fp64 = read_reply(replies[4])
    assert u8["image"].dtype == np.uint8 and u8["image"].shape == (4, 28, 28)
    assert np.array_equal(u8["image"], pngs) and np.array_equal(u8_from_fp64["image"], pngs)
    assert fp["image"].dtype == np.float32 and np.allclose(fp["image"], arrays, atol=1e-6)


def test_sample_equals_the_json_api_with_the_same_seed(vae_dir):
    engine = make_engine(vae_dir, "sample")
    raws = [
        json_request({"n": 3, "seed": 4, "temperature": 0.5}),
        v2_request({"inputs": [], "parameters": {"n": 3, "seed": 4, "temperature": 0.5}}),
        v2_request({"parameters": {"n": 2, "binary_data_output": True}}),
        v2_request({"inputs": []}),
    ]
    replies, _ = engine.handle(raws)
    pngs = np.stack([read_png(p["image_b64"]) for p in json_answer(replies[0])["predictions"]])
    head, arrays = read_reply(replies[1])
    assert head["parameters"] == {"seed": 4, "temperature": 0.5}
    assert np.array_equal(arrays["image"], pngs)
    head, arrays = read_reply(replies[2])
    assert arrays["image"].shape == (2, 28, 28) and HEADER_LENGTH in replies[2].headers
    assert head["parameters"]["temperature"] == 1.0 and isinstance(head["parameters"]["seed"], int)
    assert read_reply(replies[3])[1]["image"].shape == (1, 28, 28)


def z_tensor(z, datatype="FP32") -> dict:
    z = np.asarray(z)
    return {"name": "z", "shape": list(z.shape), "datatype": datatype, "data": z.tolist()}


ZEROS = np.zeros((1, LATENT))


@pytest.mark.parametrize(
    ("op", "header", "says"),
    [
        ("encode", {"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "INT8",
                                "data": [0] * 784}]},
         "input 'image': datatype INT8 not accepted; use UINT8, FP32 or FP64"),
        ("encode", {"inputs": [{"name": "image", "shape": [1, 27, 28], "datatype": "UINT8",
                                "data": [0] * 756}]},
         "input 'image': shape [1, 27, 28]; expected [N,28,28] or [N,1,28,28]"),
        ("encode", {"inputs": [{"name": "image", "shape": [1, 2, 28, 28], "datatype": "UINT8",
                                "data": [0] * 1568}]}, "input 'image': shape [1, 2, 28, 28]"),
        ("encode", {"inputs": [{"name": "image", "shape": [LIMITS.max_items + 1, 28, 28],
                                "datatype": "UINT8", "data": [0] * 784 * (LIMITS.max_items + 1)}]},
         f"input 'image': {LIMITS.max_items + 1} items; at most {LIMITS.max_items}"),
        ("encode", {"inputs": [{"name": "image", "shape": [0, 28, 28], "datatype": "UINT8",
                                "data": []}]}, "input 'image': has no items"),
        ("encode", {"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32",
                                "data": [0.5] * 783 + [1.5]}]},
         "input 'image'[0][27][27]: value 1.5 is outside [0.0, 1.0]"),
        ("encode", {"inputs": []}, "input 'image': is missing"),
        ("encode", {"inputs": [{"name": "img", "shape": [1], "datatype": "UINT8", "data": [0]}]},
         "input 'img': is not an input of encode (inputs: image)"),
        ("encode", {"inputs": [], "parameters": {"sead": 1}}, "parameter 'sead': Extra inputs"),
        ("encode", {"inputs": [], "parameters": {"seed": -1}}, "parameter 'seed': Input should"),
        ("encode", {"inputs": [], "parameters": {"sample": 1}}, "parameter 'sample': Input should"),
        ("decode", {"inputs": [z_tensor(ZEROS.astype(int), "UINT8")]},
         "input 'z': datatype UINT8 not accepted; use FP32 or FP64"),
        ("decode", {"inputs": [z_tensor(np.zeros((1, LATENT + 1)))]},
         f"input 'z': shape [1, {LATENT + 1}]; expected [N,{LATENT}]"),
        ("decode", {"inputs": [z_tensor(np.zeros(LATENT))]}, "input 'z': shape [4]"),
        ("decode", {"inputs": [z_tensor(ZEROS + 1001)]},
         "input 'z'[0][0]: value 1001.0 is outside"),
        ("decode", {"inputs": [z_tensor(ZEROS)], "parameters": {"image_datatype": "FP16"}},
         "parameter 'image_datatype': Input should be 'UINT8' or 'FP32'"),
        ("decode", {"inputs": [z_tensor(ZEROS)], "outputs": [{"name": "pixels"}]},
         "output 'pixels': is not an output of decode for this request (outputs: image)"),
        ("sample", {"inputs": [z_tensor(ZEROS)]},
         "input 'z': is not an input of sample (inputs: none)"),
        ("sample", {"inputs": [], "parameters": {"n": 0}},
         "parameter 'n': Input should be greater"),
        ("sample", {"inputs": [], "parameters": {"n": 257}}, "parameter 'n': Input should be less"),
        ("sample", {"inputs": [], "parameters": {"n": 1.5}},
         "parameter 'n': Input should be a valid int"),
        ("sample", {"inputs": [], "parameters": {"temperature": 6}}, "parameter 'temperature'"),
        ("sample", {"inputs": [], "parameters": {"temperature": "hot"}}, "parameter 'temperature'"),
    ],
)  # fmt: skip
def test_operation_errors_name_the_tensor_or_parameter(vae_dir, op, header, says):
    (reply,), rec = make_engine(vae_dir, op).handle([v2_request(header)])
    assert v2_error(reply).startswith(says), v2_error(reply)
    assert total(rec, "latentserve_rejected_total", Operation=op) == 1


def test_a_bad_v2_request_fails_alone_among_good_json_api_and_v2_requests(vae_dir):
    engine = make_engine(vae_dir, "encode", chunk_size=4)
    short = encode_v2(IMAGES, "UINT8", binary=True)
    short = type(short)(short.body[:-10], short.content_type, short.protocol, short.headers)
    raws = [
        json_request({"instances": [{"image_b64": png_b64(a)} for a in IMAGES]}),
        encode_v2(IMAGES, "UINT8", binary=True),
        short,
        v2_request(
            {
                "inputs": [
                    {"name": "image", "shape": [1, 28, 28], "datatype": "INT8", "data": [0] * 784}
                ]
            }
        ),  # fmt: skip
        json_request({"instances": [{"pixels": [[2.0]]}]}),
        encode_v2(IMAGES[:1], "FP32", binary=False),
    ]
    replies, rec = engine.handle(raws)
    assert [r.status for r in replies] == [200, 200, 400, 400, 400, 200]
    assert "runs past the binary part" in v2_error(replies[2])
    assert "datatype INT8" in v2_error(replies[3])
    assert json.loads(replies[4].body)["error"]["field"] == "instances[0].pixels"
    assert read_reply(replies[1])[1]["z_mean"].shape == (3, LATENT)
    assert read_reply(replies[5])[1]["z_mean"].shape == (1, LATENT)
    assert total(rec, "latentserve_rejected_total", Reason="invalid_field") == 2
    assert total(rec, "latentserve_items_total") == 7
    assert {r.headers["X-Latentserve-Batch-Items"] for r in replies} == {"7"}


def test_a_crash_while_writing_a_v2_answer_is_a_500_in_the_protocols_shape(vae_dir, monkeypatch):
    engine = make_engine(vae_dir, "sample")
    monkeypatch.setattr(engine.op, "outputs", lambda parsed, out: 1 / 0)
    (reply, ok), _ = engine.handle([v2_request({"inputs": []}), json_request({"n": 1})])
    assert reply.status == 500 and json.loads(reply.body) == {
        "error": "internal error during response writing"
    }
    assert ok.status == 200
