"""The load points of `make bench`: its plan, the payloads and answer checks, and running them.

`load_points` runs every point of the `Plan` against the bench server with the
closed-loop generator (`loadtests/httpgen.py`): on the JSON API, encode of 1
and of `big` images (the service and the no-op framework ceiling), decode and
sample, and dynamic batching on versus off; on the Open Inference Protocol
with binary tensors (`v2 ...` rows, `/v2/models/<archive>/infer`), encode,
decode and sample of 1 and `big` items. Every archive first gets a few seconds of
unrecorded load (the frontend's JIT), and every answer is checked cheaply (keys
counted, not parsed), so errors are counted.
"""

from __future__ import annotations

import json
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
        v2 = (("encode", 1, (1,)), ("encode", 64, (8,)), ("decode", 1, (1,)))
        v2 += (("decode", 64, (8,)), ("sample", 1, (1,)), ("sample", 64, (8,)))
        return cls((1, 16), (4,), (8,), v2, 32, 64, 2.0, 0.5, 0.5, jit_warmup=1.0)

    @classmethod
    def targets(cls) -> Plan:
        """Only the points the targets need: the saturating ones, the lone ones, the peers'."""
        v2 = (("encode", 1, (1, 8, 32)), ("encode", 64, (1, 4, 8, 16, 32)))
        v2 += (("decode", 1, (1,)), ("decode", 64, (8, 16, 32)), ("sample", 1, (1,)))
        return cls((1, 8, 32, 64), (1, 4, 16, 32), (), v2, 32, 64, 5.0, 1.5, 2.0)


# ---- checks of answers (cheap: counted keys, not parsed) --------------------------
def counts(key: bytes, items: int):
    def check(status: int, body: bytes, headers: dict) -> str | None:
        if status != 200:
            return f"HTTP {status}: {body[:160]!r}"
        got = body.count(key)
        return None if got == items else f"{got} {key.decode()} in the answer, expected {items}"

    return check


def exact_length(n: int):
    def check(status: int, body: bytes, headers: dict) -> str | None:
        if status != 200:
            return f"HTTP {status}"
        return None if len(body) == n else f"{len(body)} bytes, expected {n}"

    return check


def v2_answer(items: int, outputs: dict[str, str]):
    """The v2 answer check (`payloads.check_v2`) of `items` items with `outputs`."""

    def check(status: int, body: bytes, headers: dict) -> str | None:
        return payloads.check_v2(status, body, headers, items, outputs)

    return check


def v2_outputs(model: str) -> dict[str, dict[str, str]]:
    """Each operation's outputs {name: datatype}, as the v2 contract names them."""
    vae = json.loads((STORE / model / "manifest.json").read_text())["kind"] == "vae"
    encode = {"z_mean": "FP32", "z_log_var": "FP32"} if vae else {"z_mean": "FP32"}
    return {"encode": encode, "decode": {"image": "UINT8"}, "sample": {"image": "UINT8"}}


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
    dec = {k: payloads.decode_pool(latents, k, 32, seed=k) for k in (1, big)}
    smp = {k: payloads.sample_pool(k, 32, seed=k) for k in (1, big)}
    v2_pools = {
        "encode": lambda k: payloads.v2_encode_pool(k, 32, seed=k),
        "decode": lambda k: payloads.v2_decode_pool(latents, k, 32, seed=k),
        "sample": lambda k: payloads.v2_sample_pool(k, 32, seed=k),
    }
    noop_len = names["noop_len"]

    rows = []  # (label, archive, path, pool, items, check, concurrency)

    def add(label, archive, pool, items, check, c, path=None):
        rows.append((label, archive, path or f"/predictions/{archive}", pool, items, check, c))

    for c in plan.encode1_c:
        add("noop x1", names["noop1"], enc[1], 1, exact_length(noop_len[1]), c)
        add("encode x1", f"{model}-encode", enc[1], 1, counts(b'"z_mean"', 1), c)
    for c in plan.encode64_c:
        add(f"noop x{big}", names["noop64"], enc[big], big, exact_length(noop_len[big]), c)
        add(f"encode x{big}", f"{model}-encode", enc[big], big, counts(b'"z_mean"', big), c)
    for c in plan.other_c:
        for k in (1, big):
            dcheck = counts(b'"image_b64"', k)
            add(f"decode x{k}", f"{model}-decode", dec[k], k, dcheck, c)
            add(f"sample n={k}", f"{model}-sample", smp[k], k, dcheck, c)
    outputs = v2_outputs(model)
    for op, k, concurrencies in plan.v2:
        archive, pool = f"{model}-{op}", v2_pools[op](k)
        label = f"v2 {op} {'n=' if op == 'sample' else 'x'}{k}"
        for c in concurrencies:
            add(label, archive, pool, k, v2_answer(k, outputs[op]), c, payloads.v2_path(archive))
    c = plan.batch_c
    add("batching off x1", names["b1"], enc[1], 1, counts(b'"z_mean"', 1), c)
    add("batching on x1", f"{model}-encode", enc[1], 1, counts(b'"z_mean"', 1), c)

    warmed = set()
    for label, _, path, pool, items, check, _ in rows:
        if (path, items) not in warmed:  # the v2 route is its own code in the frontend
            warmed.add((path, items))
            log(f"JIT warm-up: {label} ({path}), {plan.jit_warmup:g} s at 32 clients")
            warm = run_point(
                server.url, path, pool.next_request, 32, plan.jit_warmup, 0.0, items, check
            )
            if warm.errors:
                raise RuntimeError(f"warm-up of {path} failed: {warm.error_samples}")

    results = []
    for i, (label, archive, path, pool, items, check, conc) in enumerate(rows, 1):
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
            label=label,
        )
        row = point.to_dict() | {"archive": archive, "path": path}
        row["timing"] = timing(before, scrape(metrics_url), archive)
        results.append(row)
        log(
            f"[{i:2d}/{len(rows)}] {label:16s} c={conc:<3d} {point.req_per_s:8.1f} req/s "
            f"{point.items_per_s:9.1f} items/s  p50 {point.p50_ms:7.1f}  p99 {point.p99_ms:7.1f} ms"
            f"  err {point.errors}  client {point.client_cpu:.2f} / server "
            f"{point.server_cpu:.2f} cores"
        )
    return results
