"""handlers/wire/images.py: PNG/JPEG in (any mode and size, converted and reported), PNG out;
the plain-PNG fast path gives exactly what Pillow's full path gives, on valid files
of many kinds and on broken ones, and falls back when it must."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from handlers.errors import RequestError
from handlers.limits import LIMITS, Limits
from handlers.wire import images
from tests.handlers.tiny import rejects

HW = (28, 28)


def png(arr: np.ndarray, mode: str = "L", **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG", **save)
    return buf.getvalue()


def jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, format="JPEG")
    return buf.getvalue()


def read_scaled(data: bytes, field: str = "f", limits: Limits = LIMITS):
    """What encode makes of one image: uint8 gray, then scaled to [0, 1]."""
    gray, converted = images.read_image(data, HW, field, limits)
    return images.scale_pixels(gray, 255.0), converted


def png16(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")  # uint16 -> a 16-bit grayscale PNG
    return buf.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def outcome(fn, data: bytes):
    try:
        arr, conv = fn(data, HW, "f", LIMITS)
    except RequestError as err:
        return ("error", err.code)
    return ("ok", arr.tobytes(), conv)


def test_gray_png_of_model_size_is_exact_and_not_converted():
    arr = np.arange(784, dtype=np.uint8).reshape(28, 28)
    got, conv = read_scaled(png(arr), "body", LIMITS)
    assert conv is None
    np.testing.assert_array_equal(got, arr.astype(np.float32) / np.float32(255.0))


def test_rgb_of_other_size_is_converted_and_reported():
    rgb = np.zeros((64, 48, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red -> gray 76 (ITU-R 601-2 luma)
    got, conv = read_scaled(png(rgb, "RGB"))
    assert conv == {"mode": "RGB", "width": 48, "height": 64}
    assert got.shape == HW and np.allclose(got, 76 / 255, atol=1 / 255)


def test_transparent_pixels_become_black():
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[:14, :, 3] = 255  # top half opaque white, bottom half transparent white
    got, conv = read_scaled(png(rgba, "RGBA"))
    assert conv["mode"] == "RGBA"
    assert np.all(got[:14] == 1.0) and np.all(got[14:] == 0.0)


def test_16_bit_png_is_scaled():
    arr16 = np.full((28, 28), 65535, dtype=np.uint16)
    img = Image.fromarray(arr16)  # mode I;16
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    got, conv = read_scaled(buf.getvalue(), "f", LIMITS)
    assert conv is not None and np.all(got == 1.0)


def test_jpeg_is_accepted():
    arr = np.full((28, 28), 128, dtype=np.uint8)
    got, conv = read_scaled(jpeg(arr))
    assert conv is None and np.allclose(got, 128 / 255, atol=2 / 255)


def test_bad_images():
    rejects("bad_image", "f", read_scaled, b"not an image", "f", LIMITS)
    gif = io.BytesIO()
    Image.new("L", (28, 28)).save(gif, format="GIF")
    err = rejects("bad_image", "f", read_scaled, gif.getvalue(), "f", LIMITS)
    assert "GIF" in err.message
    truncated = png(np.zeros((28, 28), np.uint8))[:-30]
    rejects("bad_image", "f", read_scaled, truncated, "f", LIMITS)


def test_image_size_limits():
    big = png(np.zeros((100, 100), np.uint8))
    tight = Limits(max_image_pixels=99 * 99)
    rejects("payload_too_large", "f", read_scaled, big, "f", tight)
    rejects("payload_too_large", "f", read_scaled, big, "f", Limits(max_image_bytes=10))


def test_png_write_read_round_trip():
    arr = np.random.default_rng(0).random(HW)
    data = base64.b64decode(images.write_png(arr, 255.0))
    back, conv = read_scaled(data, "f", LIMITS)
    assert conv is None and np.abs(back - arr).max() <= 0.5 / 255 + 1e-6


def test_read_image_keeps_the_bytes_and_scaling_happens_once():
    arr = np.random.default_rng(1).integers(0, 256, HW, dtype=np.uint8)
    gray, conv = images.read_image(png(arr), HW, "f", LIMITS)
    assert conv is None and gray.dtype == np.uint8 and np.array_equal(gray, arr)
    scaled = images.scale_pixels(gray, 255.0)
    assert scaled.dtype == np.float32 and np.array_equal(scaled, arr.astype(np.float32) / 255)
    assert images.scale_pixels(gray, 200.0).max() <= 1.0  # clipped when uint8/scale > 1


def valid_pngs() -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for seed in range(40):  # noise, smooth ramps, flat, sparse: every PNG filter type
        kind = seed % 4
        if kind == 0:
            arr = rng.integers(0, 256, HW, dtype=np.uint8)
        elif kind == 1:
            arr = (np.add.outer(np.arange(28), np.arange(28)) * (seed + 1) % 256).astype(np.uint8)
        elif kind == 2:
            arr = np.full(HW, seed * 6, np.uint8)
        else:
            arr = (rng.random(HW) > 0.8).astype(np.uint8) * 255
        out.append(png(arr, compress_level=seed % 10, optimize=seed % 3 == 0))
    return out


def test_fast_path_takes_plain_pngs_and_matches_pillow():
    for data in valid_pngs():
        assert images.plain_gray_png(data, HW) is not None
        fast, full = outcome(images.read_image, data), outcome(images.read_image_with_pillow, data)
        assert fast[0] == "ok" and fast == full


def test_fast_path_matches_pillow_on_broken_files():
    rng = np.random.default_rng(1)
    base = valid_pngs()
    broken = []
    for i, data in enumerate(base[:20]):
        idat_at = data.index(b"IDAT") - 4
        length = struct.unpack_from(">I", data, idat_at)[0]
        body = data[idat_at + 8 : idat_at + 8 + length]
        head, tail = data[:idat_at], data[idat_at + 12 + length :]
        flipped = bytearray(body)
        flipped[rng.integers(0, len(body))] ^= 0xFF
        broken += [
            head + chunk(b"IDAT", bytes(flipped)) + tail,  # corrupt deflate data, right CRC
            head + chunk(b"IDAT", body[: len(body) // 2]) + tail,  # truncated stream
            head + chunk(b"IDAT", body[:2]) + chunk(b"IDAT", body[2:]) + tail,  # split: valid
            head + chunk(b"IDAT", zlib.compress(bytes(28 * 29 - 5 * i))) + tail,  # too short
            head + chunk(b"IDAT", zlib.compress(bytes(28 * 29 + 100))) + tail,  # too long
            data[:-1],  # cut inside IEND
            data[: idat_at + 12 + length // 2],  # cut inside IDAT, no IEND
        ]
    fast = errors = 0
    for data in broken:
        got = outcome(images.read_image, data)
        assert got == outcome(images.read_image_with_pillow, data)
        fast += images.plain_gray_png(data, HW) is not None
        errors += got[0] == "error"
    assert fast == 5 * 20  # the broken streams inside well-formed chunks took the fast path
    assert errors >= 3 * 20, errors  # many were refused, exactly as Pillow refuses them


@pytest.mark.parametrize(
    "variant",
    ["rgb", "size", "interlaced", "gamma", "bad_crc", "trailing", "16bit"],
)
def test_anything_not_plain_goes_to_pillow(variant):
    arr = np.random.default_rng(2).integers(0, 256, HW, dtype=np.uint8)
    data = {
        "rgb": lambda: png(np.stack([arr] * 3, -1), "RGB"),
        "size": lambda: png(arr[:20]),
        "interlaced": lambda: _interlaced(arr),
        "gamma": lambda: _with_chunk(png(arr), b"gAMA", struct.pack(">I", 45455)),
        "bad_crc": lambda: png(arr)[:-5] + b"\x00" + png(arr)[-4:],
        "trailing": lambda: png(arr) + b"\x00",
        "16bit": lambda: png16(arr.astype(np.uint16) * 257),
    }[variant]()
    assert images.plain_gray_png(data, HW) is None
    assert outcome(images.read_image, data) == outcome(images.read_image_with_pillow, data)


def _with_chunk(data: bytes, kind: bytes, body: bytes) -> bytes:
    at = data.index(b"IDAT") - 4  # an ancillary chunk before the image data
    return data[:at] + chunk(kind, body) + data[at:]


def _interlaced(arr: np.ndarray) -> bytes:
    """The same image as an Adam7-interlaced PNG (Pillow cannot write those)."""
    data = png(arr)
    ihdr = bytearray(data[16:29])
    ihdr[12] = 1
    rows = []
    for sy, sx, dy, dx in ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2),
                           (0, 1, 2, 2), (1, 0, 2, 1)):  # fmt: skip
        sub = arr[sy::dy, sx::dx]
        if sub.size:
            rows += [b"\x00" + bytes(r) for r in sub]
    return (
        data[:8]
        + chunk(b"IHDR", bytes(ihdr))
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


def test_interlaced_png_reads_the_same_either_way():
    arr = np.random.default_rng(3).integers(0, 256, HW, dtype=np.uint8)
    gray, conv = images.read_image(_interlaced(arr), HW, "f", LIMITS)
    assert np.array_equal(gray, arr) and conv is None
