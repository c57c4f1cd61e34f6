"""Every limit and malformed input gets its documented 400 naming the field, from a
real TorchServe, and leaves the server healthy with the same worker processes."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from handlers.limits import LIMITS

JSON = "application/json"


def dumps(obj) -> bytes:
    return json.dumps(obj).encode()


def pixels(rows: int = 28, cols: int = 28, value: float = 0.5) -> list:
    return np.full((rows, cols), value).tolist()


def image_b64(size: tuple[int, int] = (28, 28), fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    Image.new("L", size).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def ragged() -> list:
    rows = pixels()
    rows[5] = rows[5][:27]
    return rows


def one_bad(value) -> list:
    rows = pixels()
    rows[3][7] = value
    return rows


def nan_body() -> bytes:
    return dumps({"instances": [{"pixels": pixels()}]}).replace(b"0.5", b"NaN", 1)


def case(name, op, kind, body, code, field, ctype=JSON):
    """One bad input: `body(latent_dim) -> bytes` sent to <model of kind>-<op>."""
    return pytest.param(op, kind, body, ctype, code, field, id=name)


CASES = [
    case("bad-json", "encode", "vae", lambda d: b'{"instances": [', "bad_json", "body"),
    case("empty-body", "sample", "vae", lambda d: b"", "bad_json", "body"),
    case("not-an-object", "encode", "vae", lambda d: b"[1, 2]", "invalid_field", "body"),
    case(
        "form-body",
        "sample",
        "vae",
        lambda d: b'{"n": 1}',
        "unsupported_media_type",
        "body",
        ctype="application/x-www-form-urlencoded",
    ),
    case("no-instances", "encode", "vae", lambda d: b"{}", "invalid_field", "instances"),
    case(
        "zero-instances",
        "decode",
        "vae",
        lambda d: dumps({"instances": []}),
        "invalid_field",
        "instances",
    ),
    case(
        "too-many-items",
        "encode",
        "vae",
        lambda d: dumps({"instances": [{"pixels": [[0.0]]}] * (LIMITS.max_items + 1)}),
        "too_many_items",
        "instances",
    ),
    case(
        "unknown-field",
        "encode",
        "vae",
        lambda d: dumps({"instances": [{"pixels": pixels()}], "colour": 1}),
        "invalid_field",
        "colour",
    ),
    case(
        "both-inputs",
        "encode",
        "vae",
        lambda d: dumps({"instances": [{"pixels": pixels(), "image_b64": image_b64()}]}),
        "invalid_field",
        "instances[0]",
    ),
    case(
        "bad-base64",
        "encode",
        "vae",
        lambda d: dumps({"instances": [{"image_b64": "%%%not base64%%%"}]}),
        "bad_base64",
        "instances[0].image_b64",
    ),
    case(
        "not-an-image",
        "encode",
        "vae",
        lambda d: dumps({"instances": [{"image_b64": base64.b64encode(b"hello").decode()}]}),
        "bad_image",
        "instances[0].image_b64",
    ),
    case(
        "gif",
        "encode",
        "vae",
        lambda d: dumps({"instances": [{"image_b64": image_b64(fmt="GIF")}]}),
        "bad_image",
        "instances[0].image_b64",
    ),
    case(
        "image-too-many-pixels",
        "encode",
        "vae",
        lambda d: dumps({"instances": [{"image_b64": image_b64((3000, 3000))}]}),
        "payload_too_large",
        "instances[0].image_b64",
    ),
    case(
        "image-too-many-bytes",
        "encode",
        "vae",
        lambda d: dumps({"instances": [{"image_b64": "A" * 2_000_000}]}),
        "payload_too_large",
        "instances[0].image_b64",
    ),
    case(
        "raw-body-not-an-image",
        "encode",
        "vae",
        lambda d: b"\x89PNG\r\n\x1a\n broken",
        "bad_image",
        "body",
        ctype="image/png",
    ),
    case(
        "wrong-rows",
        "encode",
        "vae",
        lambda d: dumps({"instances": [{"pixels": pixels(27)}]}),
        "wrong_shape",
        "instances[0].pixels",
    ),
    case(
        "ragged-row",
        "encode",
        "vae",
        lambda d: dumps({"instances": [{"pixels": ragged()}]}),
        "wrong_shape",
        "instances[0].pixels[5]",
    ),
    case(
        "three-d-pixels",
        "encode",
        "vae",
        lambda d: dumps({"instances": [{"pixels": [pixels()]}]}),
        "wrong_shape",  # a colour image's nesting, for a one-channel model
        "instances[0].pixels",
    ),
    case(
        "nan-pixel",
        "encode",
        "vae",
        lambda d: nan_body(),
        "not_finite",
        "instances[0].pixels[0][0]",
    ),
    case(
        "pixel-above-1",
        "encode",
        "vae",
        lambda d: dumps({"instances": [{"pixels": one_bad(1.5)}]}),
        "out_of_range",
        "instances[0].pixels[3][7]",
    ),
    case(
        "pixel-as-string",
        "encode",
        "vae",
        lambda d: dumps({"instances": [{"pixels": one_bad("0.5")}]}),
        "invalid_field",
        "instances[0].pixels[3][7]",
    ),
    case(
        "sample-on-ae",
        "encode",
        "ae",
        lambda d: dumps({"instances": [{"pixels": pixels()}], "sample": True}),
        "unsupported",
        "sample",
    ),
    case(
        "negative-seed",
        "encode",
        "vae",
        lambda d: dumps({"instances": [{"pixels": pixels()}], "sample": True, "seed": -1}),
        "out_of_range",
        "seed",
    ),
    case(
        "oversize-body",
        "encode",
        "vae",
        lambda d: b'{"pad": "' + b"x" * (LIMITS.max_body_bytes + 1) + b'"}',
        "payload_too_large",
        "body",
    ),
    case(
        "wrong-latent-dim",
        "decode",
        "vae",
        lambda d: dumps({"instances": [{"z": [0.0] * (d + 1)}]}),
        "wrong_latent_dim",
        "instances[0].z",
    ),
    case(
        "nan-latent",
        "decode",
        "vae",
        lambda d: dumps({"instances": [{"z": [0.0] * d}]}).replace(b"0.0", b"NaN", 2),
        "not_finite",
        "instances[0].z[0]",
    ),
    case(
        "latent-too-large",
        "decode",
        "ae",
        lambda d: dumps({"instances": [{"z": [0.0] * (d - 1) + [1e4]}]}),
        "out_of_range",
        "instances[0].z[{last}]",
    ),
    case(
        "latent-as-string",
        "decode",
        "vae",
        lambda d: dumps({"instances": [{"z": "0, 0"}]}),
        "invalid_field",
        "instances[0].z",
    ),
    case(
        "bad-format",
        "decode",
        "vae",
        lambda d: dumps({"instances": [{"z": [0.0] * d}], "format": "jpeg"}),
        "invalid_field",
        "format",
    ),
    case(
        "image-to-decode",
        "decode",
        "vae",
        lambda d: base64.b64decode(image_b64()),
        "unsupported_media_type",
        "body",
        ctype="image/png",
    ),
    case(
        "n-too-large",
        "sample",
        "vae",
        lambda d: dumps({"n": LIMITS.max_n + 1}),
        "too_many_items",
        "n",
    ),
    case("n-zero", "sample", "ae", lambda d: dumps({"n": 0}), "out_of_range", "n"),
    case("n-as-string", "sample", "vae", lambda d: dumps({"n": "4"}), "invalid_field", "n"),
    case("n-as-float", "sample", "vae", lambda d: dumps({"n": 4.5}), "invalid_field", "n"),
    case(
        "temperature-negative",
        "sample",
        "vae",
        lambda d: dumps({"n": 1, "temperature": -0.5}),
        "out_of_range",
        "temperature",
    ),
    case(
        "temperature-too-high",
        "sample",
        "vae",
        lambda d: dumps({"n": 1, "temperature": LIMITS.max_temperature + 1}),
        "out_of_range",
        "temperature",
    ),
    case(
        "temperature-nan",
        "sample",
        "vae",
        lambda d: b'{"n": 1, "temperature": NaN}',
        "not_finite",
        "temperature",
    ),
    case(
        "seed-too-large",
        "sample",
        "vae",
        lambda d: dumps({"n": 1, "seed": 2**64}),
        "out_of_range",
        "seed",
    ),
]


@pytest.fixture(scope="module")
def pids_before(torchserve):
    return torchserve.worker_pids()


@pytest.mark.parametrize(("op", "kind", "body", "ctype", "code", "field"), CASES)
def test_bad_input_gets_its_400(torchserve, pids_before, op, kind, body, ctype, code, field):
    m = torchserve.model(kind)
    data = body(m.latent_dim)
    resp = torchserve.post(f"{m.name}-{op}", data=data, headers={"Content-Type": ctype})
    assert resp.status_code == 400, resp.text[:300]
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert error["status"] == 400
    assert (error["code"], error["field"]) == (code, field.format(last=m.latent_dim - 1)), error
    assert error["message"]
    # healthy, and no worker was lost or restarted
    assert torchserve.ping().status_code == 200
    assert torchserve.worker_pids()[f"{m.name}-{op}"] == pids_before[f"{m.name}-{op}"]
    good = torchserve.post(f"{m.name}-sample", json={"n": 1, "seed": 0})
    assert good.status_code == 200


def test_beyond_torchserve_request_limit_is_413_from_the_frontend(torchserve, vae):
    """Bodies over config.properties max_request_size (16 MiB) never reach the handler."""
    resp = torchserve.post(
        f"{vae.name}-encode", data=b"x" * (16 * 1024 * 1024 + 1), headers={"Content-Type": JSON}
    )
    assert resp.status_code == 413  # Netty rejects it, body empty
    assert torchserve.ping().status_code == 200


def test_unknown_model_is_404(torchserve):
    resp = torchserve.post("no-such-model-encode", json={"n": 1})
    assert resp.status_code == 404
    assert "no-such-model-encode" in resp.json()["message"]


def test_workers_unchanged_after_all_bad_inputs(torchserve, pids_before):
    assert torchserve.worker_pids() == pids_before
    for name, workers in torchserve.process.model_status().items():
        assert workers and set(workers) == {"READY"}, (name, workers)
