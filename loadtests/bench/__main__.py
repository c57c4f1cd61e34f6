"""`python -m loadtests.bench` (`make bench`): the benchmark's run, command line and results.

What a run measures, and the modules it uses: the package's docstring
(`loadtests/bench/__init__.py`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from handlers.options import HandlerOptions
from loadtests import chaos, payloads
from loadtests.bench import compute
from loadtests.bench.checks import v2_outputs
from loadtests.bench.httpgen import cpu_seconds_self, machine_busy_seconds
from loadtests.bench.peers import fastapi_points
from loadtests.bench.plot import plot
from loadtests.bench.points import Plan, load_points
from loadtests.bench.report import markdown
from loadtests.bench.server import build_noop, build_unbatched, machine, reference_reply
from loadtests.bench.targets import TARGETS, met, op_threads, ratios, worker_threads
from paths import FIGURES, LOADTEST_RESULTS, SHIPPED_MODELS, STORE
from serving.server import RunningServer, start_server
from serving.workers import WorkerConfig

FIGURE = FIGURES / "bench.png"


# ---- the run -----------------------------------------------------------------------
def cold_start(tmp: Path, worker: WorkerConfig, log) -> dict:
    models = list(SHIPPED_MODELS)
    log(f"cold start: TorchServe with every shipped model {models} (what `make serve` loads)")
    dirs = [STORE / m for m in models]
    with start_server(tmp / "cold", dirs, worker=worker) as server:
        workers = sum(len(p) for p in server.worker_pids().values())
        return {"models": models, "workers": workers, "seconds": server.ready_seconds}


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
    ops = ("encode", "decode", "sample")
    served = {op_threads(result, op) for op in ops}
    one_worker = {worker_threads(result, op) for op in ops}  # a lone request's threads
    threads = tuple(sorted({1, cores} | one_worker | served))
    comp = compute.ceilings(STORE / model, plan.batches, threads, plan.compute_seconds)
    for key, name in (("items_per_s", "compute"), ("p50_ms", "compute_p50_ms")):
        result[name] = {
            mod: {str(t): {str(b): v for b, v in by_b.items()} for t, by_b in by_t.items()}
            for mod, by_t in comp[key].items()
        }
    log(json.dumps(result["compute"]) + " items/s; " + json.dumps(result["compute_p50_ms"]) + " ms")
    log("model formats: TorchScript against the AOTInductor package (1 thread)")
    by_format = compute.formats(STORE / model, seconds=plan.compute_seconds)
    result["compute_formats"] = {m: {str(b): v for b, v in r.items()} for m, r in by_format.items()}
    log(json.dumps(result["compute_formats"]) + " items/s")
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
    # after TorchServe stopped: the peer gets the machine to itself, as ours did
    result["peer_points"] = fastapi_points(STORE / model, plan, v2_outputs(model)["encode"], log)
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
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench",
        description="latentserve benchmark (what it measures: loadtests/bench/__init__.py)",
    )
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
