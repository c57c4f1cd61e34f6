"""Request bodies from the Fashion-MNIST test split, and checks of the answers.

Shared by the locust scenarios, the benchmark and the reliability tests, so all
of them send the same realistic traffic and count a wrong answer as a failure:
a check returns None when the answer is right and a short reason otherwise.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

PNG_B64_MAGIC = "iVBORw0KGgo"  # base64 of the PNG signature


@lru_cache(maxsize=2)
def test_images(dataset: str = "fashion-mnist") -> np.ndarray:
    """The 10,000 test images (N, 28, 28) uint8 of the dataset (training.data)."""
    from training.data import load_dataset

    return load_dataset(dataset).test.images


def png_b64(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8), "L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def slow_png_b64(seed: int) -> str:
    """A 2000 x 2000 smooth image as base64 PNG: a few KB on the wire, slow to
    decode and resize (tests use it to keep a worker busy)."""
    ramp = np.add.outer(np.arange(2000), np.arange(2000) * (seed + 1)) % 256
    return png_b64(ramp)


def png_bytes(image: np.ndarray) -> bytes:
    return base64.b64decode(png_b64(image))


def dumps(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def encode_body(images: np.ndarray, fmt: str = "png") -> bytes:
    """{"instances": [...]} of uint8 images, as base64 PNGs or as [0, 1] pixel arrays."""
    if fmt == "png":
        items = [{"image_b64": png_b64(im)} for im in images]
    else:
        items = [{"pixels": (np.asarray(im) / 255.0).round(6).tolist()} for im in images]
    return dumps({"instances": items})


def decode_body(latents: np.ndarray, fmt: str = "png") -> bytes:
    return dumps({"instances": [{"z": [float(v) for v in z]} for z in latents], "format": fmt})


def sample_body(n: int, seed: int, temperature: float = 1.0) -> bytes:
    return dumps({"n": n, "seed": seed, "temperature": temperature})


@dataclass
class PayloadPool:
    """Pre-built bodies of `items` images each, cycled through by a load generator."""

    bodies: list[bytes]
    items: int
    _next: int = 0

    def next(self) -> bytes:
        body = self.bodies[self._next % len(self.bodies)]
        self._next += 1
        return body


def encode_pool(items: int, count: int = 32, seed: int = 0, fmt: str = "png") -> PayloadPool:
    """`count` distinct encode bodies of `items` random test images each."""
    images = test_images()
    rng = np.random.default_rng(seed)
    picks = [rng.choice(len(images), size=items, replace=False) for _ in range(count)]
    return PayloadPool([encode_body(images[p], fmt) for p in picks], items)


def decode_pool(latents: np.ndarray, items: int, count: int = 32, seed: int = 0) -> PayloadPool:
    rng = np.random.default_rng(seed)
    picks = [rng.choice(len(latents), size=items, replace=True) for _ in range(count)]
    return PayloadPool([decode_body(latents[p]) for p in picks], items)


def sample_pool(n: int, count: int = 32, seed: int = 0) -> PayloadPool:
    return PayloadPool([sample_body(n, seed + i) for i in range(count)], n)


# ---- answer checks (None = right, else the reason) ----------------------------
def _finite_vector(v, dim: int) -> bool:
    return (
        isinstance(v, list)
        and len(v) == dim
        and all(isinstance(x, int | float) and math.isfinite(x) for x in v)
    )


def check_encode(answer: dict, items: int, latent_dim: int, vae: bool = True) -> str | None:
    preds = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(preds, list) or len(preds) != items:
        return f"expected {items} predictions, got {None if preds is None else len(preds)}"
    for i, p in enumerate(preds):
        if not _finite_vector(p.get("z_mean"), latent_dim):
            return f"predictions[{i}].z_mean is not {latent_dim} finite numbers"
        if vae and not _finite_vector(p.get("z_log_var"), latent_dim):
            return f"predictions[{i}].z_log_var is not {latent_dim} finite numbers"
    return None


def check_images(answer: dict, items: int, fmt: str = "png") -> str | None:
    preds = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(preds, list) or len(preds) != items:
        return f"expected {items} predictions, got {None if preds is None else len(preds)}"
    for i, p in enumerate(preds):
        if fmt == "png":
            b64 = p.get("image_b64")
            if not isinstance(b64, str) or not b64.startswith(PNG_B64_MAGIC):
                return f"predictions[{i}].image_b64 is not a base64 PNG"
        else:
            px = p.get("pixels")
            if not isinstance(px, list) or len(px) != 28:
                return f"predictions[{i}].pixels is not 28 rows"
    return None


def check_sample(answer: dict, n: int, seed: int | None = None) -> str | None:
    reason = check_images(answer, n)
    if reason is None and seed is not None and answer.get("seed") != seed:
        return f"seed {answer.get('seed')!r} != sent {seed}"
    return reason
