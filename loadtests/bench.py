"""`make bench`: how fast is latentserve on this machine, as ratios measured in one run.

    python -m loadtests.bench [--quick] [--model fashion-vae] [--out loadtests/results]

One run measures, in this order, with nothing else of ours running:

1. compute ceiling: in-process TorchScript items/s of the encoder and decoder at
   batch 1, 8 (a dynamic batch of single images) and 64, with 1 torch thread
   (what one worker gets: `cpu_threads` 1) and with every core;
2. cold start: seconds from starting TorchServe with what `make serve` loads
   (every shipped model, three archives each) until every worker is READY;
3. then one bench TorchServe on free loopback ports with the model's three
   archives (the shipped model-config), a batching-off copy of its encode
   archive (batchSize 1) and two no-op archives (`loadtests/noop_handler.py`,
   the encode archive's worker settings) that answer the exact bytes the real
   encode returns for 1 and 64 images;
   on it, closed-loop load (`loadtests/httpgen.py`) at several concurrencies:
   encode of 1 and of 64 images (service and no-op framework ceiling), decode
   of 1 and 64 latents, sample of 1 and 64 images; dynamic batching on versus
   off at concurrency 32; and a worker kill under load (recovery time).

It writes `<out>/bench-<timestamp>.json`, `.md` and `.png` (drawn by
`loadtests/benchreport.py`; the bench server's archives and metrics are in
`loadtests/benchserver.py`), and copies them to `<out>/latest.{json,md}` and
`docs/figures/bench.png` (what the README shows).
Payloads are Fashion-MNIST test images as base64 PNG in JSON, as clients send
them; every answer is checked (status and item count), so errors are counted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from handlers.options import HandlerOptions
from loadtests import chaos, compute, payloads
from loadtests.benchreport import TARGETS, compute_threads, markdown, met, plot, ratios
from loadtests.benchserver import build_noop, build_unbatched, machine, reference_reply, timing
from loadtests.httpgen import cpu_seconds_self, machine_busy_seconds, run_point
from paths import FIGURES, LOADTEST_RESULTS, SHIPPED_MODELS, STORE
from serving.archive import WorkerConfig
from serving.query import scrape
from serving.server import RunningServer, start_server

FIGURE = FIGURES / "bench.png"


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


# ---- the run -----------------------------------------------------------------------
def cold_start(tmp: Path, worker: WorkerConfig, log) -> dict:
    models = list(SHIPPED_MODELS)
    log(f"cold start: TorchServe with every shipped model {models} (what `make serve` loads)")
    dirs = [STORE / m for m in models]
    with start_server(tmp / "cold", dirs, worker=worker) as server:
        workers = sum(len(p) for p in server.worker_pids().values())
        return {"models": models, "workers": workers, "seconds": server.ready_seconds}


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


def worker_kill(server: RunningServer, model: str, log) -> dict:
    log("worker kill: SIGKILL an encode worker under load (4 clients), measure recovery")
    pool = payloads.encode_pool(1, 32, seed=7)
    report = chaos.kill_worker_under_load(
        server.url, server.management_url, f"{model}-encode", pool.bodies, _encode_check(model)
    )
    return report.to_dict()


def _encode_check(model: str):
    manifest = json.loads((STORE / model / "manifest.json").read_text())
    dim, vae = manifest["latent_dim"], manifest["kind"] == "vae"

    def check(resp) -> str | None:
        try:
            return payloads.check_encode(resp.json(), 1, dim, vae)
        except ValueError:
            return "not JSON"

    return check


def idle_check(seconds: float = 3.0) -> float:
    """Cores busy on the machine over a few seconds before the run (should be ~0)."""
    start = machine_busy_seconds()
    time.sleep(seconds)
    return (machine_busy_seconds() - start) / seconds


def run(model: str, plan: Plan, worker: WorkerConfig, log=print) -> dict:
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t0, cpu0 = time.monotonic(), cpu_seconds_self()
    result: dict = {
        "started": started,
        "command": " ".join(["python -m loadtests.bench", *sys.argv[1:]]),
        "model": model,
        "machine": machine(),
        "worker": asdict(worker) | {"handler": HandlerOptions().to_dict()},
        "plan": asdict(plan),
        "targets": TARGETS,
    }
    cores = result["machine"]["cores"]
    result["busy_cores_before"] = busy = idle_check()
    log(f"machine busy before the run: {busy:.2f} cores")
    if busy > 0.25:
        log(f"WARNING: {busy:.2f} cores busy before the run: the numbers will be low and noisy")
    log(f"compute ceiling of {model} (in-process TorchScript)")
    threads = tuple(sorted({1, compute_threads(result), cores}))
    comp = compute.ceilings(STORE / model, plan.batches, threads, plan.compute_seconds)
    result["compute"] = {
        mod: {str(t): {str(b): v for b, v in by_b.items()} for t, by_b in by_t.items()}
        for mod, by_t in comp.items()
    }
    log(json.dumps(result["compute"]))
    with tempfile.TemporaryDirectory(prefix="latentserve-bench-") as tmpdir:
        tmp = Path(tmpdir)
        result["cold_start"] = cold_start(tmp, worker, log)
        log(f"cold start: {result['cold_start']['seconds']:.1f} s")
        store = tmp / "bench" / "store"
        store.mkdir(parents=True)
        bodies = {k: payloads.encode_pool(k, 32, seed=k).bodies[0] for k in (1, plan.big)}
        replies = {k: reference_reply(STORE / model, b) for k, b in bodies.items()}
        names = {
            "noop1": build_noop(store, "noop-x1", replies[1], worker),
            "noop64": build_noop(store, f"noop-x{plan.big}", replies[plan.big], worker),
            "b1": build_unbatched(store, tmp, model, worker),
            "noop_len": {k: len(v.encode()) for k, v in replies.items()},
        }
        extra = [names["noop1"], names["noop64"], names["b1"]]
        with start_server(tmp / "bench", [STORE / model], extra, worker) as server:
            workers = sum(len(p) for p in server.worker_pids().values())
            result["bench_server"] = {"workers": workers, "ready_s": server.ready_seconds}
            log(f"bench server READY in {server.ready_seconds:.1f} s ({workers} workers)")
            result["points"] = load_points(server, model, plan, names, log)
            result["worker_kill"] = worker_kill(server, model, log)
            log(json.dumps(result["worker_kill"]))
    busy = [p for p in result["points"] if p["machine_cpu"] > 0]
    result["client_cpu"] = {
        "max_cores": max(p["client_cpu"] for p in result["points"]),
        "max_share_of_busy": max(p["client_cpu"] / p["machine_cpu"] for p in busy),
        "mean_share_of_busy": float(np.mean([p["client_cpu"] / p["machine_cpu"] for p in busy])),
        "run_cpu_s": cpu_seconds_self() - cpu0,
    }
    result["seconds"] = time.monotonic() - t0
    result["ratios"] = ratios(result, plan.big, plan.batch_c, plan.encode1_c)
    result["met"] = {k: met(k, v["value"]) for k, v in result["ratios"].items()}
    return result


def write(result: dict, out: Path, latest: bool) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = out / f"bench-{stamp}"
    paths = [base.with_suffix(".json"), base.with_suffix(".md"), base.with_suffix(".png")]
    paths[0].write_text(json.dumps(result, indent=2, default=float) + "\n")
    paths[1].write_text(markdown(result))
    plot(result, paths[2])
    if latest:
        for src, dst in zip(
            list(paths), (out / "latest.json", out / "latest.md", FIGURE), strict=True
        ):
            shutil.copyfile(src, dst)
            paths.append(dst)
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="latentserve benchmark (see the module docstring)")
    p.add_argument("--model", default="fashion-vae", help="shipped model to benchmark")
    p.add_argument("--out", type=Path, default=LOADTEST_RESULTS)
    p.add_argument("--quick", action="store_true", help="short points, few concurrencies")
    p.add_argument(
        "--targets-only",
        action="store_true",
        help="only the points the targets need (to compare settings quickly)",
    )
    p.add_argument(
        "--no-latest",
        action="store_true",
        help="do not update latest.{json,md} and docs/figures/bench.png "
        "(never updated by --quick or a variant of the shipped settings)",
    )
    shipped = WorkerConfig()
    p.add_argument(
        "--batch-size", type=int, default=shipped.batch_size, help="batchSize to try (shipped)"
    )
    p.add_argument(
        "--max-batch-delay",
        type=int,
        default=shipped.max_batch_delay_ms,
        help="maxBatchDelay ms to try (shipped)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="workers of every operation's archive (shipped: "
        f"encode {shipped.encode_workers}, decode {shipped.decode_workers}, "
        f"sample {shipped.sample_workers})",
    )
    a = p.parse_args(argv)
    plan = Plan.quick() if a.quick else Plan.targets() if a.targets_only else Plan()
    worker = replace(shipped, batch_size=a.batch_size, max_batch_delay_ms=a.max_batch_delay)
    if a.workers is not None:
        worker = worker.with_workers(a.workers)
    variant = worker != shipped
    result = run(a.model, plan, worker)
    result["variant_of_shipped_config"] = variant
    latest = not (a.no_latest or a.quick or a.targets_only or variant)
    paths = write(result, a.out, latest=latest)
    print(markdown(result))
    print("wrote " + ", ".join(str(x) for x in paths))
    missed = [k for k, ok in result["met"].items() if not ok]
    print("targets missed: " + ", ".join(missed) if missed else "every target met")


if __name__ == "__main__":
    main()
