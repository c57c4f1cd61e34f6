"""Images in and out: PNG/JPEG bytes to the model's pixels, pixels to PNG.

A model's images are 8-bit grayscale ('L', one channel) or RGB (three), of its
manifest's size. Arrays here hold them as image libraries do: (H, W) for one
channel, (H, W, 3) for colour; `handlers.wire.inputs` puts the channel axis first
for the model.

Pixel scaling is the manifest's (`divide_by`, 255 for the shipped models):
uint8 / divide_by gives the float images the models saw in training. Every
failure raises `RequestError` naming the field.

Reading has a fast path for what clients send most: a plain PNG (8-bit
grayscale, not interlaced, only IHDR/IDAT/IEND chunks, right CRCs) of exactly
the model's size. Its IDAT stream goes straight to Pillow's own PNG ("zip")
decompressor through the public `Image.frombytes`, which skips Pillow's Python
plugin machinery (for images this small, most of the time) and gives the same
pixels: the same C code reads the same bytes, and a test compares the two paths
on valid and broken files. Anything else takes Pillow's full path.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
from PIL import Image, UnidentifiedImageError

from handlers.errors import RequestError
from handlers.limits import Limits

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GRAY8 = (8, 0, 0, 0, 0)  # IHDR: bit depth 8, colour type gray, deflate, filter 0, no interlace


def plain_gray_png(data: bytes, hw: tuple[int, int]) -> bytes | None:
    """The IDAT stream of a plain 8-bit grayscale PNG of size `hw`, else None.

    Plain: signature, IHDR first, then only IDAT chunks, then an empty IEND that
    ends the data, every CRC right. Anything else (other chunks, another size or
    mode, interlacing, trailing bytes, a bad CRC) returns None, and the caller
    lets Pillow read the file with its own checks and error messages.
    """
    if not data.startswith(PNG_SIGNATURE):
        return None
    pos, end, idat = len(PNG_SIGNATURE), len(data), []
    while pos + 12 <= end:
        length, kind = struct.unpack_from(">I4s", data, pos)
        stop = pos + 12 + length
        if stop > end:
            return None
        (crc,) = struct.unpack_from(">I", data, stop - 4)
        if zlib.crc32(data[pos + 4 : stop - 4]) != crc:
            return None
        if pos == len(PNG_SIGNATURE):
            if kind != b"IHDR" or length != 13:
                return None
            w, h, *rest = struct.unpack_from(">IIBBBBB", data, pos + 8)
            if (h, w) != tuple(hw) or tuple(rest) != _GRAY8:
                return None
        elif kind == b"IDAT":
            idat.append(data[pos + 8 : stop - 4])
        elif kind == b"IEND":
            return b"".join(idat) if idat and length == 0 and stop == end else None
        else:
            return None
        pos = stop
    return None


def _flatten(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer images -> 'L'; transparency composited onto black (RGBA)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        return Image.fromarray(np.clip(np.rint(arr / peak * 255), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return img


def _to_gray(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit grayscale 'L'; transparency composites onto black."""
    return _flatten(img).convert("L")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit 'RGB' (grayscale replicated); transparency onto black."""
    return _flatten(img).convert("RGB")


CONVERT = {"L": _to_gray, "RGB": _to_rgb}


def read_image(
    data: bytes, hw: tuple[int, int], field: str, limits: Limits, mode: str = "L"
) -> tuple[np.ndarray, dict | None]:
    """PNG/JPEG bytes -> (uint8 pixels of `mode` and size `hw`: H x W for 'L', H x W x 3
    for 'RGB'; converted_from or None).

    No float work: scaling happens once per request (`scale_pixels`).
    """
    if len(data) > limits.max_image_bytes:
        raise RequestError(
            "payload_too_large",
            field,
            f"{len(data)} bytes; an image may have at most {limits.max_image_bytes} bytes",
        )
    h, w = hw
    idat = plain_gray_png(data, hw) if mode == "L" else None
    if idat is not None:
        try:
            img = Image.frombytes("L", (w, h), idat, "zip", "L")
        except (OSError, ValueError, zlib.error) as err:
            raise RequestError("bad_image", field, f"image could not be decoded: {err}") from None
        return np.frombuffer(img.tobytes(), dtype=np.uint8).reshape(h, w), None
    return read_image_with_pillow(data, hw, field, limits, mode)


def read_image_with_pillow(
    data: bytes, hw: tuple[int, int], field: str, limits: Limits, mode: str = "L"
) -> tuple[np.ndarray, dict | None]:
    """`read_image` through Pillow's full path: any PNG or JPEG, converted if needed."""
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:  # its text names the BytesIO object, not the data
        kind = "empty" if not data else f"{len(data)} bytes of no image format Pillow knows"
        raise RequestError(
            "bad_image", field, f"not a readable PNG or JPEG image ({kind})"
        ) from None
    except (OSError, ValueError) as err:
        raise RequestError("bad_image", field, f"not a readable PNG or JPEG image: {err}") from None
    if img.format not in ("PNG", "JPEG"):
        raise RequestError("bad_image", field, f"only PNG and JPEG are accepted, got {img.format}")
    width, height = img.size
    if width * height > limits.max_image_pixels:
        raise RequestError(
            "payload_too_large",
            field,
            f"{width}x{height} pixels; at most {limits.max_image_pixels} pixels per image",
        )
    try:
        img.load()
        h, w = hw
        converted = None
        if img.mode != mode or img.size != (w, h):
            converted = {"mode": img.mode, "width": width, "height": height}
            img = CONVERT[mode](img)
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.LANCZOS)
        shape = (h, w) if mode == "L" else (h, w, 3)
        arr = np.frombuffer(img.tobytes(), dtype=np.uint8).reshape(shape)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise RequestError("bad_image", field, f"image could not be decoded: {err}") from None
    return arr, converted


def scale_pixels(gray: np.ndarray, scale: float) -> np.ndarray:
    """uint8 grayscale (any shape) -> float32 uint8 / scale, in [0, 1]."""
    out = gray.astype(np.float32)
    out /= np.float32(scale)
    if scale < 255:  # only then can uint8 / scale exceed 1
        np.clip(out, 0.0, 1.0, out=out)
    return out


def to_uint8(pixels: np.ndarray, scale: float) -> np.ndarray:
    """Floats in [0, 1] (any shape) -> uint8 pixels: round(clip(x * scale, 0, 255))."""
    return np.clip(np.rint(np.asarray(pixels, dtype=np.float64) * scale), 0, 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray, scale: float) -> bytes:
    """H x W (grayscale) or H x W x 3 (RGB) floats in [0, 1] -> an 8-bit PNG file."""
    arr = to_uint8(pixels, scale)
    buf = io.BytesIO()
    Image.fromarray(arr, "L" if arr.ndim == 2 else "RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_png(pixels: np.ndarray, scale: float) -> str:
    """`png_bytes` as base64 text (the JSON API's `image_b64`)."""
    return base64.b64encode(png_bytes(pixels, scale)).decode("ascii")
