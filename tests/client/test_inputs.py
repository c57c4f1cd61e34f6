"""What encode accepts, and how each kind of image travels (no server)."""

import base64
import gzip
import io

import numpy as np
import pytest
from PIL import Image

from client import InputError
from client.cli_files import grid, source_labels
from client.inputs import as_items, idx_labels_path, is_idx, read_idx
from client.pixels import to_instance, to_pixels, to_tensor
from paths import FASHION_TEST_IMAGES as FASHION_TEST

GRAY = (1, 28, 28)  # a shipped model's image shape (C, H, W)


def idx_bytes(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def png_decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_idx_reader_agrees_with_training_parser_on_the_real_test_set():
    if not FASHION_TEST.exists():
        pytest.fail(
            f"{FASHION_TEST} missing: run `make setup` (apt-get install dataset-fashion-mnist)"
        )
    from training import sources as data  # the IDX parser and reader live there

    read_bytes = getattr(data, "read_bytes", None) or data._read_bytes  # its name moved
    ours = read_idx(FASHION_TEST)
    theirs = data.parse_idx(read_bytes(FASHION_TEST))
    assert ours.shape == (10_000, 28, 28)
    assert np.array_equal(ours, theirs)
    labels = idx_labels_path(FASHION_TEST)
    assert labels is not None and read_idx(labels).shape == (10_000,)


def test_idx_plain_and_gzipped_and_corrupt(tmp_path):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    (tmp_path / "a-images-idx3-ubyte").write_bytes(idx_bytes(arr))
    (tmp_path / "b.gz").write_bytes(gzip.compress(idx_bytes(arr)))
    for name in ("a-images-idx3-ubyte", "b.gz"):
        assert is_idx(tmp_path / name)
        assert np.array_equal(read_idx(tmp_path / name), arr)
    assert len(as_items(tmp_path / "b.gz")) == 2
    (tmp_path / "bad").write_bytes(idx_bytes(arr)[:-1])
    with pytest.raises(InputError, match="do not match"):
        read_idx(tmp_path / "bad")
    (tmp_path / "notgz.gz").write_bytes(b"\x1f\x8bnot gzip at all")
    with pytest.raises(InputError, match="corrupt gzip"):
        read_idx(tmp_path / "notgz.gz")


def test_arrays_expand_to_single_images():
    assert len(as_items(np.zeros((28, 28), np.uint8))) == 1
    assert len(as_items(np.zeros((5, 28, 28), np.uint8))) == 5
    assert len(as_items(np.zeros((5, 1, 28, 28), np.float32))) == 5
    mixed = as_items([np.zeros((3, 28, 28), np.uint8), Image.new("L", (28, 28)), np.ones((28, 28))])
    assert len(mixed) == 5
    assert isinstance(mixed[3], Image.Image) and mixed[4].dtype == np.float64
    assert len(mixed[1:4]) == 3
    with pytest.raises(InputError, match="N x C x H x W"):
        as_items(np.zeros((2, 5, 28, 28)))
    with pytest.raises(InputError, match="cannot encode a dict"):
        as_items({"a": 1})


def test_uint8_travels_as_lossless_png_and_floats_as_pixels():
    img = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    inst = to_instance(img, GRAY)
    assert np.array_equal(png_decode(inst["image_b64"]), img)
    floats = img.astype(np.float32) / 255
    assert np.array_equal(np.asarray(to_instance(floats, GRAY)["pixels"], np.float32), floats)
    with pytest.raises(InputError, match="uint8"):
        to_instance(img.astype(np.int32), GRAY)


def test_files_travel_as_their_own_bytes_and_folders_sort(tmp_path):
    for cls, names in {"bag": ["b.png", "a.png"], "coat": ["c.jpg"]}.items():
        (tmp_path / cls).mkdir()
        for name in names:
            Image.new("RGB", (40, 30), (9, 9, 9)).save(tmp_path / cls / name)
    (tmp_path / "notes.txt").write_text("ignored")
    items = as_items(tmp_path)
    assert [p.name for p in items] == ["a.png", "b.png", "c.jpg"]
    raw = base64.b64decode(to_instance(items[2], GRAY)["image_b64"])
    assert raw == (tmp_path / "coat" / "c.jpg").read_bytes()
    assert source_labels(tmp_path, 3).tolist() == ["bag", "bag", "coat"]
    (tmp_path / "fake.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="not a PNG or JPEG"):
        to_instance(tmp_path / "fake.png", GRAY)
    with pytest.raises(InputError, match="no such file"):
        as_items(tmp_path / "missing")


def test_grid_tiles_row_by_row():
    tiles = [Image.new("L", (2, 3), v) for v in (10, 20, 30)]
    out = grid(tiles, zoom=2)
    assert out.size == (8, 12)  # 2 columns, 2 rows, zoomed x2
    arr = np.asarray(out)
    assert arr[0, 0] == 10 and arr[0, 4] == 20 and arr[6, 0] == 30 and arr[6, 4] == 0


# ---- tensors (the Open Inference Protocol) ----------------------------------
def _uploads() -> dict[str, Image.Image]:
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, (56, 40, 3), dtype=np.uint8), "RGB")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (56, 40), dtype=np.uint8), "L"))
    palette = rgb.convert("P")
    palette.info["transparency"] = 3
    return {
        "gray 28x28": Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L"),
        "gray 40x30": Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8), "L"),
        "rgb 40x56": rgb,
        "rgba": rgba,
        "gray + alpha": rgba.convert("LA"),
        "palette with transparency": palette,
        "16-bit": Image.fromarray(rng.integers(0, 65536, (28, 28), dtype=np.uint16)),
        "bilevel": rgb.convert("1"),
    }


@pytest.mark.parametrize("kind", sorted(_uploads()))
def test_images_become_the_pixels_the_server_makes_of_the_same_upload(kind, tmp_path):
    """The server converts a JSON API upload (handlers/wire/images.py); over the protocol the
    client converts the same file itself: both must give the same uint8 pixels."""
    from handlers.limits import LIMITS
    from handlers.wire.images import read_image

    img = _uploads()[kind]
    path = tmp_path / "up.png"
    img.save(path)
    for shape in (GRAY, (3, 40, 40), (3, 28, 20)):
        c, h, w = shape
        mode = "L" if c == 1 else "RGB"
        field = "instances[0].image_b64"
        server, _ = read_image(path.read_bytes(), (h, w), field, LIMITS, mode)
        for item in (path, img):
            pixels = to_pixels(item, shape)
            want = (h, w) if c == 1 else (h, w, c)
            assert pixels.dtype == np.uint8 and pixels.shape == want
            why = f"{kind} as {type(item).__name__} for {shape}"
            np.testing.assert_array_equal(pixels, server, err_msg=why)
        jpeg = tmp_path / "up.jpg"
        img.convert("RGB").save(jpeg, quality=90)
        server, _ = read_image(jpeg.read_bytes(), (h, w), field, LIMITS, mode)
        np.testing.assert_array_equal(to_pixels(jpeg, shape), server)


def test_tensors_are_uint8_for_8_bit_images_and_float_otherwise(tmp_path):
    batch = np.arange(3 * 28 * 28, dtype=np.uint32).reshape(3, 28, 28).astype(np.uint8)
    assert to_tensor(batch, GRAY) is batch  # an IDX file's chunk: no copy
    path = tmp_path / "a.png"
    Image.fromarray(batch[1], "L").save(path)
    mixed = to_tensor([batch[0], path, Image.fromarray(batch[2], "L")], GRAY)
    assert mixed.dtype == np.uint8 and np.array_equal(mixed, batch)
    # uint8 of another size is resized like an upload
    assert to_tensor([np.zeros((56, 56), np.uint8)], GRAY).shape == (1, 28, 28)
    # floats in [0, 1] go as float32; 8-bit images beside them as uint8 / 255
    floats = to_tensor([batch[0] / 255.0, batch[1]], GRAY)
    assert floats.dtype == np.float32
    np.testing.assert_array_equal(floats[1], batch[1].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(floats[0], (batch[0] / 255.0).astype(np.float32))
    # out of range (or NaN): the caller's own float64, for the server to refuse and name
    for bad in (1.5, -0.1, np.nan):
        img = np.full((28, 28), 0.5)
        img[4, 5] = bad
        out = to_tensor([img], GRAY)
        assert out.dtype == np.float64 and np.array_equal(out[0], img, equal_nan=True)
    assert to_tensor([np.ones((28, 28), bool)], GRAY).dtype == np.float32


def test_tensor_inputs_that_cannot_be_sent_fail_before_sending(tmp_path):
    with pytest.raises(InputError, match="a float image must be 28 x 28"):
        to_tensor([np.zeros((30, 30), np.float32)], GRAY)
    with pytest.raises(InputError, match="a float image must be 40 x 40 x 3"):
        to_tensor([np.zeros((40, 40), np.float32)], (3, 40, 40))
    with pytest.raises(InputError, match="integer images must be uint8"):
        to_tensor([np.zeros((28, 28), np.int32)], GRAY)
    with pytest.raises(InputError, match="H x W"):
        to_pixels(np.zeros((2, 28, 28)), GRAY)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"GIF89a")
    with pytest.raises(InputError, match="not a PNG or JPEG"):
        to_pixels(bad, GRAY)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(InputError, match="could not be read"):
        to_pixels(bad, GRAY)
