"""`make bench`'s targets: the goals, the peers' figures quoted in issue 11, and the ratios.

Everything here is a function of the result dict that `python -m loadtests.bench`
measures (and writes as JSON), so the targets of a saved run can be recomputed.
Row labels: `encode x1`, `decode x64`, `sample n=1`... are the project's JSON API
(base64 PNG in JSON); `v2 encode x1`... the Open Inference Protocol with binary
tensors (`/v2/models/<archive>/infer`); `noop x1`... the framework ceiling.
"""

from __future__ import annotations

from loadtests.bench.peers import against_peers

TARGETS = {
    "encode64_vs_compute": 0.50,  # JSON items/s at 64 images per request / compute at batch 64
    "encode1_vs_noop": 0.85,  # single-image req/s / no-op req/s, same payload and concurrency
    "batching_on_vs_off": 2.00,  # req/s with the shipped batching / batchSize 1, concurrency 32
    # p50 of a lone (1 client) single-item request minus the model's own time at batch 1,
    # the worst over the operations and both wires
    "lone1_p50_over_model_ms": 2.0,
    # p50 of a lone binary 64-image encode minus the model's own time at batch 64
    "lone64_v2_encode_p50_over_model_ms": 2.0,
    # binary 64-image items/s, the lowest at >= 8 clients / in-process at batch 64 with the
    # threads the operation's workers have (workers x cpu_threads, at most the cores)
    "v2_encode64_vs_compute": 0.80,
    "v2_decode64_vs_compute": 0.70,
    # at every row of issue 11's table: ours / the best quoted peer (the range's high end)
    "json_vs_best_peer": 1.00,  # JSON API against the JSON peers (FastAPI, LitServe, Ray)
    "v2_vs_triton": 1.00,  # binary tensors against Triton's binary tensors
    "cold_start_s": 20.0,  # start -> every worker READY (what make serve loads)
    "worker_kill_recovery_s": 10.0,  # kill -> the service answers right again
}
SATURATED = 0.8  # a point whose machine CPU is above this share of the cores is CPU-bound
MANY_CLIENTS = 8  # the ceiling targets hold at this many clients and more

# the lone single-item rows and the module whose own time bounds them
LONE1 = {
    "encode x1": "encoder",
    "v2 encode x1": "encoder",
    "decode x1": "decoder",
    "v2 decode x1": "decoder",
    "sample n=1": "decoder",
    "v2 sample n=1": "decoder",
}


def pick(rows: list[dict], label: str, c: int | None = None) -> list[dict]:
    return [r for r in rows if r["label"] == label and (c is None or r["concurrency"] == c)]


def one(rows: list[dict], label: str, c: int) -> dict | None:
    found = pick(rows, label, c)
    return found[0] if found else None


def worker_threads(result: dict, op: str) -> int:
    """Torch threads of one worker of the operation (what a lone request gets)."""
    w = result["worker"]
    return w.get(f"{op}_threads", w["handler"]["cpu_threads"])  # older runs: one setting


def op_threads(result: dict, op: str) -> int:
    """The CPU an operation's archive has: its workers x torch threads each (<= the cores)."""
    cores, w = result["machine"]["cores"], result["worker"]
    return min(cores, w[f"{op}_workers"] * worker_threads(result, op))


def compute_threads(result: dict) -> int:
    """The CPU the served encode has (what the 64-image targets compare against)."""
    return op_threads(result, "encode")


def cpu_us_per_request(point: dict) -> float:
    """Busy CPU of the whole machine (server, client, anything) per answered request."""
    return point["machine_cpu"] / point["req_per_s"] * 1e6 if point["req_per_s"] else float("nan")


def encode1_bound(result: dict, noop: dict) -> float | None:
    """The best single-image ratio any handler could reach at this point.

    When the no-op point is CPU-bound, the service needs at least the no-op's
    CPU per request plus the model's own compute per item at the dynamic batch
    size (in-process, one thread: a worker's setting). Even with free input
    decoding and output encoding its ratio to the no-op cannot exceed
    noop / (noop + model). None when the no-op point is not CPU-bound (then the
    batching delay, not the CPU, sets both).
    """
    if noop["machine_cpu"] < SATURATED * result["machine"]["cores"]:
        return None
    batch = str(result["worker"]["batch_size"])
    per_item = result["compute"]["encoder"]["1"].get(batch)
    if not per_item:
        return None
    noop_us, model_us = cpu_us_per_request(noop), 1e6 / per_item
    return noop_us / (noop_us + model_us)


def lone_over_model(result: dict, big: int) -> tuple[dict, dict]:
    """p50 of lone requests (1 client) minus the model's own p50 in-process, in ms.

    The model runs with the threads one worker of the row's operation has, at
    batch 1 for the single-item rows and at batch `big` for the binary
    `big`-image encode.
    """
    rows, own = result["points"], result["compute_p50_ms"]
    per_row = {}
    for label, module in LONE1.items():
        if (p := one(rows, label, 1)) is not None:
            op = label.removeprefix("v2 ").split()[0]
            model = own[module][str(worker_threads(result, op))]["1"]
            per_row[label] = {
                "p50_ms": p["p50_ms"],
                "model_ms": model,
                "over_ms": p["p50_ms"] - model,
            }
    worst = max(per_row, key=lambda k: per_row[k]["over_ms"], default=None)
    single = {
        "value": per_row[worst]["over_ms"] if worst else None,
        "worst": worst,
        "rows": per_row,
    }
    p = one(rows, f"v2 encode x{big}", 1)
    model = own["encoder"][str(worker_threads(result, "encode"))][str(big)]
    big_row = {
        "value": p["p50_ms"] - model if p else None,
        "p50_ms": p["p50_ms"] if p else None,
        "model_ms": model,
    }
    return single, big_row


def v2_vs_compute(result: dict, op: str, big: int) -> dict:
    """The lowest binary `big`-item items/s at >= MANY_CLIENTS / the in-process ceiling."""
    threads = op_threads(result, op)
    module = {"encode": "encoder", "decode": "decoder"}[op]
    ceiling = result["compute"][module][str(threads)][str(big)]
    points = [
        p for p in pick(result["points"], f"v2 {op} x{big}") if p["concurrency"] >= MANY_CLIENTS
    ]
    per_c = {p["concurrency"]: p["items_per_s"] / ceiling for p in points}
    return {
        "value": min(per_c.values()) if per_c else None,
        "per_concurrency": per_c,
        "compute_items_per_s": ceiling,
        "compute_threads": threads,
    }


def ratios(result: dict, big: int, batch_c: int, encode1_c: tuple[int, ...]) -> dict:
    rows = result["points"]
    threads = compute_threads(result)
    ceiling64 = result["compute"]["encoder"][str(threads)][str(big)]
    enc64 = max(pick(rows, f"encode x{big}"), key=lambda r: r["items_per_s"])
    per_c, bounds = {}, {}
    for c in encode1_c:
        svc, noop = pick(rows, "encode x1", c)[0], pick(rows, "noop x1", c)[0]
        per_c[c] = svc["req_per_s"] / noop["req_per_s"] if noop["req_per_s"] else float("nan")
        bounds[c] = encode1_bound(result, noop)
    on = pick(rows, "batching on x1", batch_c)[0]
    off = pick(rows, "batching off x1", batch_c)[0]
    kill = result["worker_kill"]
    cores = str(result["machine"]["cores"])
    lone1, lone64 = lone_over_model(result, big)
    json_peers, v2_triton = against_peers(result["points"] + result.get("peer_points", []))
    return {
        "encode64_vs_compute": {
            "value": enc64["items_per_s"] / ceiling64,
            "service_items_per_s": enc64["items_per_s"],
            "at_concurrency": enc64["concurrency"],
            "compute_items_per_s": ceiling64,
            "compute_threads": threads,
            "compute_all_cores_items_per_s": result["compute"]["encoder"][cores][str(big)],
            "vs_one_thread": enc64["items_per_s"] / result["compute"]["encoder"]["1"][str(big)],
        },
        "encode1_vs_noop": {
            "value": min(per_c.values()),
            "per_concurrency": per_c,
            "bound_per_concurrency": bounds,
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
        "lone1_p50_over_model_ms": lone1,
        "lone64_v2_encode_p50_over_model_ms": lone64,
        "v2_encode64_vs_compute": v2_vs_compute(result, "encode", big),
        "v2_decode64_vs_compute": v2_vs_compute(result, "decode", big),
        "json_vs_best_peer": json_peers,
        "v2_vs_triton": v2_triton,
        "cold_start_s": {"value": result["cold_start"]["seconds"]},
        "worker_kill_recovery_s": {"value": kill["recovery_s"]},
    }


def met(name: str, value: float | None) -> bool:
    """Whether `value` meets target `name`; a target not measured (None, NaN) is not met."""
    if value is None or value != value:
        return False
    goal = TARGETS[name]
    return value <= goal if name.endswith(("_s", "_ms")) else value >= goal
