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

    requests: int = 0  # HTTP attempts sent
    retries: int = 0
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


def images(preds: list[dict], as_array: bool) -> list[Image.Image] | np.ndarray:
    """decode's or sample's predictions -> PIL images, or one (N, H, W) float32 array."""
    if as_array:
        return np.asarray([p["pixels"] for p in preds], dtype=np.float32)
    return [read_png(p["image_b64"]) for p in preds]


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
