"""What `LatentClient` hands back: its answers read into numpy arrays or images, and its counters.

Every answer is checked here: JSON of latentserve's shape with exactly the items
asked for, or a `LatentServeError` (the server said 200, but the answer is not
one the client can trust).
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from client.errors import LatentServeError

Progress = Callable[[int], None]  # called with the number of items just finished


@dataclass
class Stats:
    """Counters over the client's life (thread-safe updates)."""

    requests: int = 0  # HTTP attempts sent (inference requests)
    retries: int = 0
    metadata: int = 0  # GETs of the model's metadata (one per operation, and retries)
    items: int = 0  # items answered successfully
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)


@dataclass(frozen=True)
class Encoded:
    """encode's answer, row i for input image i."""

    z_mean: np.ndarray  # (N, D) float32; the AE's code z
    z_log_var: np.ndarray | None  # (N, D) float32; None for an AE
    z: np.ndarray | None = None  # (N, D) float32 with sample=True
    seed: int | None = None  # with sample=True: the seed of the first request

    def __len__(self) -> int:
        return len(self.z_mean)


def read_answer(content: bytes, url: str, items: int) -> dict:
    """A 200 answer's JSON, checked to hold exactly `items` predictions."""
    try:
        answer = json.loads(content)
        preds = answer["predictions"]
    except (ValueError, KeyError, TypeError):
        raise LatentServeError(
            f"answer is not latentserve JSON: {content[:200]!r}", status=200, url=url
        ) from None
    if len(preds) != items:
        raise LatentServeError(
            f"asked for {items} items, the answer has {len(preds)}", status=200, url=url
        )
    return answer


def read_png(b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    img.load()
    return img


def images(
    preds: list[dict],
    as_array: bool,
    shape: tuple[int, int, int] | None = None,
    url: str | None = None,
) -> list[Image.Image] | np.ndarray:
    """decode's or sample's predictions -> PIL images (mode L or RGB), or one float32
    array (N, H, W) or (N, H, W, C); checked against the model's image `shape` (C, H, W)
    when given."""

    def bad(why: str) -> LatentServeError:
        return LatentServeError(f"not a valid image answer: {why}", status=200, url=url)

    c, h, w = shape or (None, None, None)
    try:
        if as_array:
            arr = np.asarray([p["pixels"] for p in preds], dtype=np.float32)
            want = None if shape is None else (len(preds), h, w) + ((c,) if c != 1 else ())
            if want is not None and arr.shape != want:
                raise bad(f"pixels of shape {list(arr.shape)}, expected {list(want)}")
            return arr
        pngs = [read_png(p["image_b64"]) for p in preds]
    except (KeyError, TypeError, ValueError, OSError) as err:
        raise bad(f"an image lacks or mangles {err}") from None
    if shape is not None:
        mode = "L" if c == 1 else "RGB"
        for i, img in enumerate(pngs):
            if img.mode != mode or img.size != (w, h):
                raise bad(
                    f"image {i} is {img.mode} {img.size[0]}x{img.size[1]}, "
                    f"expected {mode} {w}x{h} (the model's image)"
                )
    return pngs


def join_arrays(parts: list[np.ndarray | None]) -> np.ndarray | None:
    """Per-request arrays -> one (always a fresh, writable array), or None if absent."""
    if all(p is None for p in parts):
        return None
    if any(p is None for p in parts):
        raise LatentServeError("the answers disagree: some have an output that others lack")
    return np.concatenate(parts)


def join_images(parts: list) -> list[Image.Image] | np.ndarray:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return [img for part in parts for img in part]
