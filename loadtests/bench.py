"""`make bench`: how fast is latentserve on this machine, as ratios measured in one run.

    python -m loadtests.bench [--quick] [--model fashion-vae] [--out loadtests/results]

One run measures, in this order, with nothing else of ours running:

1. compute ceiling: in-process TorchScript items/s of the encoder and decoder at
   batch 1 and 64, with 1 torch thread (what one worker gets: `cpu_threads` 1)
   and with every core;
2. cold start: seconds from starting TorchServe with what `make serve` loads
   (every shipped model, three archives each) until every worker is READY;
3. then one bench TorchServe on free loopback ports with the model's three
   archives (the shipped model-config), a batching-off copy of its encode
   archive (batchSize 1) and two no-op archives (`loadtests/noop_handler.py`)
   that answer the exact bytes the real encode returns for 1 and 64 images;
   on it, closed-loop load (`loadtests/httpgen.py`) at several concurrencies:
   encode of 1 and of 64 images (service and no-op framework ceiling), decode
   of 1 and 64 latents, sample of 1 and 64 images; dynamic batching on versus
   off at concurrency 32; and a worker kill under load (recovery time).

It writes `<out>/bench-<timestamp>.json`, `.md` and `.png`, and copies them to
`<out>/latest.{json,md}` and `docs/figures/bench.png` (what the README shows).
Payloads are Fashion-MNIST test images as base64 PNG in JSON, as clients send
them; every answer is checked (status and item count), so errors are counted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from loadtests import chaos, compute, payloads
from loadtests.httpgen import cpu_seconds_self, machine_busy_seconds, run_point
from loadtests.live import STORE, RunningServer, ServerSpec, running_server, shipped_models
from serving.process import ROOT
from training.archive import WorkerConfig, build_archives

NOOP_HANDLER = Path(__file__).resolve().parent / "noop_handler.py"
FIGURE = ROOT / "docs" / "figures" / "bench.png"
TARGETS = {
    "encode64_vs_compute": 0.50,  # service items/s at 64 images per request / compute at batch 64
    "encode1_vs_noop": 0.85,  # single-image req/s / no-op req/s, same payload and concurrency
    "batching_on_vs_off": 1.30,  # req/s with the shipped batching / batchSize 1, concurrency 32
    "cold_start_s": 20.0,  # start -> every worker READY (what make serve loads)
    "worker_kill_recovery_s": 10.0,  # kill -> the service answers right again
}


@dataclass(frozen=True)
class Plan:
    encode1_c: tuple[int, ...] = (1, 4, 16, 32, 64)
    encode64_c: tuple[int, ...] = (1, 4, 16)
    other_c: tuple[int, ...] = (1, 8, 32)
    batch_c: int = 32
    big: int = 64
    duration: float = 6.0
    warmup: float = 1.5
    compute_seconds: float = 2.0

    @classmethod
    def quick(cls) -> Plan:
        """A functional check of the harness (numbers too short to quote)."""
        return cls((1, 16), (4,), (8,), 32, 64, 2.0, 0.5, 0.5)

    @classmethod
    def targets(cls) -> Plan:
        """Only the points the targets need, at the concurrencies that saturate."""
        return cls((16, 32, 64), (4, 16), (), 32, 64, 5.0, 1.5, 2.0)


# ---- machine and metrics --------------------------------------------------------
def machine() -> dict:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        int(line.split()[1]) // 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    import torch
    from ts.version import __version__ as ts_version

    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_mib": mem,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchserve": ts_version,
        "java": subprocess.run(
            ["java", "-version"], capture_output=True, text=True
        ).stderr.splitlines()[0],
    }


def scrape(metrics_url: str) -> dict[tuple[str, str], float]:
    """{(sample name, model or Operation/Stage label): value} for the timing metrics."""
    text = requests.get(f"{metrics_url}/metrics", timeout=10).text
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            label = s.labels.get("model_name") or s.labels.get("ModelName") or ""
            stage = s.labels.get("Stage")
            key = (s.name, f"{label}/{stage}" if stage else label)
            out[key] = out.get(key, 0.0) + s.value
    return out


def timing(before: dict, after: dict, archive: str) -> dict:
    """Per request and per batch timings of one point from TorchServe's and our metrics."""

    def delta(name: str, label: str = archive) -> float:
        # prometheus_client's parser may call a counter's sample <name>_total
        return sum(
            after.get((n, label), 0.0) - before.get((n, label), 0.0)
            for n in {name, f"{name}_total"}
        )

    reqs = delta("ts_inference_requests_total")
    batches = delta("latentserve_batch_requests_count")
    out = {}
    if reqs > 0:
        out["queue_ms_per_request"] = delta("ts_queue_latency_microseconds") / reqs / 1000
        out["inference_ms_per_request"] = delta("ts_inference_latency_microseconds") / reqs / 1000
    if batches > 0:
        out["requests_per_batch"] = delta("latentserve_batch_requests_sum") / batches
        for stage in ("decode_input", "model", "encode_output"):
            s = delta("latentserve_stage_seconds_sum", f"{archive}/{stage}")
            out[f"{stage}_ms_per_batch"] = s / batches * 1000
    return out


# ---- archives of the bench server -----------------------------------------------
def reference_reply(model_dir: Path, body: bytes) -> str:
    """The exact answer the real encode handler gives `body` (run in-process)."""
    from handlers.codecs import RawRequest
    from handlers.device import placement
    from handlers.engine import Engine
    from handlers.limits import LIMITS
    from handlers.operations import FILES, OPERATIONS, ModelInfo, load_script
    from handlers.options import HandlerOptions

    options = HandlerOptions()
    place = placement(None, options, cuda_available=False)
    info = ModelInfo.from_dir(model_dir)
    module = load_script(model_dir, info, FILES["encode"], place)
    engine = Engine(OPERATIONS["encode"](info, module, LIMITS), options, place)
    replies, _ = engine.handle([RawRequest(body, "application/json")])
    assert replies[0].status == 200, replies[0].body
    return replies[0].body


def build_noop(store: Path, name: str, reply: str, worker: WorkerConfig) -> str:
    stage = store / ".noop" / name
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    (stage / "reply.json").write_text(reply)
    config = worker.model_config()
    config.pop("handler")
    (stage / "model-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    cmd = [
        str(archiver), "--model-name", name, "--version", "1.0",
        "--handler", str(NOOP_HANDLER), "--extra-files", str(stage / "reply.json"),
        "--config-file", str(stage / "model-config.yaml"),
        "--export-path", str(store), "--force",
    ]  # fmt: skip
    env = dict(os.environ, TMPDIR=str(stage))
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return name


def build_unbatched(store: Path, tmp: Path, model: str, worker: WorkerConfig) -> str:
    """The model's encode archive with batchSize 1, as `<model>-b1-encode`."""
    src, dst = STORE / model, tmp / "models" / f"{model}-b1"
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).unlink(missing_ok=True)
            (dst / f.name).symlink_to(f.resolve())
    unbatched = dataclasses.replace(worker, batch_size=1)
    build_archives(dst.parent, store, [dst.name], unbatched, log=lambda *_: None)
    return f"{dst.name}-encode"


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
    models = shipped_models()
    log(f"cold start: TorchServe with every shipped model {models} (what `make serve` loads)")
    with running_server(ServerSpec(models=models, worker=worker), tmp / "cold") as server:
        workers = sum(len(p) for p in server.worker_pids().values())
        return {"models": models, "workers": workers, "seconds": server.ready_seconds}


def load_points(server: RunningServer, model: str, plan: Plan, names: dict, log) -> list[dict]:
    metrics_url = server.process.metrics_url
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
    log("worker kill: SIGKILL the encode worker under load (4 clients), measure recovery")
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


def pick(rows: list[dict], label: str, c: int | None = None) -> list[dict]:
    return [r for r in rows if r["label"] == label and (c is None or r["concurrency"] == c)]


def compute_threads(result: dict) -> int:
    w = result["worker"]
    return min(result["machine"]["cores"], w["maxWorkers"] * w["handler"]["cpu_threads"])


def ratios(result: dict, plan: Plan) -> dict:
    rows, big = result["points"], plan.big
    # the same CPU as the served encode: workers x torch threads per worker (<= cores)
    threads = compute_threads(result)
    ceiling64 = result["compute"]["encoder"][str(threads)][str(big)]
    enc64 = max(pick(rows, f"encode x{big}"), key=lambda r: r["items_per_s"])
    per_c = {}
    for c in plan.encode1_c:
        svc, noop = pick(rows, "encode x1", c)[0], pick(rows, "noop x1", c)[0]
        per_c[c] = svc["req_per_s"] / noop["req_per_s"] if noop["req_per_s"] else float("nan")
    on = pick(rows, "batching on x1", plan.batch_c)[0]
    off = pick(rows, "batching off x1", plan.batch_c)[0]
    kill = result["worker_kill"]
    return {
        "encode64_vs_compute": {
            "value": enc64["items_per_s"] / ceiling64,
            "service_items_per_s": enc64["items_per_s"],
            "at_concurrency": enc64["concurrency"],
            "compute_items_per_s": ceiling64,
            "compute_threads": threads,
            "compute_all_cores_items_per_s": result["compute"]["encoder"][
                str(result["machine"]["cores"])
            ][str(big)],
        },
        "encode1_vs_noop": {
            "value": min(per_c.values()),
            "per_concurrency": per_c,
            "peak_ratio": max(r["req_per_s"] for r in pick(rows, "encode x1"))
            / max(r["req_per_s"] for r in pick(rows, "noop x1")),
        },
        "batching_on_vs_off": {
            "value": on["req_per_s"] / off["req_per_s"],
            "on_req_per_s": on["req_per_s"],
            "off_req_per_s": off["req_per_s"],
            "on_p99_ms": on["p99_ms"],
            "off_p99_ms": off["p99_ms"],
        },
        "cold_start_s": {"value": result["cold_start"]["seconds"]},
        "worker_kill_recovery_s": {"value": kill["recovery_s"]},
    }


def met(name: str, value: float | None) -> bool:
    if value is None or value != value:
        return False
    goal = TARGETS[name]
    return value <= goal if name.endswith("_s") else value >= goal


# ---- reports ------------------------------------------------------------------------
def markdown(result: dict, plan: Plan) -> str:
    m, r = result["machine"], result["ratios"]
    lines = [
        f"# latentserve benchmark, {result['started']}",
        "",
        f"Machine: {m['cores']} cores, {m['cpu']}, {m['memory_mib'] // 1024} GiB, no GPU; "
        f"Python {m['python']}, torch {m['torch']}, TorchServe {m['torchserve']}, {m['java']}. "
        f"Command: `{result['command']}` ({result['seconds']:.0f} s). Model: "
        f"`{result['model']}`; archive settings"
        f"{' (a VARIANT, not the shipped ones)' if result.get('variant_of_shipped_config') else ''}"
        ": batchSize "
        f"{result['worker']['batchSize']}, maxBatchDelay {result['worker']['maxBatchDelay']} ms, "
        f"{result['worker']['minWorkers']} worker per archive, "
        f"{result['worker']['handler']['cpu_threads']} torch thread per worker. Payloads: "
        "Fashion-MNIST test images as base64 PNG in JSON; every answer checked. "
        f"Cores busy before the run: {result['busy_cores_before']:.2f}.",
        "",
        "## Targets (ratios from this run)",
        "",
        "| target | measured | goal | met |",
        "| --- | --- | --- | --- |",
    ]
    e64, e1, b = r["encode64_vs_compute"], r["encode1_vs_noop"], r["batching_on_vs_off"]
    per_c = ", ".join(f"c{c}: {v:.2f}" for c, v in e1["per_concurrency"].items())
    rows = [
        (
            "encode64_vs_compute",
            f"{e64['value']:.2f} ({e64['service_items_per_s']:.0f} items/s at "
            f"c={e64['at_concurrency']} / {e64['compute_items_per_s']:.0f} in-process, "
            f"batch 64, {e64['compute_threads']} thread(s) = workers x cpu_threads)",
            f">= {TARGETS['encode64_vs_compute']:.2f}",
        ),
        (
            "encode1_vs_noop",
            f"{e1['value']:.2f} (lowest over concurrencies; {per_c})",
            f">= {TARGETS['encode1_vs_noop']:.2f}",
        ),
        (
            "batching_on_vs_off",
            f"{b['value']:.2f}x ({b['on_req_per_s']:.0f} vs {b['off_req_per_s']:.0f} req/s, "
            f"c={plan.batch_c})",
            f">= {TARGETS['batching_on_vs_off']:.2f}x",
        ),
        (
            "cold_start_s",
            f"{r['cold_start_s']['value']:.1f} s ({result['cold_start']['workers']} workers)",
            f"<= {TARGETS['cold_start_s']:.0f} s",
        ),
        (
            "worker_kill_recovery_s",
            "n/a"
            if r["worker_kill_recovery_s"]["value"] is None
            else f"{r['worker_kill_recovery_s']['value']:.1f} s",
            f"<= {TARGETS['worker_kill_recovery_s']:.0f} s",
        ),
    ]
    for name, measured, goal in rows:
        lines.append(
            f"| {name} | {measured} | {goal} | {'yes' if met(name, r[name]['value']) else 'NO'} |"
        )
    comp = result["compute"]
    lines += [
        "",
        "## Compute ceiling (in-process TorchScript, items/s)",
        "",
        "| module | torch threads | batch 1 | batch 64 |",
        "| --- | --- | --- | --- |",
    ]
    for mod in ("encoder", "decoder"):
        for t, by_b in comp[mod].items():
            lines.append(f"| {mod} | {t} | {by_b['1']:.0f} | {by_b[str(plan.big)]:.0f} |")
    lines += [
        "",
        "## Service at several concurrencies",
        "",
        "Closed loop, each point "
        f"{plan.duration:g} s after {plan.warmup:g} s warm-up. `no-op` is the framework ceiling: "
        "a handler that answers the same bytes without any work. Client and server CPU are in "
        "cores (of "
        f"{m['cores']}); queue and handler times from TorchServe's and the handler's metrics.",
        "",
        "| endpoint | items/req | conc. | req/s | items/s | p50 ms | p95 ms | p99 ms | errors | "
        "req/batch | queue ms | client CPU | server CPU | other CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in result["points"]:
        t = p["timing"]
        lines.append(
            f"| {p['label']} | {p['items_per_request']} | {p['concurrency']} | "
            f"{p['req_per_s']:.1f} | {p['items_per_s']:.0f} | {p['p50_ms']:.1f} | "
            f"{p['p95_ms']:.1f} | {p['p99_ms']:.1f} | {p['errors']} | "
            f"{_num(t.get('requests_per_batch'))} | "
            f"{_num(t.get('queue_ms_per_request'))} | {p['client_cpu']:.2f} | "
            f"{p['server_cpu']:.2f} | {_other(p):.2f} |"
        )
    k = result["worker_kill"]
    share = result["client_cpu"]
    lines += [
        "",
        "## Cold start and worker kill",
        "",
        f"- cold start (`make serve`'s models {', '.join(result['cold_start']['models'])}: "
        f"{result['cold_start']['workers']} workers): {result['cold_start']['seconds']:.1f} s "
        f"to every worker READY; the bench server ({result['bench_server']['workers']} workers): "
        f"{result['bench_server']['ready_s']:.1f} s.",
        f"- worker kill under load (4 clients, single-image encode): worker READY again after "
        f"{_fmt(k['kill_to_worker_ready_s'])} s, first right answer to a request sent after the "
        f"kill after {_fmt(k['recovery_s'])} s; {k['failed']} of {k['requests']} requests failed "
        f"({k['in_flight_at_kill']} were in flight at the kill, {k['failed_not_in_flight']} "
        f"failures outside that), {k['retried'] - k['retry_failures']}/{k['retried']} retries "
        f"succeeded. Errors: {'; '.join(k['error_samples']) or 'none'}.",
        "",
        "## Load generator and other load",
        "",
        f"asyncio keep-alive client in one process: at most {share['max_cores']:.2f} cores, "
        f"{share['max_share_of_busy'] * 100:.0f}% of all busy CPU at any point (mean "
        f"{share['mean_share_of_busy'] * 100:.0f}%); bench process CPU over the run "
        f"{share['run_cpu_s']:.0f} s. Other processes on the machine used at most "
        f"{max(_other(p) for p in result['points']):.2f} cores during a point"
        + (
            " (the numbers are disturbed: run again on an idle machine)."
            if max(_other(p) for p in result["points"]) > 0.2
            else " (an undisturbed run)."
        ),
        "",
    ]
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def _other(p: dict) -> float:
    """Cores used by processes that are neither the server nor the load generator."""
    return max(0.0, p["machine_cpu"] - p["server_cpu"] - p["client_cpu"])


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def idle_check(seconds: float = 3.0) -> float:
    """Cores busy on the machine over a few seconds before the run (should be ~0)."""
    start = machine_busy_seconds()
    time.sleep(seconds)
    return (machine_busy_seconds() - start) / seconds


def plot(result: dict, plan: Plan, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, big = result["points"], plan.big
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    series = [
        ("encode x1", "C0", "-"),
        ("noop x1", "C0", ":"),
        (f"encode x{big}", "C1", "-"),
        (f"noop x{big}", "C1", ":"),
        ("decode x1", "C2", "-"),
        (f"decode x{big}", "C2", "--"),
        ("sample n=1", "C4", "-"),
        (f"sample n={big}", "C4", "--"),
    ]
    for label, color, style in series:
        pts = sorted(pick(rows, label), key=lambda r: r["concurrency"])
        if not pts:
            continue
        xs = [p["concurrency"] for p in pts]
        name = label.replace("noop", "no-op ceiling")
        ax1.plot(xs, [p["items_per_s"] for p in pts], style, color=color, marker="o", label=name)
        ax2.plot(xs, [p["p99_ms"] for p in pts], style, color=color, marker="o", label=name)
    t = compute_threads(result)
    comp = result["compute"]["encoder"][str(t)]
    where = f"encoder in-process, {t} thread{'s' if t > 1 else ''}"
    ax1.axhline(comp[str(big)], color="C1", lw=0.8, ls="-.", label=f"{where}, batch {big}")
    ax1.axhline(comp["1"], color="C0", lw=0.8, ls="-.", label=f"{where}, batch 1")
    ticks = sorted({r["concurrency"] for r in rows})
    for ax, title, unit in ((ax1, "throughput", "items/s"), (ax2, "p99 latency", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7, loc="upper left", ncol=2)
    m = result["machine"]
    fig.suptitle(
        f"latentserve {result['model']}: {m['cores']} cores ({m['cpu']}), {result['started']}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(model: str, plan: Plan, worker: WorkerConfig, log=print) -> dict:
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t0, cpu0 = time.monotonic(), cpu_seconds_self()
    result: dict = {
        "started": started,
        "command": " ".join(["python -m loadtests.bench", *sys.argv[1:]]),
        "model": model,
        "machine": machine(),
        "worker": worker.model_config(),
        "plan": plan.__dict__,
        "targets": TARGETS,
    }
    cores = result["machine"]["cores"]
    result["busy_cores_before"] = busy = idle_check()
    log(f"machine busy before the run: {busy:.2f} cores")
    if busy > 0.25:
        log(f"WARNING: {busy:.2f} cores busy before the run: the numbers will be low and noisy")
    log(f"compute ceiling of {model} (in-process TorchScript)")
    threads = tuple(sorted({1, compute_threads(result), cores}))
    comp = compute.ceilings(STORE / model, (1, plan.big), threads, plan.compute_seconds)
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
        spec = ServerSpec(models=[model], extra=extra, worker=worker)
        with running_server(spec, tmp / "bench") as server:
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
    result["ratios"] = ratios(result, plan)
    result["met"] = {k: met(k, v["value"]) for k, v in result["ratios"].items()}
    return result


def write(result: dict, plan: Plan, out: Path, latest: bool) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = out / f"bench-{stamp}"
    paths = [base.with_suffix(".json"), base.with_suffix(".md"), base.with_suffix(".png")]
    paths[0].write_text(json.dumps(result, indent=2, default=float) + "\n")
    paths[1].write_text(markdown(result, plan))
    plot(result, plan, paths[2])
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
    p.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results")
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
        "--workers", type=int, default=shipped.min_workers, help="workers per archive (shipped)"
    )
    a = p.parse_args(argv)
    plan = Plan.quick() if a.quick else Plan.targets() if a.targets_only else Plan()
    worker = dataclasses.replace(
        shipped,
        batch_size=a.batch_size,
        max_batch_delay_ms=a.max_batch_delay,
        min_workers=a.workers,
        max_workers=a.workers,
    )
    variant = worker != shipped
    result = run(a.model, plan, worker)
    result["variant_of_shipped_config"] = variant
    latest = not (a.no_latest or a.quick or a.targets_only or variant)
    paths = write(result, plan, a.out, latest=latest)
    print(markdown(result, plan))
    print("wrote " + ", ".join(str(x) for x in paths))
    missed = [k for k, ok in result["met"].items() if not ok]
    print("targets missed: " + ", ".join(missed) if missed else "every target met")


if __name__ == "__main__":
    main()
