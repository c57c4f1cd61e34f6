"""The command line's files: reading a source (and its labels), writing images and grids."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from client import inputs
from client.errors import InputError


def grid(images: list[Image.Image], cols: int | None = None, zoom: int = 1) -> Image.Image:
    """Tile equal-size images row by row (cols defaults to ceil(sqrt(n))), in the mode
    of the first image (L or RGB), on black."""
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    w, h = images[0].size
    mode = images[0].mode
    out = Image.new(mode, (cols * w, rows * h), 0)
    for i, img in enumerate(images):
        out.paste(img if img.mode == mode else img.convert(mode), ((i % cols) * w, (i // cols) * h))
    if zoom > 1:
        out = out.resize((out.width * zoom, out.height * zoom), Image.Resampling.NEAREST)
    return out


def save_images(images, out: Path, cols: int | None, zoom: int) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, images)
        return f"{out} ({' x '.join(map(str, images.shape))} float32)"
    tiled = grid(images, cols, zoom)
    tiled.save(out)
    return f"{out} ({len(images)} image{'s' * (len(images) > 1)}, {tiled.width}x{tiled.height})"


def source_labels(source: Path, count: int) -> np.ndarray | None:
    """Labels of an embed source: the IDX labels file beside it, or class sub-folder names."""
    if source.is_dir():
        files = inputs.folder_images(source)
        return np.asarray([str(p.parent.relative_to(source)) for p in files])
    labels_path = inputs.idx_labels_path(source) if inputs.is_idx(source) else None
    if labels_path is None:
        return None
    labels = inputs.read_idx(labels_path)
    if labels.shape != (count,):
        raise InputError(f"{labels_path}: {labels.shape[0]} labels for {count} images")
    return labels


def read_source(args: argparse.Namespace) -> tuple[Sequence, np.ndarray | None]:
    """embed's and score's images, and their labels when --labels-out asks for them."""
    source = Path(args.source)
    items = inputs.as_items(source)
    labels = None
    if args.labels_out:
        labels = source_labels(source, len(items))
        if labels is None:
            raise InputError(
                f"{source}: no labels found (an IDX images file needs its *-labels-idx1-ubyte "
                "file beside it; a folder gives its sub-folder names)"
            )
    return items, labels
