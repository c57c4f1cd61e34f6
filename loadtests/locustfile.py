"""Locust scenarios for latentserve: encode (single images and batches), decode, sample, score.

    make loadtest                                   # headless, ~1 minute, against `make serve`
    .venv/bin/locust -f loadtests/locustfile.py --host http://127.0.0.1:8080   # web UI

Payloads are Fashion-MNIST test images (`training.data.load_dataset`) and the
latents the server itself returns for them, so decode gets realistic codes.
Every answer is checked (status, item count, vector lengths, finite numbers,
PNG signature, echoed seed): a wrong answer counts as a failure, not only a
non-200. Options (each also an environment variable):

    --models        LATENTSERVE_MODELS       comma-separated model names (fashion-vae)
    --batch-sizes   LATENTSERVE_BATCH_SIZES  items per multi-item request (16,64)
    --think-time    LATENTSERVE_THINK_TIME   mean seconds a user waits between requests (0.5)

The task mix (users 6 encode : 3 decode : 1 sample : 1 score; within encode, single
images dominate) follows how the client and the explorer use the API: mostly
one image or one latent per request, some bulk calls.
"""

from __future__ import annotations

import json
import random
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from locust import FastHttpUser, between, events, tag, task

from loadtests import payloads

JSON = {"Content-Type": "application/json"}
PNG = {"Content-Type": "image/png"}
POOL = 64  # distinct bodies per (model, operation, size)


@dataclass
class ModelTraffic:
    """Pre-built bodies for one model, learned from the live server at start."""

    name: str
    latent_dim: int
    vae: bool
    encode: dict[int, payloads.PayloadPool]
    raw_png: list[bytes]
    decode: dict[int, payloads.PayloadPool]


TRAFFIC: list[ModelTraffic] = []
BATCH_SIZES: list[int] = []


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument(
        "--models",
        type=str,
        env_var="LATENTSERVE_MODELS",
        default="fashion-vae",
        help="comma-separated served model names (each has -encode/-decode/-sample/-score)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=str,
        env_var="LATENTSERVE_BATCH_SIZES",
        default="16,64",
        help="items per multi-item request, comma-separated (each <= 256)",
    )
    parser.add_argument(
        "--think-time",
        type=float,
        env_var="LATENTSERVE_THINK_TIME",
        default=0.5,
        help="mean seconds a user waits between two requests (uniform in [0, 2x])",
    )


def _post(url: str, body: bytes) -> dict:
    req = urllib.request.Request(url, data=body, headers=JSON, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def learn_model(host: str, name: str, sizes: list[int]) -> ModelTraffic:
    """Encode 256 test images once: latent_dim, kind, and realistic latents for decode."""
    images = payloads.test_images()
    rng = np.random.default_rng(0)
    pick = rng.choice(len(images), size=256, replace=False)
    answer = _post(f"{host}/predictions/{name}-encode", payloads.encode_body(images[pick]))
    latents = np.array([p["z_mean"] for p in answer["predictions"]])
    vae = answer["predictions"][0]["z_log_var"] is not None
    all_sizes = sorted({1, *sizes})
    return ModelTraffic(
        name=name,
        latent_dim=latents.shape[1],
        vae=vae,
        encode={k: payloads.encode_pool(k, POOL, seed=k) for k in all_sizes},
        raw_png=[payloads.png_bytes(images[i]) for i in pick[:POOL]],
        decode={k: payloads.decode_pool(latents, k, POOL, seed=k) for k in all_sizes},
    )


@events.init.add_listener
def _prepare(environment, **_kwargs) -> None:
    opts = environment.parsed_options
    if opts is None:  # locust used as a library without options: nothing to prepare
        return
    host = (opts.host or "").rstrip("/")
    if not host:
        sys.exit("no --host given (e.g. --host http://127.0.0.1:8080)")
    BATCH_SIZES[:] = sorted({int(s) for s in opts.batch_sizes.split(",") if s.strip()})
    if not BATCH_SIZES or min(BATCH_SIZES) < 1 or max(BATCH_SIZES) > 256:
        sys.exit(f"--batch-sizes must be integers in [1, 256], got {opts.batch_sizes!r}")
    names = [m.strip() for m in opts.models.split(",") if m.strip()]
    try:
        TRAFFIC[:] = [learn_model(host, name, BATCH_SIZES) for name in names]
    except (urllib.error.URLError, OSError, KeyError, ValueError) as err:
        sys.exit(
            f"cannot prepare traffic from {host} for models {names}: {err!r}. "
            "Is the server running (`make serve`) and are the model names right?"
        )
    think = max(opts.think_time, 0.0)
    for user in (EncodeUser, DecodeUser, SampleUser, ScoreUser):
        user.wait_time = between(0.0, 2 * think)


def _check(resp, reason: str | None) -> None:
    if reason is not None:
        resp.failure(reason)


def _answer(resp) -> dict | None:
    if resp.status_code != 200:
        resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
        return None
    try:
        return resp.json()
    except ValueError:
        resp.failure(f"not JSON: {(resp.text or '')[:200]}")
        return None


class LatentUser(FastHttpUser):
    abstract = True
    wait_time = between(0.0, 1.0)

    def model(self) -> ModelTraffic:
        return random.choice(TRAFFIC)

    def batch_size(self) -> int:
        return random.choice(BATCH_SIZES)

    def call(
        self,
        m: ModelTraffic,
        op: str,
        body: bytes,
        headers: dict,
        label: str,
        check: Callable[[dict], str | None],
    ) -> None:
        """POST `body` to <model>-<op>; a non-200, non-JSON or wrong answer fails it."""
        with self.client.post(
            f"/predictions/{m.name}-{op}",
            data=body,
            headers=headers,
            name=f"{m.name}-{op} {label}",
            catch_response=True,
        ) as resp:
            answer = _answer(resp)
            if answer is not None:
                _check(resp, check(answer))


class EncodeUser(LatentUser):
    weight = 6

    def _encode(self, m: ModelTraffic, k: int, body: bytes, headers: dict, label: str) -> None:
        self.call(
            m, "encode", body, headers, label,
            lambda answer: payloads.check_encode(answer, k, m.latent_dim, m.vae),
        )  # fmt: skip

    @tag("single")
    @task(6)
    def one_image_json(self) -> None:
        m = self.model()
        self._encode(m, 1, m.encode[1].next(), JSON, "x1")

    @tag("single")
    @task(2)
    def one_image_raw_png(self) -> None:
        m = self.model()
        self._encode(m, 1, random.choice(m.raw_png), PNG, "raw png")

    @tag("batch")
    @task(1)
    def many_images(self) -> None:
        m, k = self.model(), self.batch_size()
        self._encode(m, k, m.encode[k].next(), JSON, f"x{k}")


class DecodeUser(LatentUser):
    weight = 3

    def _decode(self, m: ModelTraffic, k: int) -> None:
        body = m.decode[k].next()
        self.call(m, "decode", body, JSON, f"x{k}", lambda a: payloads.check_images(a, k))

    @tag("single")
    @task(3)
    def one_latent(self) -> None:
        self._decode(self.model(), 1)

    @tag("batch")
    @task(1)
    def many_latents(self) -> None:
        self._decode(self.model(), self.batch_size())


class SampleUser(LatentUser):
    weight = 1

    def _sample(self, m: ModelTraffic, n: int) -> None:
        seed = random.randrange(2**31)
        body = payloads.sample_body(n, seed)
        self.call(m, "sample", body, JSON, f"n={n}", lambda a: payloads.check_sample(a, n, seed))

    @tag("single")
    @task(2)
    def one_sample(self) -> None:
        self._sample(self.model(), 1)

    @tag("batch")
    @task(1)
    def many_samples(self) -> None:
        self._sample(self.model(), self.batch_size())


class ScoreUser(LatentUser):
    weight = 1

    def _score(self, m: ModelTraffic, k: int) -> None:
        body = m.encode[k].next()  # the same images as encode
        self.call(m, "score", body, JSON, f"x{k}", lambda a: payloads.check_score(a, k))

    @tag("single")
    @task(2)
    def one_score(self) -> None:
        self._score(self.model(), 1)

    @tag("batch")
    @task(1)
    def many_scores(self) -> None:
        self._score(self.model(), self.batch_size())
