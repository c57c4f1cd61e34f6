"""Datasets of your own images: a folder of PNG/JPEG files, one image, a .npy array
or an IDX images file, as a `Dataset` (`load_image_source`).

Every image is converted to the model's (C, H, W) as the server converts uploads
(training/sources.py), giving uint8 (N, C, H, W).

Splits:
- a folder with `train/` and `test/` subfolders: those are the splits;
- any other folder, or a file: one pool, split into train / test by a seeded
  shuffle (`test_fraction`, seed SPLIT_SEED, whatever the training seed, so
  every model of that data is tested on the same images).
Labels come from the first-level subfolder names (of the folder, or of train/
and test/) when every image sits in one and there are at least two; else the
data is unlabelled and label-based metrics are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.dataset import Dataset, Split
from training.sources import (
    SourceError,
    check_shape,
    list_image_files,
    read_image_folder,
    read_images,
    source_sha256,
)

SPLIT_SEED = 0  # the test split of a pool of images, whatever the training seed
TEST_FRACTION = 0.1


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
