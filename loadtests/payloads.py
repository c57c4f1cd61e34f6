"""Request bodies from the Fashion-MNIST test split, and checks of the answers.

Shared by the locust scenarios, the benchmark and the reliability tests, so all
of them send the same realistic traffic and count a wrong answer as a failure:
a check returns None when the answer is right and a short reason otherwise.
Two wires: the project's JSON API (`{"instances": ...}`, base64 PNG) and the
Open Inference Protocol (KServe v2) with binary or JSON tensors, built by the
client's own writer (`client.v2.write_infer_request`, laid out as tritonclient
lays them out).
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image

from client.v2 import HEADER_LENGTH, write_infer_request

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
    """Pre-built bodies of `items` images each, cycled through by a load generator.

    `headers[i]`, when given, are the HTTP headers body i needs besides its
    length (the v2 bodies' Content-Type and Inference-Header-Content-Length).
    """

    bodies: list[bytes]
    items: int
    headers: list[dict[str, str]] = field(default_factory=list)
    _next: int = 0

    def next(self) -> bytes:
        body = self.bodies[self._next % len(self.bodies)]
        self._next += 1
        return body

    def next_request(self) -> tuple[bytes, dict[str, str]]:
        i = self._next % len(self.bodies)
        self._next += 1
        return self.bodies[i], self.headers[i] if self.headers else {}


def _picks(total: int, items: int, count: int, seed: int, replace: bool) -> list[np.ndarray]:
    """`count` index sets of `items` each; the same seed picks the same items on both wires."""
    rng = np.random.default_rng(seed)
    return [rng.choice(total, size=items, replace=replace) for _ in range(count)]


def encode_pool(items: int, count: int = 32, seed: int = 0, fmt: str = "png") -> PayloadPool:
    """`count` distinct encode bodies of `items` random test images each."""
    images = test_images()
    picks = _picks(len(images), items, count, seed, replace=False)
    return PayloadPool([encode_body(images[p], fmt) for p in picks], items)


def decode_pool(latents: np.ndarray, items: int, count: int = 32, seed: int = 0) -> PayloadPool:
    picks = _picks(len(latents), items, count, seed, replace=True)
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


def check_score(answer: dict, items: int) -> str | None:
    preds = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(preds, list) or len(preds) != items:
        return f"expected {items} predictions, got {None if preds is None else len(preds)}"
    primary = answer.get("primary")
    for i, p in enumerate(preds):
        scores = p.get("scores") if isinstance(p, dict) else None
        if not isinstance(scores, dict) or primary not in scores:
            return f"predictions[{i}].scores lack the primary score {primary!r}"
        for name, s in scores.items():
            pv = s.get("p_value") if isinstance(s, dict) else None
            if not (isinstance(pv, float) and 0.0 < pv <= 1.0):
                return f"predictions[{i}].scores.{name}.p_value is not in (0, 1]"
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


# ---- Open Inference Protocol (KServe v2) -----------------------------------------
V2_HEADER = HEADER_LENGTH
V2_ITEMSIZE = {"UINT8": 1, "FP32": 4, "FP64": 8}


def v2_path(archive: str) -> str:
    return f"/v2/models/{archive}/infer"


def _v2_pool(requests: list[tuple[bytes, dict[str, str]]], items: int) -> PayloadPool:
    return PayloadPool([b for b, _ in requests], items, [h for _, h in requests])


def v2_encode_pool(items: int, count: int = 32, seed: int = 0, binary: bool = True) -> PayloadPool:
    """UINT8 [items, 28, 28] test images (the same picks as `encode_pool`'s for a seed)."""
    images = test_images()
    picks = _picks(len(images), items, count, seed, replace=False)
    return _v2_pool(
        [
            write_infer_request({"image": images[p]}, binary_inputs=binary, binary_outputs=binary)
            for p in picks
        ],
        items,
    )


def v2_decode_pool(
    latents: np.ndarray, items: int, count: int = 32, seed: int = 0, binary: bool = True
) -> PayloadPool:
    """FP32 [items, D] codes; the image comes back UINT8 (binary when `binary`)."""
    picks = _picks(len(latents), items, count, seed, replace=True)
    z = [np.asarray(latents[p], dtype=np.float32) for p in picks]
    return _v2_pool(
        [write_infer_request({"z": x}, binary_inputs=binary, binary_outputs=binary) for x in z],
        items,
    )


def v2_sample_pool(n: int, count: int = 32, seed: int = 0) -> PayloadPool:
    """Parameters only (no inputs); the images come back binary UINT8."""
    return _v2_pool([write_infer_request({}, {"n": n, "seed": seed + i}) for i in range(count)], n)


def check_v2(
    status: int, body: bytes, headers: dict[str, str], items: int, outputs: dict[str, str]
) -> str | None:
    """A v2 answer has exactly `outputs` ({name: datatype}), each `items` long.

    Binary outputs (the header says where the JSON ends) must declare
    shape x itemsize bytes and the body must be exactly the JSON plus those
    bytes; JSON outputs must carry prod(shape) values. Cheap: only the small
    JSON header is parsed, never the tensors. `headers` are lower-case.
    """
    if status != 200:
        return f"HTTP {status}: {body[:160]!r}"
    length = headers.get(V2_HEADER.lower())
    try:
        end = len(body) if length is None else int(length)
        head = json.loads(body[:end])
        answered = {o["name"]: o for o in head["outputs"]}
    except (ValueError, KeyError, TypeError):
        why = "" if length is not None else f" (and no {V2_HEADER} header)"
        return f"not a v2 answer{why}: {body[:160]!r}"
    if sorted(answered) != sorted(outputs):
        return f"outputs {sorted(answered)}, expected {sorted(outputs)}"
    binary = 0
    for name, out in answered.items():
        shape, datatype = out.get("shape"), out.get("datatype")
        if datatype != outputs[name] or not shape or shape[0] != items:
            return f"output {name}: {datatype} {shape}, expected {outputs[name]} [{items}, ...]"
        count = math.prod(shape)
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if size != count * V2_ITEMSIZE[datatype]:
                return f"output {name}: binary_data_size {size} is not {shape} x {datatype}"
            binary += size
        elif not isinstance(out.get("data"), list) or len(out["data"]) != count:
            return f"output {name}: neither binary nor {count} values of data"
    if binary and length is None:
        return f"binary outputs without the {V2_HEADER} header"
    if len(body) != end + binary:
        return f"{len(body)} bytes, expected {end} of JSON + {binary} binary"
    return None
