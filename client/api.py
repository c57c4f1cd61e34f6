"""`LatentClient`: encode, decode, sample and score against a latentserve TorchServe.

It speaks the Open Inference Protocol with binary tensors by default
(`protocol="v2"`), or latentserve's JSON API (`protocol="json"`); both live in
client/protocols.py. Large inputs are split into requests of `batch_size` items (at most the
server's `MAX_ITEMS` per request, client/limits.py), sent `concurrency` at a time and
reassembled in input order; the connections, threads and retries are its `Transport`'s
(client/transport.py). Every failure the caller sees is a `LatentServeError`, which
carries the server's own message.

The model's image shape (C, H, W) comes from the server: before its first request
to an operation the client fetches `GET /v2/models/<model>-<op>` (the Open
Inference Protocol's model metadata, over either protocol) once and keeps it
(`model_info`, client/metadata.py). Inputs are converted to that shape, answers
must have it, and requests of large images carry fewer items (client/limits.py).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from client import inputs, metadata, scores
from client.errors import InputError, LatentServeError
from client.limits import MAX_ITEMS, MAX_SEED, items_per_request, max_items, max_n
from client.metadata import ModelInfo
from client.protocols import PROTOCOLS, Images, Reply, Request
from client.results import Encoded, Progress, join_arrays, join_images
from client.retry import RetryPolicy, split
from client.transport import Transport

DEFAULT_URL = "http://127.0.0.1:8080"
# Measured on 2 CPU cores embedding the 10k test set (docs/client.md): larger requests
# amortize HTTP and JSON overhead; 4 in flight keep the server's dynamic batches full.
DEFAULT_BATCH_SIZE = 128
DEFAULT_CONCURRENCY = 4


class LatentClient(Transport):
    """Client of one model's endpoints, `<model>-encode|decode|sample|score`.

    Parameters: `base_url` of the inference API; `token` the inference key when
    TorchServe's token authorization is on; `timeout` seconds to connect and to
    read one answer; `batch_size` items per request (<= MAX_ITEMS); `concurrency`
    requests in flight; `retry` the RetryPolicy; `protocol` "v2" (the Open
    Inference Protocol, binary tensors) or "json" (latentserve's JSON API);
    `image_shape` (C, H, W) the model's image shape for a server that gives no
    metadata (an old server: see client/metadata.py; where the server does give
    it, the two must agree). Use it as a context manager or call `close()` to
    release the connections.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        model: str = "fashion-vae",
        timeout: float = 30.0,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        concurrency: int = DEFAULT_CONCURRENCY,
        retry: RetryPolicy | None = None,
        protocol: str = "v2",
        image_shape: Sequence[int] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
        self.protocol = PROTOCOLS[protocol]
        if not 1 <= batch_size <= MAX_ITEMS:
            raise ValueError(f"batch_size must be in [1, {MAX_ITEMS}], got {batch_size}")
        super().__init__(
            base_url, token, timeout, concurrency=concurrency, retry=retry, sleep=sleep
        )
        self.image_shape = None if image_shape is None else metadata.check_shape(tuple(image_shape))
        self.model, self.batch_size = model, batch_size
        self._infos: dict[str, ModelInfo] = {}  # by operation: the model's metadata
        self._info_lock = threading.Lock()  # one metadata GET at a time
        self.last_seed: int | None = None  # the seed of the last sample() call

    # ---- one request ----------------------------------------------------------
    def url(self, operation: str) -> str:
        return self.base_url + self.protocol.path(f"{self.model}-{operation}")

    def post(self, operation: str, request: Request, items: int) -> Reply:
        """POST one request to `<model>-<operation>`, retrying idempotent failures."""
        url = self.url(operation)
        body, headers = request
        status, reply_headers, content, attempts = self._attempts(
            url, lambda: self._post_once(url, body, headers), "requests"
        )
        if status == 200:
            return Reply(content, reply_headers, url, f"{self.model}-{operation}", items)
        raise LatentServeError.from_response(status, content, url, attempts)

    # ---- the model's metadata --------------------------------------------------
    def metadata_url(self, operation: str) -> str:
        return f"{self.base_url}/v2/models/{self.model}-{operation}"

    def model_info(self, operation: str = "encode") -> ModelInfo:
        """The model behind `<model>-<operation>`: kind, latent_dim, image_shape (C, H, W),
        pixel_scale, from the server's metadata (fetched once per operation, then kept).

        A server without the metadata endpoint (404) gets the shape given as
        `image_shape=`, else a shipped model's (1 x 28 x 28); for any other model that is
        a `LatentServeError` saying the server gives no metadata (client/metadata.py).
        """
        if operation not in metadata.OPERATIONS:
            raise ValueError(f"operation must be one of {metadata.OPERATIONS}, got {operation!r}")
        info = self._infos.get(operation)
        if info is not None:
            return info
        with self._info_lock:  # callers on other threads wait for this one GET
            info = self._infos.get(operation)
            if info is None:
                info = self._fetch_info(operation)
                self._infos[operation] = info
        return info

    def _fetch_info(self, operation: str) -> ModelInfo:
        url = self.metadata_url(operation)
        status, _, content, attempts = self._attempts(url, lambda: self._get_once(url), "metadata")
        return metadata.read_answer(
            status, content, url, attempts, self.model, operation, self.image_shape
        )

    def items_per_request(self, operation: str, images: Any = None) -> int:
        """The most items one request of `operation` carries: `batch_size` (sample: the
        server's MAX_N), fewer when the model's images are too large for the server's
        limits at that count; for encode and score, `images` (as they accept) tells
        whether float images take more bytes than pixels."""
        shape = self.model_info(operation).image_shape
        if operation == "sample":
            return max_n(shape)
        if operation == "decode":
            return min(self.batch_size, max_items(shape))
        floats = True if images is None else inputs.has_floats(images)
        return min(self.batch_size, items_per_request(shape, self.protocol.name, floats))

    # ---- operations -----------------------------------------------------------
    def encode(
        self,
        images: Any,
        *,
        sample: bool = False,
        seed: int | None = None,
        progress: Progress | None = None,
    ) -> Encoded:
        """Images -> latent codes, row i for image i (see client.inputs for what is accepted).

        With `sample=True` (VAE) each row also gets z = z_mean + exp(z_log_var/2) * eps;
        request k of the split uses seed + k, so the same seed gives the same z.
        """
        items = inputs.as_items(images)
        if len(items) == 0:
            raise InputError("nothing to encode")
        if sample and seed is None:
            seed = secrets.randbelow(MAX_SEED)
        shape = self.model_info("encode").image_shape

        def task(k: int, start: int, stop: int) -> Callable[[], dict]:
            def run() -> dict:
                seed_k = (seed + k) % (MAX_SEED + 1) if sample else None
                request = self.protocol.encode_request(items[start:stop], seed_k, shape)
                arrays = self.protocol.read_encoded(
                    self.post("encode", request, stop - start), seed_k
                )
                self.stats.add(items=stop - start)
                if progress:
                    progress(stop - start)
                return arrays

            return run

        ranges = split(len(items), self.items_per_request("encode", items))
        parts = self._map([task(k, a, b) for k, (a, b) in enumerate(ranges)])
        z_mean, z_log_var, z = (
            join_arrays([p[name] for p in parts]) for name in ("z_mean", "z_log_var", "z")
        )
        return Encoded(z_mean, z_log_var, z, seed if sample else None)

    def decode(
        self, z: Sequence[Sequence[float]] | np.ndarray, *, as_array: bool = False
    ) -> list[Image.Image] | np.ndarray:
        """Latent vectors (N x D, or one vector of D) -> N images of the model's shape.

        Default: 8-bit PIL images, mode L (one channel) or RGB (the server's pixels,
        round(clip(x, 0, 1) * 255)). `as_array=True`: a float32 array in [0, 1], (N, H, W)
        or (N, H, W, C) (exact float32 over the Open Inference Protocol; 6 decimals over
        the JSON API).
        """
        zs = np.asarray(z, dtype=np.float64)
        if zs.ndim == 1:
            zs = zs[None]
        if zs.ndim != 2 or len(zs) == 0:
            raise InputError(f"z must be N x D (or one vector), got shape {zs.shape}")
        shape = self.model_info("decode").image_shape

        def task(start: int, stop: int) -> Callable[[], Images]:
            def run() -> Images:
                request = self.protocol.decode_request(zs[start:stop], as_array)
                result = self.protocol.read_images(
                    self.post("decode", request, stop - start), as_array, shape=shape
                )
                self.stats.add(items=stop - start)
                return result

            return run

        ranges = split(len(zs), self.items_per_request("decode"))
        return join_images(self._map([task(a, b) for a, b in ranges]))

    def sample(
        self,
        n: int,
        seed: int | None = None,
        temperature: float = 1.0,
        *,
        as_array: bool = False,
    ) -> list[Image.Image] | np.ndarray:
        """`n` images from the prior, as `decode` gives them. Request k (of at most MAX_N
        images, fewer for large images) uses seed + k, so the same (n, seed, temperature)
        always gives the same images; without a seed one is drawn (then `last_seed`
        tells it)."""
        if n < 1:
            raise InputError(f"n must be >= 1, got {n}")
        shape = self.model_info("sample").image_shape
        seed = secrets.randbelow(MAX_SEED) if seed is None else seed
        self.last_seed = seed

        def task(k: int, start: int, stop: int) -> Callable[[], Images]:
            def run() -> Images:
                seed_k = (seed + k) % (MAX_SEED + 1)
                request = self.protocol.sample_request(
                    stop - start, seed_k, float(temperature), as_array
                )
                reply = self.post("sample", request, stop - start)
                result = self.protocol.read_images(reply, as_array, seed_k, shape)
                self.stats.add(items=stop - start)
                return result

            return run

        ranges = split(n, self.items_per_request("sample"))
        return join_images(self._map([task(k, a, b) for k, (a, b) in enumerate(ranges)]))

    def score(
        self,
        images: Any,
        *,
        fpr: float = 0.01,
        mode: str = "full",
        progress: Progress | None = None,
    ) -> scores.Scored:
        """Images -> how unusual each is for the model: scores, p-values, is_outlier at
        `fpr` (client/scores.py). `mode="latent"`: the latent score alone, from the
        encoder only (about encode's cost; docs/scores.md says where it separates)."""
        items = inputs.as_items(images)
        if len(items) == 0:
            raise InputError("nothing to score")
        if mode not in scores.MODES:
            raise InputError(f"mode must be one of {scores.MODES}, got {mode!r}")
        shape = self.model_info("score").image_shape

        def task(start: int, stop: int) -> Callable[[], scores.Scored]:
            def run() -> scores.Scored:
                request = scores.request(self.protocol.name, items[start:stop], fpr, mode, shape)
                reply = self.post("score", request, stop - start)
                self.stats.add(items=stop - start)
                if progress:
                    progress(stop - start)
                return scores.read(self.protocol.name, reply)

            return run

        ranges = split(len(items), self.items_per_request("score", items))
        return scores.join(self._map([task(a, b) for a, b in ranges]))
