"""Request reading: JSON bodies and their validation errors, base64, pixel lists."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from handlers.errors import CODES, RequestError, json_path
from handlers.limits import LIMITS, Limits
from handlers.wire.json_read import read_base64, read_json, read_pixels
from handlers.wire.json_schemas import DecodeRequest, EncodeRequest, SampleRequest
from handlers.wire.request import RawRequest, is_image_body, media_type
from tests.handlers.tiny import rejects

HW = (28, 28)
SHAPE = (1, 28, 28)


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, format="PNG")
    return buf.getvalue()


# ---- JSON bodies ------------------------------------------------------------
def test_read_json_accepts_bytes_str_and_preparsed():
    for body in (b'{"n": 3}', '{"n": 3}', {"n": 3}):
        assert read_json(RawRequest(body), SampleRequest, LIMITS).n == 3


@pytest.mark.parametrize("ctype", [None, "application/json", "text/plain"])
def test_json_under_other_content_types(ctype):
    """Browsers send JSON as text/plain to avoid a CORS preflight (the explorer does)."""
    assert read_json(RawRequest(b'{"n": 2}', ctype), SampleRequest, LIMITS).n == 2


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (b"{bad", "bad_json", "body"),
        (b"", "bad_json", "body"),
        (None, "bad_json", "body"),
        (b"[1, 2]", "invalid_field", "body"),
        (b'{"n": "3"}', "invalid_field", "n"),  # strict: no string -> int
        (b'{"n": 3.0}', "invalid_field", "n"),
        (b'{"n": true}', "invalid_field", "n"),
        (b'{"n": 0}', "out_of_range", "n"),
        (b'{"n": 257}', "too_many_items", "n"),
        (b'{"temperature": NaN}', "not_finite", "temperature"),
        (b'{"temperature": 5.5}', "out_of_range", "temperature"),
        (b'{"seed": -1}', "out_of_range", "seed"),
        (b'{"format": "gif"}', "invalid_field", "format"),
        (b'{"n": 1, "colour": 1}', "invalid_field", "colour"),
    ],
)
def test_sample_request_errors_name_the_field(body, code, field):
    rejects(code, field, read_json, RawRequest(body), SampleRequest, LIMITS)


def test_instances_limits_and_paths():
    one = {"z": [0.0]}
    too_many = json.dumps({"instances": [one] * (LIMITS.max_items + 1)}).encode()
    err = rejects(
        "too_many_items",
        "instances",
        read_json,
        RawRequest(too_many),
        DecodeRequest,
        LIMITS,
    )
    assert str(LIMITS.max_items) in err.message
    rejects(
        "invalid_field",
        "instances",
        read_json,
        RawRequest(b'{"instances": []}'),
        DecodeRequest,
        LIMITS,
    )
    nan = b'{"instances": [{"z": [0]}, {"z": [0, NaN]}]}'
    rejects(
        "not_finite",
        "instances[1].z[1]",
        read_json,
        RawRequest(nan),
        DecodeRequest,
        LIMITS,
    )
    both = b'{"instances": [{"pixels": [[0]], "image_b64": "AA=="}]}'
    rejects(
        "invalid_field",
        "instances[0]",
        read_json,
        RawRequest(both),
        EncodeRequest,
        LIMITS,
    )
    neither = b'{"instances": [{}]}'
    rejects(
        "invalid_field",
        "instances[0]",
        read_json,
        RawRequest(neither),
        EncodeRequest,
        LIMITS,
    )


def test_body_size_limit():
    small = Limits(max_body_bytes=100)
    body = json.dumps({"n": 1, "format": "png" + " " * 0}).encode() + b" " * 100
    err = rejects("payload_too_large", "body", read_json, RawRequest(body), SampleRequest, small)
    assert "100" in err.message


def test_form_bodies_are_refused_with_a_hint():
    raw = RawRequest(None, "application/x-www-form-urlencoded")
    err = rejects("unsupported_media_type", "body", read_json, raw, SampleRequest, LIMITS)
    assert "Content-Type: application/json" in err.message


def test_error_body_shape_and_codes():
    err = RequestError("wrong_shape", "instances[2].pixels", "expected 28 rows")
    assert json.loads(err.to_json()) == {
        "error": {
            "status": 400,
            "code": "wrong_shape",
            "field": "instances[2].pixels",
            "message": "expected 28 rows",
        }
    }
    with pytest.raises(ValueError):
        RequestError("no_such_code", "body", "x")
    assert len(set(CODES)) == len(CODES)
    assert json_path(("instances", 0, "pixels", 3, 5)) == "instances[0].pixels[3][5]"
    assert json_path(()) == "body"


def test_media_type():
    assert media_type("Application/JSON; charset=utf-8") == "application/json"
    assert media_type("") is None and media_type(None) is None


def test_base64():
    data = png_bytes(np.zeros((28, 28), np.uint8))
    text = base64.b64encode(data).decode()
    assert read_base64(text, "f", LIMITS) == data
    assert read_base64("data:image/png;base64," + text, "f", LIMITS) == data
    rejects("bad_base64", "f", read_base64, "@@not base64@@", "f", LIMITS)
    rejects("bad_base64", "f", read_base64, "abc", "f", LIMITS)  # bad padding
    rejects(
        "payload_too_large",
        "f",
        read_base64,
        "A" * 2000,
        "f",
        Limits(max_image_bytes=1000),
    )


# ---- base64 and pixel arrays ---------------------------------------------------
def test_pixels_shape_and_range():
    ok = np.full(HW, 0.5).tolist()
    assert read_pixels(ok, SHAPE, (0.0, 1.0), "p").shape == SHAPE
    rejects("wrong_shape", "p", read_pixels, ok[:27], SHAPE, (0.0, 1.0), "p")
    ragged = [row[:] for row in ok]
    ragged[3] = ragged[3][:27]
    rejects("wrong_shape", "p[3]", read_pixels, ragged, SHAPE, (0.0, 1.0), "p")
    high = [row[:] for row in ok]
    high[2][5] = 1.5
    err = rejects("out_of_range", "p[2][5]", read_pixels, high, SHAPE, (0.0, 1.0), "p")
    assert "1.5" in err.message


def test_is_image_body():
    png = png_bytes(np.zeros((2, 2), np.uint8))
    assert is_image_body(RawRequest(png, None))  # magic bytes, no content type
    assert is_image_body(RawRequest(b"xx", "image/jpeg"))
    assert not is_image_body(RawRequest(b"{}", "application/json"))


def test_colour_pixels_are_h_x_w_x_c_and_come_back_channels_first():
    rgb = np.random.default_rng(0).random((5, 7, 3))
    got = read_pixels(rgb.tolist(), (3, 5, 7), (0.0, 1.0), "p")
    assert got.shape == (3, 5, 7) and np.allclose(got, rgb.transpose(2, 0, 1), atol=1e-7)
    gray = np.full((5, 7), 0.5).tolist()
    rejects("wrong_shape", "p", read_pixels, gray, (3, 5, 7), (0.0, 1.0), "p")  # no channels
    rejects("wrong_shape", "p", read_pixels, rgb.tolist(), (1, 5, 7), (0.0, 1.0), "p")
    two = rgb[..., :2].tolist()  # two values a pixel
    err = rejects("wrong_shape", "p", read_pixels, two, (3, 5, 7), (0.0, 1.0), "p")
    assert "5 x 7 x 3" in err.message and "5 x 7 x 2" in err.message
    ragged = rgb.tolist()
    ragged[1][2] = [0.1, 0.2]
    rejects("wrong_shape", "p", read_pixels, ragged, (3, 5, 7), (0.0, 1.0), "p")


def test_a_bad_colour_pixel_is_named_without_the_union_branch():
    body = b'{"instances": [{"pixels": [[[0.1, 0.2, 0.3], [0.1, "x", 0.3]]]}]}'
    rejects("invalid_field", "instances[0].pixels[0][1][1]", read_json, RawRequest(body),
            EncodeRequest, LIMITS)  # fmt: skip
    nan = b'{"instances": [{"pixels": [[0.5, NaN]]}]}'
    err = rejects(
        "not_finite", "instances[0].pixels[0][1]", read_json, RawRequest(nan), EncodeRequest, LIMITS
    )
    assert "more error" not in err.message  # one branch validated, one error
    extra = b'{"n": 1, "colour": 1}'  # a field named like a branch is still named
    rejects("invalid_field", "colour", read_json, RawRequest(extra), SampleRequest, LIMITS)
