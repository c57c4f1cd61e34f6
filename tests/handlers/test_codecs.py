"""Body parsing, validation errors and image codecs (no model, no server)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from handlers import codecs, images
from handlers.codecs import RawRequest
from handlers.errors import CODES, RequestError, json_path
from handlers.limits import LIMITS, Limits
from handlers.schemas import DecodeRequest, EncodeRequest, SampleRequest

HW = (28, 28)


def png_bytes(arr: np.ndarray, mode: str = "L", fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format=fmt)
    return buf.getvalue()


def rejects(code: str, field: str, fn, *args):
    with pytest.raises(RequestError) as info:
        fn(*args)
    err = info.value
    assert (err.code, err.field) == (code, field), err.body()
    assert err.status == 400
    return err


# ---- JSON bodies ------------------------------------------------------------
def test_parse_json_accepts_bytes_str_and_preparsed():
    for body in (b'{"n": 3}', '{"n": 3}', {"n": 3}):
        assert codecs.parse_json(RawRequest(body), SampleRequest, LIMITS).n == 3


@pytest.mark.parametrize("ctype", [None, "application/json", "text/plain"])
def test_json_under_other_content_types(ctype):
    """Browsers send JSON as text/plain to avoid a CORS preflight (the explorer does)."""
    assert codecs.parse_json(RawRequest(b'{"n": 2}', ctype), SampleRequest, LIMITS).n == 2


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
    rejects(code, field, codecs.parse_json, RawRequest(body), SampleRequest, LIMITS)


def test_instances_limits_and_paths():
    one = {"z": [0.0]}
    too_many = json.dumps({"instances": [one] * (LIMITS.max_items + 1)}).encode()
    err = rejects(
        "too_many_items",
        "instances",
        codecs.parse_json,
        RawRequest(too_many),
        DecodeRequest,
        LIMITS,
    )
    assert str(LIMITS.max_items) in err.message
    rejects(
        "invalid_field",
        "instances",
        codecs.parse_json,
        RawRequest(b'{"instances": []}'),
        DecodeRequest,
        LIMITS,
    )
    nan = b'{"instances": [{"z": [0]}, {"z": [0, NaN]}]}'
    rejects(
        "not_finite", "instances[1].z[1]", codecs.parse_json, RawRequest(nan), DecodeRequest, LIMITS
    )
    both = b'{"instances": [{"pixels": [[0]], "image_b64": "AA=="}]}'
    rejects(
        "invalid_field", "instances[0]", codecs.parse_json, RawRequest(both), EncodeRequest, LIMITS
    )
    neither = b'{"instances": [{}]}'
    rejects(
        "invalid_field",
        "instances[0]",
        codecs.parse_json,
        RawRequest(neither),
        EncodeRequest,
        LIMITS,
    )


def test_body_size_limit():
    small = Limits(max_body_bytes=100)
    body = json.dumps({"n": 1, "format": "png" + " " * 0}).encode() + b" " * 100
    err = rejects(
        "payload_too_large", "body", codecs.parse_json, RawRequest(body), SampleRequest, small
    )
    assert "100" in err.message


def test_form_bodies_are_refused_with_a_hint():
    raw = RawRequest(None, "application/x-www-form-urlencoded")
    err = rejects("unsupported_media_type", "body", codecs.parse_json, raw, SampleRequest, LIMITS)
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
    assert codecs.media_type("Application/JSON; charset=utf-8") == "application/json"
    assert codecs.media_type("") is None and codecs.media_type(None) is None


# ---- images -----------------------------------------------------------------
def test_gray_png_of_model_size_is_exact_and_not_converted():
    arr = np.arange(784, dtype=np.uint8).reshape(28, 28)
    got, conv = images.decode_image(png_bytes(arr), HW, 255.0, "body", LIMITS)
    assert conv is None
    np.testing.assert_array_equal(got, arr.astype(np.float32) / np.float32(255.0))


def test_rgb_of_other_size_is_converted_and_reported():
    rgb = np.zeros((64, 48, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red -> gray 76 (ITU-R 601-2 luma)
    got, conv = images.decode_image(png_bytes(rgb, "RGB"), HW, 255.0, "f", LIMITS)
    assert conv == {"mode": "RGB", "width": 48, "height": 64}
    assert got.shape == HW and np.allclose(got, 76 / 255, atol=1 / 255)


def test_transparent_pixels_become_black():
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[:14, :, 3] = 255  # top half opaque white, bottom half transparent white
    got, conv = images.decode_image(png_bytes(rgba, "RGBA"), HW, 255.0, "f", LIMITS)
    assert conv["mode"] == "RGBA"
    assert np.all(got[:14] == 1.0) and np.all(got[14:] == 0.0)


def test_16_bit_png_is_scaled():
    arr16 = np.full((28, 28), 65535, dtype=np.uint16)
    img = Image.fromarray(arr16)  # mode I;16
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    got, conv = images.decode_image(buf.getvalue(), HW, 255.0, "f", LIMITS)
    assert conv is not None and np.all(got == 1.0)


def test_jpeg_is_accepted():
    arr = np.full((28, 28), 128, dtype=np.uint8)
    got, conv = images.decode_image(png_bytes(arr, fmt="JPEG"), HW, 255.0, "f", LIMITS)
    assert conv is None and np.allclose(got, 128 / 255, atol=2 / 255)


def test_bad_images():
    rejects("bad_image", "f", images.decode_image, b"not an image", HW, 255.0, "f", LIMITS)
    gif = io.BytesIO()
    Image.new("L", (28, 28)).save(gif, format="GIF")
    err = rejects("bad_image", "f", images.decode_image, gif.getvalue(), HW, 255.0, "f", LIMITS)
    assert "GIF" in err.message
    truncated = png_bytes(np.zeros((28, 28), np.uint8))[:-30]
    rejects("bad_image", "f", images.decode_image, truncated, HW, 255.0, "f", LIMITS)


def test_image_size_limits():
    big = png_bytes(np.zeros((100, 100), np.uint8))
    tight = Limits(max_image_pixels=99 * 99)
    rejects("payload_too_large", "f", images.decode_image, big, HW, 255.0, "f", tight)
    rejects(
        "payload_too_large",
        "f",
        images.decode_image,
        big,
        HW,
        255.0,
        "f",
        Limits(max_image_bytes=10),
    )


def test_base64():
    data = png_bytes(np.zeros((28, 28), np.uint8))
    text = base64.b64encode(data).decode()
    assert codecs.b64_to_bytes(text, "f", LIMITS) == data
    assert codecs.b64_to_bytes("data:image/png;base64," + text, "f", LIMITS) == data
    rejects("bad_base64", "f", codecs.b64_to_bytes, "@@not base64@@", "f", LIMITS)
    rejects("bad_base64", "f", codecs.b64_to_bytes, "abc", "f", LIMITS)  # bad padding
    rejects(
        "payload_too_large", "f", codecs.b64_to_bytes, "A" * 2000, "f", Limits(max_image_bytes=1000)
    )


def test_png_encode_round_trip():
    arr = np.random.default_rng(0).random(HW)
    data = base64.b64decode(images.encode_png(arr, 255.0))
    back, conv = images.decode_image(data, HW, 255.0, "f", LIMITS)
    assert conv is None and np.abs(back - arr).max() <= 0.5 / 255 + 1e-6


# ---- pixel arrays -----------------------------------------------------------
def test_pixels_shape_and_range():
    ok = np.full(HW, 0.5).tolist()
    assert codecs.pixels_to_array(ok, HW, (0.0, 1.0), "p").shape == HW
    rejects("wrong_shape", "p", codecs.pixels_to_array, ok[:27], HW, (0.0, 1.0), "p")
    ragged = [row[:] for row in ok]
    ragged[3] = ragged[3][:27]
    rejects("wrong_shape", "p[3]", codecs.pixels_to_array, ragged, HW, (0.0, 1.0), "p")
    high = [row[:] for row in ok]
    high[2][5] = 1.5
    err = rejects("out_of_range", "p[2][5]", codecs.pixels_to_array, high, HW, (0.0, 1.0), "p")
    assert "1.5" in err.message


def test_is_image_body():
    png = png_bytes(np.zeros((2, 2), np.uint8))
    assert codecs.is_image_body(RawRequest(png, None))  # magic bytes, no content type
    assert codecs.is_image_body(RawRequest(b"xx", "image/jpeg"))
    assert not codecs.is_image_body(RawRequest(b"{}", "application/json"))


# ---- JSON out -----------------------------------------------------------------
def test_float_rows_json_prints_every_float32_exactly():
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.standard_normal(2000) * 10.0 ** rng.integers(-30, 30, 2000),
            [0.0, -0.0, 1.0, -1.0, 1e-45, -1e-45, 3.4028235e38, -3.4028235e38, 1.1754944e-38],
        ]
    ).astype(np.float32)
    rows = values[: len(values) // 7 * 7].reshape(-1, 7)
    texts = codecs.float_rows_json(rows)
    parsed = [json.loads(t) for t in texts]
    assert all(type(v) is float for row in parsed for v in row)  # 0.0 is not read as 0
    back = np.array(parsed, dtype=np.float32)
    assert back.tobytes() == rows.tobytes()  # bit-exact, signed zeros included
    assert all(len(t) < len(json.dumps(r.tolist())) for t, r in zip(texts, rows, strict=True))
    # no integral value (|v| < 1, not 0): the one-format path, just as exact
    small = rng.uniform(0.001, 0.999, (50, 7)) * rng.choice([-1, 1], (50, 7))
    small = (small * 10.0 ** -rng.integers(0, 30, (50, 7))).astype(np.float32)
    assert codecs.float_rows(small)[1] == codecs.FLOAT
    back = np.array([json.loads(t) for t in codecs.float_rows_json(small)], dtype=np.float32)
    assert back.tobytes() == small.tobytes()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_rows_json_refuses_non_finite_values(bad):
    rows = np.zeros((2, 3), np.float32)
    rows[1, 2] = bad
    with pytest.raises(ValueError, match="not JSON compliant"):
        codecs.float_rows_json(rows)


def test_decode_gray_keeps_the_bytes_and_scaling_happens_once():
    arr = np.random.default_rng(1).integers(0, 256, HW, dtype=np.uint8)
    gray, conv = images.decode_gray(png_bytes(arr), HW, "f", LIMITS)
    assert conv is None and gray.dtype == np.uint8 and np.array_equal(gray, arr)
    scaled = images.scale_pixels(gray, 255.0)
    assert scaled.dtype == np.float32 and np.array_equal(scaled, arr.astype(np.float32) / 255)
    assert images.scale_pixels(gray, 200.0).max() <= 1.0  # clipped when uint8/scale > 1
