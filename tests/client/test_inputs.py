"""What encode accepts, and how each kind of image travels (no server)."""

import base64
import gzip
import io

import numpy as np
import pytest
from PIL import Image

from client import InputError
from client.cli import grid, source_labels
from client.inputs import as_items, idx_labels_path, is_idx, read_idx, to_instance
from paths import FASHION_TEST_IMAGES as FASHION_TEST


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
    from training.data import _read_bytes, parse_idx

    ours = read_idx(FASHION_TEST)
    theirs = parse_idx(_read_bytes(FASHION_TEST))
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
    with pytest.raises(InputError, match="N x 1 x H x W"):
        as_items(np.zeros((2, 3, 28, 28)))
    with pytest.raises(InputError, match="cannot encode a dict"):
        as_items({"a": 1})


def test_uint8_travels_as_lossless_png_and_floats_as_pixels():
    img = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    inst = to_instance(img)
    assert np.array_equal(png_decode(inst["image_b64"]), img)
    floats = img.astype(np.float32) / 255
    assert np.array_equal(np.asarray(to_instance(floats)["pixels"], np.float32), floats)
    with pytest.raises(InputError, match="uint8"):
        to_instance(img.astype(np.int32))


def test_files_travel_as_their_own_bytes_and_folders_sort(tmp_path):
    for cls, names in {"bag": ["b.png", "a.png"], "coat": ["c.jpg"]}.items():
        (tmp_path / cls).mkdir()
        for name in names:
            Image.new("RGB", (40, 30), (9, 9, 9)).save(tmp_path / cls / name)
    (tmp_path / "notes.txt").write_text("ignored")
    items = as_items(tmp_path)
    assert [p.name for p in items] == ["a.png", "b.png", "c.jpg"]
    raw = base64.b64decode(to_instance(items[2])["image_b64"])
    assert raw == (tmp_path / "coat" / "c.jpg").read_bytes()
    assert source_labels(tmp_path, 3).tolist() == ["bag", "bag", "coat"]
    (tmp_path / "fake.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="not a PNG or JPEG"):
        to_instance(tmp_path / "fake.png")
    with pytest.raises(InputError, match="no such file"):
        as_items(tmp_path / "missing")


def test_grid_tiles_row_by_row():
    tiles = [Image.new("L", (2, 3), v) for v in (10, 20, 30)]
    out = grid(tiles, zoom=2)
    assert out.size == (8, 12)  # 2 columns, 2 rows, zoomed x2
    arr = np.asarray(out)
    assert arr[0, 0] == 10 and arr[0, 4] == 20 and arr[6, 0] == 30 and arr[6, 4] == 0
