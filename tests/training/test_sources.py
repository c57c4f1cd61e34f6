"""training/sources.py: folders, IDX and .npy read into a model's pixels, converted as the
server converts uploads (the same pixels as handlers/wire/images.py), with clear errors."""

from __future__ import annotations

import gzip
import io
import struct

import numpy as np
import pytest
from PIL import Image

from handlers.limits import Limits
from handlers.wire.images import read_image, read_image_with_pillow
from training.sources import (
    SourceError,
    convert_array,
    read_image_file,
    read_image_folder,
    read_images,
    source_sha256,
)

RNG = np.random.default_rng(0)


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _inputs() -> dict[str, bytes]:
    """One image of every mode the conversion handles, 20 x 13 pixels."""
    w, h = 20, 13
    rgb = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    gray = RNG.integers(0, 256, (h, w), dtype=np.uint8)
    alpha = RNG.integers(0, 256, (h, w), dtype=np.uint8)
    palette = Image.fromarray(rgb).quantize(16)
    with_transparency = palette.copy()
    with_transparency.info["transparency"] = 3
    return {
        "L": _png(Image.fromarray(gray)),
        "RGB": _png(Image.fromarray(rgb)),
        "RGBA": _png(Image.fromarray(np.dstack([rgb, alpha]))),
        "LA": _png(Image.fromarray(np.dstack([gray, alpha])).convert("LA")),
        "P": _png(palette),
        "P+transparency": _png(with_transparency, transparency=3),
        "I;16": _png(Image.fromarray(RNG.integers(0, 65536, (h, w), dtype=np.uint16))),
        "1": _png(Image.fromarray(gray > 128)),
        "JPEG RGB": _jpeg(Image.fromarray(rgb)),
        "JPEG L": _jpeg(Image.fromarray(gray)),
        "JPEG CMYK": _jpeg(Image.fromarray(rgb).convert("CMYK")),
    }


INPUTS = _inputs()


@pytest.mark.parametrize("shape", [(1, 13, 20), (1, 28, 28), (3, 13, 20), (3, 40, 24)])
@pytest.mark.parametrize("kind", INPUTS)
def test_conversion_gives_the_servers_pixels(kind, shape, tmp_path):
    data = INPUTS[kind]
    c, h, w = shape
    mode = "L" if c == 1 else "RGB"
    served, _ = read_image_with_pillow(data, (h, w), "x", Limits(), mode)
    fast, _ = read_image(data, (h, w), "x", Limits(), mode)
    path = tmp_path / ("x.jpg" if kind.startswith("JPEG") else "x.png")
    path.write_bytes(data)
    ours = read_image_file(path, shape)
    assert ours.shape == shape and ours.dtype == np.uint8
    want = served[None] if c == 1 else served.transpose(2, 0, 1)
    assert np.array_equal(ours, want), kind
    assert np.array_equal(fast, served)


def test_transparency_and_16_bit_rules(tmp_path):
    """Spelled out: transparent pixels become black, 16-bit pixels scale by 255/65535."""
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 255, 255, 255)  # opaque white
    rgba[0, 1] = (255, 0, 0, 0)  # fully transparent red
    Image.fromarray(rgba).save(tmp_path / "a.png")
    gray = read_image_file(tmp_path / "a.png", (1, 2, 2))[0]
    assert gray[0, 0] == 255 and gray[0, 1] == 0
    assert read_image_file(tmp_path / "a.png", (3, 2, 2))[:, 0, 1].tolist() == [0, 0, 0]
    Image.fromarray(np.array([[0, 65535, 32768]], dtype=np.uint16)).save(tmp_path / "b.png")
    assert read_image_file(tmp_path / "b.png", (1, 1, 3)).ravel().tolist() == [0, 255, 128]


def test_folder_of_mixed_sizes_and_modes_nested_and_sorted(tmp_path):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    Image.new("RGB", (50, 30), (200, 10, 10)).save(tmp_path / "b" / "deep" / "z.png")
    Image.new("L", (28, 28), 77).save(tmp_path / "a" / "y.jpg")
    Image.new("RGBA", (10, 10), (0, 255, 0, 255)).save(tmp_path / "top.png")
    Image.new("P", (5, 9)).save(tmp_path / "a" / "x.PNG")
    (tmp_path / ".hidden").mkdir()
    Image.new("L", (5, 5)).save(tmp_path / ".hidden" / "skip.png")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="skipped 1 file.*notes.txt"):
        images, paths = read_image_folder(tmp_path, (3, 16, 16))
    assert paths == ["a/x.PNG", "a/y.jpg", "b/deep/z.png", "top.png"]
    assert images.shape == (4, 3, 16, 16) and images.dtype == np.uint8
    assert images[1, :, 8, 8].tolist() == [77, 77, 77]  # gray replicated
    assert images[2, :, 8, 8].tolist() == [200, 10, 10]
    assert images[3, :, 8, 8].tolist() == [0, 255, 0]
    with pytest.warns(UserWarning):
        gray = read_images(tmp_path, (1, 8, 8))
    assert gray.shape == (4, 1, 8, 8)
    assert read_images(tmp_path / "top.png", (1, 8, 8)).shape == (1, 1, 8, 8)


def test_errors_name_the_path(tmp_path):
    with pytest.raises(ValueError, match=rf"{tmp_path / 'nope'}: not found"):
        read_images(tmp_path / "nope", (1, 28, 28))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no PNG or JPEG images"):
        read_images(tmp_path / "empty", (1, 28, 28))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(SourceError, match="broken.png: not a readable PNG or JPEG"):
        read_images(bad, (1, 28, 28))
    (bad / "broken.png").unlink()
    Image.new("L", (4, 4)).save(bad / "gif.png", format="GIF")
    with pytest.raises(ValueError, match="gif.png: only PNG and JPEG are read, this is GIF"):
        read_images(bad, (1, 28, 28))
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="x.txt: bad IDX magic"):
        read_images(tmp_path / "x.txt", (1, 28, 28))
    with pytest.raises(ValueError, match="C in"):
        read_images(bad, (2, 28, 28))


def _idx(images: np.ndarray) -> bytes:
    return (
        struct.pack(">BBBB", 0, 0, 8, images.ndim)
        + struct.pack(f">{images.ndim}I", *images.shape)
        + images.tobytes()
    )


def test_idx_files_gzipped_or_not(tmp_path):
    images = RNG.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    (tmp_path / "x-idx3-ubyte").write_bytes(_idx(images))
    (tmp_path / "x-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
    for name in ("x-idx3-ubyte", "x-idx3-ubyte.gz"):
        got = read_images(tmp_path / name, (1, 28, 28))
        assert np.array_equal(got, images[:, None])
    rgb = read_images(tmp_path / "x-idx3-ubyte", (3, 28, 28))
    assert np.array_equal(rgb, np.repeat(images[:, None], 3, axis=1))
    small = read_images(tmp_path / "x-idx3-ubyte.gz", (1, 14, 14))
    want = np.asarray(Image.fromarray(images[2]).resize((14, 14), Image.Resampling.LANCZOS))
    assert np.array_equal(small[2, 0], want)
    (tmp_path / "labels").write_bytes(_idx(np.arange(6, dtype=np.uint8)))
    with pytest.raises(ValueError, match="labels: 1-D IDX data"):
        read_images(tmp_path / "labels", (1, 28, 28))


def test_npy_arrays(tmp_path):
    gray = RNG.integers(0, 256, (5, 12, 10), dtype=np.uint8)
    rgb = RNG.integers(0, 256, (5, 12, 10, 3), dtype=np.uint8)

    def read(arr, shape):
        np.save(tmp_path / "a.npy", arr)
        return read_images(tmp_path / "a.npy", shape)

    assert np.array_equal(read(gray, (1, 12, 10)), gray[:, None])
    assert np.array_equal(read(rgb, (3, 12, 10)), rgb.transpose(0, 3, 1, 2))
    assert np.array_equal(read(rgb.transpose(0, 3, 1, 2), (3, 12, 10)), rgb.transpose(0, 3, 1, 2))
    assert np.array_equal(read(gray[..., None], (1, 12, 10)), gray[:, None])
    floats = read(gray / 255.0, (1, 12, 10))
    assert np.array_equal(floats, gray[:, None])
    assert np.array_equal(
        read((rgb / 255.0).astype(np.float32), (3, 12, 10)), read(rgb, (3, 12, 10))
    )
    # RGB -> L by Pillow's own rule, as the server
    want = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in rgb])
    assert np.array_equal(read(rgb, (1, 12, 10))[:, 0], want)
    # (N, 3, 5, 3) could be either: the model's shape decides, else it is refused
    tiny = RNG.integers(0, 256, (2, 3, 5, 3), dtype=np.uint8)
    assert np.array_equal(read(tiny, (3, 5, 3)), tiny)
    assert np.array_equal(read(tiny, (3, 3, 5)), tiny.transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="a.npy: shape .* is ambiguous"):
        read(tiny, (3, 8, 8))
    with pytest.raises(ValueError, match="a.npy: unsupported dtype int32"):
        read(gray.astype(np.int32), (1, 12, 10))
    with pytest.raises(ValueError, match=r"a.npy: float pixels must be finite and in \[0, 1\]"):
        read(gray.astype(np.float32), (1, 12, 10))
    with pytest.raises(ValueError, match="a.npy: unsupported shape"):
        read(gray[0], (1, 12, 10))
    with pytest.raises(ValueError, match="a.npy: shape .* has no channel axis"):
        read(RNG.integers(0, 256, (2, 5, 6, 7), dtype=np.uint8), (1, 6, 7))


def test_array_fast_paths_equal_pillow():
    gray = RNG.integers(0, 256, (3, 9, 7), dtype=np.uint8)
    rgb = RNG.integers(0, 256, (3, 9, 7, 3), dtype=np.uint8)
    as_rgb = np.stack([np.asarray(Image.fromarray(g).convert("RGB")) for g in gray])
    assert np.array_equal(convert_array(gray, (3, 9, 7)), as_rgb.transpose(0, 3, 1, 2))
    assert np.array_equal(convert_array(rgb, (3, 9, 7)), rgb.transpose(0, 3, 1, 2))


def test_checksum_follows_the_images_read(tmp_path):
    Image.new("L", (4, 4), 1).save(tmp_path / "a.png")
    Image.new("L", (4, 4), 2).save(tmp_path / "b.png")
    first = source_sha256(tmp_path)
    assert source_sha256(tmp_path) == first and len(first) == 64
    (tmp_path / "readme.txt").write_text("not read, not hashed")
    assert source_sha256(tmp_path) == first
    (tmp_path / "b.png").rename(tmp_path / "c.png")  # same bytes, another name
    assert source_sha256(tmp_path) != first
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 3), np.uint8))
    assert source_sha256(tmp_path / "x.npy") != source_sha256(tmp_path)
