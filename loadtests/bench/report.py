"""`make bench`'s report: the markdown (the targets are in `targets.py`, the figure in `plot.py`).

Everything here is a function of the result dict that `python -m loadtests.bench`
measures (and writes as JSON), so a report can be redrawn from a saved run.
"""

from __future__ import annotations

from loadtests.bench.compute import formats_markdown
from loadtests.bench.peers import peers_markdown
from loadtests.bench.targets import (
    MANY_CLIENTS,
    TARGETS,
    cpu_us_per_request,
    met,
    worker_threads,
)


def _fmt(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _other(p: dict) -> float:
    """Cores used by processes that are neither the server nor the load generator."""
    return max(0.0, p["machine_cpu"] - p["server_cpu"] - p["client_cpu"])


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} ms"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def settings(result: dict) -> str:
    w = result["worker"]
    return (
        f"batchSize {w['batch_size']}, maxBatchDelay {w['max_batch_delay_ms']} ms, workers "
        f"encode {w['encode_workers']} / decode {w['decode_workers']} / sample "
        f"{w['sample_workers']}, torch threads per worker "
        + " / ".join(f"{op} {worker_threads(result, op)}" for op in ("encode", "decode", "sample"))
    )


def target_rows(result: dict) -> list[tuple[str, str, str]]:
    r = result["ratios"]
    e64, e1, b = r["encode64_vs_compute"], r["encode1_vs_noop"], r["batching_on_vs_off"]
    per_c = ", ".join(
        f"c{c}: {v:.2f}" + (f" (bound {bd:.2f})" if (bd := e1["bound_per_concurrency"][c]) else "")
        for c, v in e1["per_concurrency"].items()
    )
    kill = result["worker_kill"]
    return [
        (
            "encode64_vs_compute",
            f"{e64['value']:.2f} ({e64['service_items_per_s']:.0f} items/s at "
            f"c={e64['at_concurrency']} / {e64['compute_items_per_s']:.0f} in-process, batch "
            f"64, {e64['compute_threads']} thread(s) = encode workers x cpu_threads; "
            f"{e64['vs_one_thread']:.2f} of one thread)",
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
            f"c={result['plan']['batch_c']})",
            f">= {TARGETS['batching_on_vs_off']:.2f}x",
        ),
        *v2_target_rows(result),
        (
            "cold_start_s",
            f"{r['cold_start_s']['value']:.1f} s ({result['cold_start']['workers']} workers)",
            f"<= {TARGETS['cold_start_s']:.0f} s",
        ),
        (
            "worker_kill_recovery_s",
            f"{_fmt(kill['recovery_s'])} s (killed worker READY again after "
            f"{_fmt(kill['kill_to_worker_ready_s'])} s)",
            f"<= {TARGETS['worker_kill_recovery_s']:.0f} s",
        ),
    ]


def v2_target_rows(result: dict) -> list[tuple[str, str, str]]:
    """issue 11's targets: lone-request latency, the binary ceilings, the peers."""
    r, big = result["ratios"], result["plan"]["big"]
    t = worker_threads(result, "encode")
    l1, l64 = r["lone1_p50_over_model_ms"], r["lone64_v2_encode_p50_over_model_ms"]
    rows = [
        (
            "lone1_p50_over_model_ms",
            f"{_ms(l1['value'])} (worst: {l1['worst'] or 'none measured'}; p50 - model: "
            + ", ".join(
                f"{k} {v['p50_ms']:.2f} - {v['model_ms']:.2f}" for k, v in l1["rows"].items()
            )
            + " ms; model in-process at batch 1 with one worker's threads: "
            + ", ".join(
                f"{op} {worker_threads(result, op)}" for op in ("encode", "decode", "sample")
            )
            + ")",
        ),
        (
            "lone64_v2_encode_p50_over_model_ms",
            f"{_ms(l64['value'])} (v2 encode x{big} at c=1: p50 {_ms(l64['p50_ms'])} "
            f"- {l64['model_ms']:.2f} ms in-process at batch {big}, {t} thread(s))",
        ),
    ]
    for op in ("encode", "decode"):
        v = r[f"v2_{op}64_vs_compute"]
        per_c = ", ".join(f"c{c}: {x:.2f}" for c, x in v["per_concurrency"].items())
        rows.append(
            (
                f"v2_{op}64_vs_compute",
                f"{_fmt(v['value'], 2)} (lowest at >= {MANY_CLIENTS} clients; {per_c or 'none'}; "
                f"/ {v['compute_items_per_s']:.0f} items/s in-process, batch {big}, "
                f"{v['compute_threads']} thread(s) = {op} workers x cpu_threads)",
            )
        )
    for name, what in (("json_vs_best_peer", "the best JSON peer"), ("v2_vs_triton", "Triton")):
        rows.append(
            (
                name,
                f"{_fmt(r[name]['value'], 2)} (lowest over issue 11's rows of ours / {what}; "
                "see 'Against the peers')",
            )
        )
    return [(name, text, _goal(name)) for name, text in rows]


def _goal(name: str) -> str:
    goal = TARGETS[name]
    return f"<= {goal:g} ms" if name.endswith("_ms") else f">= {goal:.2f}"


def markdown(result: dict) -> str:
    m, plan = result["machine"], result["plan"]
    lines = [
        f"# latentserve benchmark, {result['started']}",
        "",
        f"Machine: {m['cores']} cores, {m['cpu']}, {m['memory_mib'] // 1024} GiB, no GPU; "
        f"Python {m['python']}, torch {m['torch']}, TorchServe {m['torchserve']}, {m['java']}. "
        f"Command: `{result['command']}` ({result['seconds']:.0f} s). Model: "
        f"`{result['model']}`; archive settings"
        f"{' (a VARIANT, not the shipped ones)' if result.get('variant_of_shipped_config') else ''}"
        f": {settings(result)}. Payloads: Fashion-MNIST test images and their codes, as base64 "
        "PNG in JSON (the JSON API's rows) and as binary tensors (the `v2` rows: the Open "
        "Inference Protocol, UINT8 images, FP32 codes, binary outputs); every answer checked. "
        f"Cores busy before the run: {result['busy_cores_before']:.2f}.",
        "",
        "## Targets (ratios from this run)",
        "",
        "| target | measured | goal | met |",
        "| --- | --- | --- | --- |",
    ]
    for name, measured, goal in target_rows(result):
        ok = met(name, result["ratios"][name]["value"])
        lines.append(f"| {name} | {measured} | {goal} | {'yes' if ok else 'NO'} |")
    lines += [
        "",
        "A target marked n/a was not measured by this plan (`--quick` measures too few points).",
        "`bound` is the most any handler could reach at a CPU-bound point: the no-op's "
        "CPU per request plus the model's own compute per item at the dynamic batch size "
        f"(batch {result['worker']['batch_size']}, one thread), against the no-op alone.",
        "",
        "## Compute ceiling (in-process TorchScript, items/s and ms per call)",
        "",
        "| module | torch threads | " + " | ".join(f"batch {b}" for b in plan["batches"]) + " |",
        "| --- | --- | " + " | ".join("---" for _ in plan["batches"]) + " |",
    ]
    p50 = result["compute_p50_ms"]
    # score: its whole model work, PNG included; score_latent: a `mode: latent` request's
    for mod in ("encoder", "decoder", "score", "score_latent"):
        for t, by_b in result["compute"].get(mod, {}).items():
            cells = " | ".join(
                f"{by_b[str(b)]:.0f} ({p50[mod][t][str(b)]:.2f} ms)" for b in plan["batches"]
            )
            lines.append(f"| {mod} | {t} | {cells} |")
    lines += ["", "In brackets: the median time of one call (the model's own time)."]
    for mod in ("score", "score_latent"):  # the score operation's model work, per mode
        score = result["compute"].get(mod, {}).get("1")
        if score:
            enc = result["compute"]["encoder"]["1"]
            ratios = ", ".join(
                f"batch {b}: {score[str(b)] / enc[str(b)]:.2f}" for b in plan["batches"]
            )
            lines.append(f"`{mod}` items/s / `encoder` items/s, 1 thread: {ratios}.")
    lines.append("")
    lines += formats_markdown(result.get("compute_formats"))
    lines += peers_markdown(result["ratios"]["json_vs_best_peer"]["rows"])
    lines += [
        "",
        "## Service at several concurrencies",
        "",
        f"Closed loop, each point {plan['duration']:g} s after {plan['warmup']:g} s warm-up. "
        "`no-op` is the framework ceiling: a handler that answers the same bytes without any "
        "work; `v2` rows are the Open Inference Protocol with binary tensors, the others "
        f"the JSON API. CPU columns are in cores (of {m['cores']}); `CPU us/req` is the whole "
        "machine's busy CPU per answered request; queue times from TorchServe's metrics.",
        "",
        "| endpoint | items/req | conc. | req/s | items/s | p50 ms | p95 ms | p99 ms | errors | "
        "req/batch | queue ms | CPU us/req | client CPU | server CPU | other CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
        "| --- |",
    ]
    for p in result["points"]:
        t = p["timing"]
        lines.append(
            f"| {p['label']} | {p['items_per_request']} | {p['concurrency']} | "
            f"{p['req_per_s']:.1f} | {p['items_per_s']:.0f} | {p['p50_ms']:.1f} | "
            f"{p['p95_ms']:.1f} | {p['p99_ms']:.1f} | {p['errors']} | "
            f"{_num(t.get('requests_per_batch'))} | {_num(t.get('queue_ms_per_request'))} | "
            f"{cpu_us_per_request(p):.0f} | {p['client_cpu']:.2f} | {p['server_cpu']:.2f} | "
            f"{_other(p):.2f} |"
        )
    k, share = result["worker_kill"], result["client_cpu"]
    other = max(_other(p) for p in result["points"])
    lines += [
        "",
        "## Cold start and worker kill",
        "",
        f"- cold start (`make serve`'s models {', '.join(result['cold_start']['models'])}: "
        f"{result['cold_start']['workers']} workers): {result['cold_start']['seconds']:.1f} s "
        f"to every worker READY; the bench server ({result['bench_server']['workers']} workers): "
        f"{result['bench_server']['ready_s']:.1f} s.",
        f"- worker kill under load (4 clients, single-image encode, client timeout "
        f"{k['request_timeout_s']:g} s): SIGKILL of one encode worker; a fresh request was "
        f"answered right {_fmt(k['recovery_s'], 2)} s after the kill and a new worker was READY "
        f"after {_fmt(k['kill_to_worker_ready_s'])} s. {k['failed']} of {k['requests']} "
        f"requests failed ({k['in_flight_at_kill']} were in flight at the kill, "
        f"{k['failed_not_in_flight']} failures outside that; {k['lost']} never answered, "
        f"ended by the client's timeout), {k['retried'] - k['retry_failures']}/{k['retried']} "
        f"retries succeeded. Errors: {'; '.join(k['error_samples']) or 'none'}.",
        "",
        "## Load generator and other load",
        "",
        f"asyncio keep-alive client in one process: at most {share['max_cores']:.2f} cores, "
        f"{share['max_share_of_busy'] * 100:.0f}% of all busy CPU at any point (mean "
        f"{share['mean_share_of_busy'] * 100:.0f}%); bench process CPU over the run "
        f"{share['run_cpu_s']:.0f} s. Other processes on the machine used at most "
        f"{other:.2f} cores during a point"
        + (
            " (the numbers are disturbed: run again on an idle machine)."
            if other > 0.2
            else " (an undisturbed run)."
        ),
        "",
    ]
    return "\n".join(lines)
