"""The load points of `make bench`: its plan, the payloads and answer checks, and running them.

`load_points` runs every point of the `Plan` against the bench server with the
closed-loop generator (`loadtests/httpgen.py`): encode of 1 and of `big`
images (the service and the no-op framework ceiling), decode and sample, and
dynamic batching on versus off. Every archive first gets a few seconds of
unrecorded load (the frontend's JIT), and every answer is checked cheaply (keys
counted, not parsed), so errors are counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadtests import compute, payloads
from loadtests.benchserver import timing
from loadtests.httpgen import run_point
from paths import STORE
from serving.query import scrape
from serving.server import RunningServer


@dataclass(frozen=True)
class Plan:
    encode1_c: tuple[int, ...] = (1, 4, 16, 32, 64)
    # 64-image requests: 16 clients are exactly 2 encode workers x batchSize 8 in
    # service at once (a worker idles while its clients send their next request);
    # at 32 a queue keeps both busy
    encode64_c: tuple[int, ...] = (1, 4, 16, 32)
    other_c: tuple[int, ...] = (1, 8, 32)
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
        return cls((1, 16), (4,), (8,), 32, 64, 2.0, 0.5, 0.5, jit_warmup=1.0)

    @classmethod
    def targets(cls) -> Plan:
        """Only the points the targets need, at the concurrencies that saturate."""
        return cls((16, 32, 64), (16, 32), (), 32, 64, 5.0, 1.5, 2.0)


# ---- checks of answers (cheap: counted keys, not parsed) --------------------------
def counts(key: bytes, items: int):
    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}: {body[:160]!r}"
        got = body.count(key)
        return None if got == items else f"{got} {key.decode()} in the answer, expected {items}"

    return check


def exact_length(n: int):
    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}"
        return None if len(body) == n else f"{len(body)} bytes, expected {n}"

    return check


def load_points(server: RunningServer, model: str, plan: Plan, names: dict, log) -> list[dict]:
    metrics_url = server.metrics_url
    pids = server.all_pids()
    dim_latents = payloads.test_images()[:512]
    big = plan.big
    enc = {k: payloads.encode_pool(k, 32, seed=k) for k in (1, big)}
    # decode gets the codes of real test images, computed in-process by the encoder
    encoder = compute.load(STORE / model, "encoder.pt")
    import torch

    with torch.inference_mode():
        out = encoder(torch.from_numpy(dim_latents.astype(np.float32) / 255.0)[:, None])
    latents = (out[0] if isinstance(out, tuple) else out).numpy()
    dec = {k: payloads.decode_pool(latents, k, 32, seed=k) for k in (1, big)}
    smp = {k: payloads.sample_pool(k, 32, seed=k) for k in (1, big)}
    noop_len = names["noop_len"]

    plan_rows = []  # (label, archive, pool, items, check, concurrency)
    for c in plan.encode1_c:
        plan_rows.append(("noop x1", names["noop1"], enc[1], 1, exact_length(noop_len[1]), c))
        plan_rows.append(("encode x1", f"{model}-encode", enc[1], 1, counts(b'"z_mean"', 1), c))
    for c in plan.encode64_c:
        plan_rows.append(
            (f"noop x{big}", names["noop64"], enc[big], big, exact_length(noop_len[big]), c)
        )
        plan_rows.append(
            (f"encode x{big}", f"{model}-encode", enc[big], big, counts(b'"z_mean"', big), c)
        )
    for c in plan.other_c:
        for k in (1, big):
            plan_rows.append(
                (f"decode x{k}", f"{model}-decode", dec[k], k, counts(b'"image_b64"', k), c)
            )
            plan_rows.append(
                (f"sample n={k}", f"{model}-sample", smp[k], k, counts(b'"image_b64"', k), c)
            )
    c = plan.batch_c
    plan_rows.append(("batching off x1", names["b1"], enc[1], 1, counts(b'"z_mean"', 1), c))
    plan_rows.append(("batching on x1", f"{model}-encode", enc[1], 1, counts(b'"z_mean"', 1), c))

    warmed = set()
    for label, archive, pool, items, check, _ in plan_rows:
        if (archive, items) not in warmed:
            warmed.add((archive, items))
            log(f"JIT warm-up: {label} ({archive}), {plan.jit_warmup:g} s at 32 clients")
            path = f"/predictions/{archive}"
            warm = run_point(server.url, path, pool.next, 32, plan.jit_warmup, 0.0, items, check)
            if warm.errors:
                raise RuntimeError(f"warm-up of {archive} failed: {warm.error_samples}")

    results = []
    for i, (label, archive, pool, items, check, conc) in enumerate(plan_rows, 1):
        before = scrape(metrics_url)
        point = run_point(
            server.url,
            f"/predictions/{archive}",
            pool.next,
            conc,
            plan.duration,
            plan.warmup,
            items_per_request=items,
            check=check,
            server_pids=pids,
            label=label,
        )
        row = point.to_dict() | {"archive": archive}
        row["timing"] = timing(before, scrape(metrics_url), archive)
        results.append(row)
        log(
            f"[{i:2d}/{len(plan_rows)}] {label:16s} c={conc:<3d} {point.req_per_s:8.1f} req/s "
            f"{point.items_per_s:9.1f} items/s  p50 {point.p50_ms:7.1f}  p99 {point.p99_ms:7.1f} ms"
            f"  err {point.errors}  client {point.client_cpu:.2f} / server "
            f"{point.server_cpu:.2f} cores"
        )
    return results
