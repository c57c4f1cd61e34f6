"""Colour images for tests, without a download: Fashion-MNIST tinted per class, as PNG files.

`write_colour_folder(root)` writes the first `n` test images of Fashion-MNIST
(`paths.FASHION_DIR`), each tinted with its class's colour (TINTS) into RGB and
resized to `size` x `size`, as `root/<class>/<index>.png` (or under `train/` and
`test/` with `splits=True`). A model trained on them must get the colours right,
which a grayscale model cannot: they stand in for anyone's own RGB images in the
training, registration and serving tests.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from paths import FASHION_DIR
from training.dataset import CLASS_NAMES
from training.sources import parse_idx, read_bytes

# one clearly different RGB colour per class (0..9)
TINTS = np.array(
    [
        (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
        (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190),
    ],
    dtype=np.float64,
)  # fmt: skip


def class_folders() -> list[str]:
    """Fashion-MNIST's class names as folder names ('T-shirt/top' -> 't-shirt-top')."""
    return [re.sub(r"[^a-z0-9]+", "-", n.lower()).strip("-") for n in CLASS_NAMES["fashion-mnist"]]


def fashion_test(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n Fashion-MNIST test images (n, 28, 28) uint8 and their labels."""
    images = parse_idx(read_bytes(FASHION_DIR / "t10k-images-idx3-ubyte.gz"))[:n]
    labels = parse_idx(read_bytes(FASHION_DIR / "t10k-labels-idx1-ubyte.gz"))[:n]
    return images, labels


def colourise(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N, 28, 28) grayscale -> (N, 28, 28, 3) RGB: each pixel scales its class's tint."""
    tint = TINTS[np.asarray(labels, dtype=np.int64)][:, None, None, :]
    return np.rint(images[..., None].astype(np.float64) / 255.0 * tint).astype(np.uint8)


def colour_images(n: int = 200, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """n tinted images, resized to size x size: ((n, size, size, 3) uint8, labels)."""
    images, labels = fashion_test(n)
    rgb = colourise(images, labels)
    if size != rgb.shape[1]:
        rgb = np.stack(
            [np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.LANCZOS))
             for im in rgb]
        )  # fmt: skip
    return rgb, labels


def write_colour_folder(
    root: Path, n: int = 200, size: int = 32, splits: bool = False, test_every: int = 5
) -> Path:
    """Write `colour_images(n, size)` as PNG files root/<class>/<index>.png; with `splits`,
    every `test_every`-th image under root/test/<class>/ and the others under root/train/."""
    root = Path(root)
    rgb, labels = colour_images(n, size)
    names = class_folders()
    for i, (image, label) in enumerate(zip(rgb, labels, strict=True)):
        part = ("test" if i % test_every == 0 else "train") if splits else ""
        folder = root / part / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    return root
