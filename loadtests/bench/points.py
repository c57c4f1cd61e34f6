"""The load points of `make bench`: its plan, their payloads and answer checks, and running them.

`load_points` runs every point of the `Plan` against the bench server with the
closed-loop generator (`loadtests/bench/httpgen.py`): on the JSON API, encode of 1
and of `big` images (the service and the no-op framework ceiling), decode and
sample, and dynamic batching on versus off; on the Open Inference Protocol
with binary tensors (`v2 ...` rows, `/v2/models/<archive>/infer`), encode,
decode and sample of 1 and `big` items. Every archive first gets a few seconds of
unrecorded load (the frontend's JIT), and every answer is checked cheaply (keys
counted, not parsed: `checks.py`), so errors are counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadtests import payloads
from loadtests.bench import compute
from loadtests.bench.checks import counts, exact_length, v2_answer, v2_outputs
from loadtests.bench.httpgen import Check, run_point
from loadtests.bench.server import timing
from paths import STORE
from serving.query import scrape
from serving.server import RunningServer


@dataclass(frozen=True)
class Plan:
    encode1_c: tuple[int, ...] = (1, 4, 8, 16, 32, 64)
    # 64-image requests: 16 clients are exactly 2 encode workers x batchSize 8 in
    # service at once (a worker idles while its clients send their next request);
    # at 32 a queue keeps both busy
    encode64_c: tuple[int, ...] = (1, 4, 16, 32)
    other_c: tuple[int, ...] = (1, 8, 32)
    # binary v2 rows: (operation, items per request, concurrencies). 1, 8, 32 clients for one
    # item and 1, 4, 16 for 64 are issue 11's table (the peers' figures); 8 and more clients
    # are where the binary ceiling targets hold; a lone request (1 client) is the latency target.
    v2: tuple[tuple[str, int, tuple[int, ...]], ...] = (
        ("encode", 1, (1, 8, 32)),
        ("encode", 64, (1, 4, 8, 16, 32)),
        ("decode", 1, (1, 8, 32)),
        ("decode", 64, (1, 4, 8, 16, 32)),
        ("sample", 1, (1, 8, 32)),
        ("sample", 64, (1, 8, 32)),
    )
    batch_c: int = 32
    big: int = 64
    duration: float = 6.0
    warmup: float = 1.5
    compute_seconds: float = 2.0
    batches: tuple[int, ...] = (1, 8, 64)  # compute ceiling; 8 = a dynamic batch of single images
    # The frontend's Java code gets several times faster once the JIT has seen a few
    # thousand requests (no-op at 32 clients: 9,600 req/s first, 13,700 after): each
    # archive of the points gets this many seconds of unrecorded load first.
    jit_warmup: float = 4.0

    @classmethod
    def quick(cls) -> Plan:
        """A functional check of the harness (numbers too short to quote)."""
        v2 = (("encode", 1, (1,)), ("encode", 64, (1, 8)), ("decode", 1, (1,)))
        v2 += (("decode", 64, (8,)), ("sample", 1, (1,)), ("sample", 64, (8,)))
        return cls((1, 16), (4,), (8,), v2, 32, 64, 2.0, 0.5, 0.5, jit_warmup=1.0)

    @classmethod
    def targets(cls) -> Plan:
        """Only the points the targets need: the saturating ones, the lone ones, the peers'."""
        v2 = (("encode", 1, (1, 8, 32)), ("encode", 64, (1, 4, 8, 16, 32)))
        v2 += (("decode", 1, (1,)), ("decode", 64, (8, 16, 32)), ("sample", 1, (1,)))
        return cls((1, 8, 32, 64), (1, 4, 16, 32), (), v2, 32, 64, 5.0, 1.5, 2.0)

    def points(self) -> list[tuple[str, str, int, int]]:
        """(label, kind, items per request, clients) of every load point, in run order."""
        big, out = self.big, []

        def add(kind: str, items: int, c: int) -> None:
            out.append((label(kind, items), kind, items, c))

        for c in self.encode1_c:
            add("noop", 1, c)
            add("encode", 1, c)
        for c in self.encode64_c:
            add("noop", big, c)
            add("encode", big, c)
        for c in self.other_c:
            for k in (1, big):
                add("decode", k, c)
                add("sample", k, c)
        for op, k, concurrencies in self.v2:
            for c in concurrencies:
                add(f"v2 {op}", k, c)
        add("batching off", 1, self.batch_c)
        add("batching on", 1, self.batch_c)
        return out


def label(kind: str, items: int) -> str:
    """`encode x64`, `v2 sample n=1`, `batching on x1`: the report's row labels."""
    return f"{kind} {'n=' if kind.endswith('sample') else 'x'}{items}"


def load_points(server: RunningServer, model: str, plan: Plan, names: dict, log) -> list[dict]:
    metrics_url = server.metrics_url
    pids = server.all_pids()
    dim_latents = payloads.test_images()[:512]
    big = plan.big
    # decode gets the codes of real test images, computed in-process by the encoder
    encoder = compute.load(STORE / model, "encoder.pt")
    import torch

    with torch.inference_mode():
        out = encoder(torch.from_numpy(dim_latents.astype(np.float32) / 255.0)[:, None])
    latents = (out[0] if isinstance(out, tuple) else out).numpy()
    enc = {k: payloads.encode_pool(k, 32, seed=k) for k in (1, big)}
    json_pools = {
        "decode": {k: payloads.decode_pool(latents, k, 32, seed=k) for k in (1, big)},
        "sample": {k: payloads.sample_pool(k, 32, seed=k) for k in (1, big)},
    }
    v2_pools = {
        "encode": lambda k: payloads.v2_encode_pool(k, 32, seed=k),
        "decode": lambda k: payloads.v2_decode_pool(latents, k, 32, seed=k),
        "sample": lambda k: payloads.v2_sample_pool(k, 32, seed=k),
    }
    made: dict = {}  # one v2 pool per (operation, items), shared by its points
    outputs, noop_len, z_mean = v2_outputs(model), names["noop_len"], b'"z_mean"'

    def route(kind: str, k: int) -> tuple[str, str | None, payloads.PayloadPool, Check]:
        """A point's archive, path (None: the JSON API's), payloads and answer check."""
        if kind == "noop":
            noop = names["noop1" if k == 1 else "noop64"]
            return noop, None, enc[k], exact_length(noop_len[k])
        if kind == "batching off":
            return names["b1"], None, enc[1], counts(z_mean, 1)
        if kind in ("encode", "batching on"):
            return f"{model}-encode", None, enc[k], counts(z_mean, k)
        if kind in json_pools:
            return f"{model}-{kind}", None, json_pools[kind][k], counts(b'"image_b64"', k)
        op = kind.removeprefix("v2 ")
        archive = f"{model}-{op}"
        if (op, k) not in made:
            made[op, k] = v2_pools[op](k)
        return archive, payloads.v2_path(archive), made[op, k], v2_answer(k, outputs[op])

    rows = []  # (label, archive, path, pool, items, check, concurrency)
    for name, kind, k, c in plan.points():
        archive, path, pool, check = route(kind, k)
        rows.append((name, archive, path or f"/predictions/{archive}", pool, k, check, c))

    warmed = set()
    for name, _, path, pool, items, check, _ in rows:
        if (path, items) not in warmed:  # the v2 route is its own code in the frontend
            warmed.add((path, items))
            log(f"JIT warm-up: {name} ({path}), {plan.jit_warmup:g} s at 32 clients")
            warm = run_point(
                server.url, path, pool.next_request, 32, plan.jit_warmup, 0.0, items, check
            )
            if warm.errors:
                raise RuntimeError(f"warm-up of {path} failed: {warm.error_samples}")

    results = []
    for i, (name, archive, path, pool, items, check, conc) in enumerate(rows, 1):
        before = scrape(metrics_url)
        point = run_point(
            server.url,
            path,
            pool.next_request,
            conc,
            plan.duration,
            plan.warmup,
            items_per_request=items,
            check=check,
            server_pids=pids,
            label=name,
        )
        row = point.to_dict() | {"archive": archive, "path": path}
        row["timing"] = timing(before, scrape(metrics_url), archive)
        results.append(row)
        log(
            f"[{i:2d}/{len(rows)}] {name:16s} c={conc:<3d} {point.req_per_s:8.1f} req/s "
            f"{point.items_per_s:9.1f} items/s  p50 {point.p50_ms:7.1f}  p99 {point.p99_ms:7.1f} ms"
            f"  err {point.errors}  client {point.client_cpu:.2f} / server "
            f"{point.server_cpu:.2f} cores"
        )
    return results
