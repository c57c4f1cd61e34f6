"""make bench's targets and report on a synthetic run: ratios, bounds, peers, markdown.

The benchmark itself needs an idle machine and minutes (`make bench`); what it
computes from its measurements is checked here, so a wrong ratio or bound
cannot hide behind a long run.
"""

from __future__ import annotations

import pytest

from loadtests.bench.peers import PEERS, TRITON, against_peers, peers_markdown
from loadtests.bench.plot import plot
from loadtests.bench.points import Plan
from loadtests.bench.report import markdown
from loadtests.bench.targets import TARGETS, encode1_bound, met, ratios


def point(
    label: str,
    c: int,
    req_per_s: float,
    items: int = 1,
    machine_cpu: float = 1.9,
    p50_ms: float = 5.0,
) -> dict:
    return {
        "label": label,
        "concurrency": c,
        "items_per_request": items,
        "req_per_s": req_per_s,
        "items_per_s": req_per_s * items,
        "p50_ms": p50_ms,
        "p95_ms": 8.0,
        "p99_ms": 9.0,
        "errors": 0,
        "client_cpu": 0.2,
        "server_cpu": machine_cpu - 0.2,
        "machine_cpu": machine_cpu,
        "timing": {"requests_per_batch": 8.0, "queue_ms_per_request": 1.0},
    }


@pytest.fixture
def result() -> dict:
    points = [
        point("noop x1", 1, 160.0, machine_cpu=0.3),  # not CPU-bound: no bound
        point("encode x1", 1, 144.0, machine_cpu=0.4, p50_ms=2.3),
        point("noop x1", 32, 10000.0, machine_cpu=2.0),  # 200 us of CPU per request
        point("encode x1", 32, 5000.0),
        point("noop x64", 16, 5000.0, items=64),
        point("encode x64", 16, 300.0, items=64),
        point("batching off x1", 32, 1000.0),
        point("batching on x1", 32, 5000.0),
        # lone requests: the model's own time at batch 1 is 0.8 ms (encoder), 0.5 (decoder)
        point("v2 encode x1", 1, 700.0, p50_ms=1.3),
        point("v2 decode x1", 1, 500.0, p50_ms=2.0),
        point("v2 sample n=1", 1, 400.0, p50_ms=2.7),  # 2.2 ms over: the worst, missed
        point("v2 encode x64", 1, 220.0, items=64, p50_ms=4.5),  # batch 64: 3.0 ms
        # binary ceilings: encode 2 workers x 1 thread (40,000/s), decode 1 x 1 (14,000/s)
        point("v2 encode x64", 4, 125.0, items=64),  # 8,000/s: below 8 clients, not counted
        point("v2 encode x64", 8, 34000 / 64, items=64),  # 0.85: the lowest counted
        point("v2 encode x64", 16, 38000 / 64, items=64),
        point("v2 decode x64", 8, 10500 / 64, items=64),
        point("v2 decode x64", 32, 9940 / 64, items=64),  # 0.71
    ]
    return {
        "started": "2026-11-24 12:00 UTC",
        "command": "python -m loadtests.bench",
        "seconds": 300.0,
        "model": "fashion-vae",
        "machine": {
            "cores": 2,
            "cpu": "test cpu",
            "memory_mib": 24000,
            "python": "3.11",
            "torch": "2.13.0",
            "torchserve": "0.12.0",
            "java": "openjdk 17",
        },
        "worker": {
            "batch_size": 8,
            "max_batch_delay_ms": 5,
            "encode_workers": 2,
            "decode_workers": 1,
            "sample_workers": 1,
            "handler": {"cpu_threads": 1},
        },
        "plan": {"batches": [1, 8, 64], "batch_c": 32, "big": 64, "duration": 6, "warmup": 1.5},
        "compute_p50_ms": {
            "encoder": {"1": {"1": 0.8, "8": 1.0, "64": 3.0}, "2": {"1": 0.8, "8": 0.9, "64": 2}},
            "decoder": {"1": {"1": 0.5, "8": 1.2, "64": 4.0}, "2": {"1": 0.5, "8": 1, "64": 3}},
        },
        "busy_cores_before": 0.0,
        # batch 8 on one thread: 20,000 items/s = 50 us per item
        "compute": {
            "encoder": {
                "1": {"1": 6000.0, "8": 20000.0, "64": 30000.0},
                "2": {"1": 5500.0, "8": 21000.0, "64": 40000.0},
            },
            "decoder": {
                "1": {"1": 5000.0, "8": 11000.0, "64": 14000.0},
                "2": {"1": 5000.0, "8": 16000.0, "64": 26000.0},
            },
        },
        "points": points,
        "cold_start": {"models": ["a", "b"], "workers": 16, "seconds": 15.0},
        "bench_server": {"workers": 10, "ready_s": 6.0},
        "worker_kill": {
            "recovery_s": 0.05,
            "kill_to_worker_ready_s": 2.5,
            "request_timeout_s": 5.0,
            "failed": 2,
            "requests": 1000,
            "in_flight_at_kill": 4,
            "failed_not_in_flight": 0,
            "lost": 1,
            "retried": 2,
            "retry_failures": 0,
            "error_samples": ["HTTP 507: Worker died."],
        },
        "client_cpu": {
            "max_cores": 0.2,
            "max_share_of_busy": 0.1,
            "mean_share_of_busy": 0.1,
            "run_cpu_s": 40.0,
        },
    }


def at(result: dict, label: str, c: int) -> dict:
    return next(p for p in result["points"] if p["label"] == label and p["concurrency"] == c)


def test_ratios_against_the_right_ceilings(result):
    r = ratios(result, big=64, batch_c=32, encode1_c=(1, 32))
    e64 = r["encode64_vs_compute"]
    # 2 encode workers x 1 thread: the 2-thread in-process ceiling at batch 64
    assert e64["compute_threads"] == 2
    assert e64["value"] == pytest.approx(300 * 64 / 40000)
    assert e64["vs_one_thread"] == pytest.approx(300 * 64 / 30000)
    e1 = r["encode1_vs_noop"]
    assert e1["per_concurrency"] == pytest.approx({1: 0.9, 32: 0.5})
    assert e1["value"] == pytest.approx(0.5)  # the lowest over concurrencies
    assert r["batching_on_vs_off"]["value"] == pytest.approx(5.0)
    assert r["worker_kill_recovery_s"]["value"] == 0.05


def test_single_image_bound_is_noop_cpu_over_noop_plus_model(result):
    noop32 = result["points"][2]
    # 2 cores / 10,000 req/s = 200 us per request; the model: 50 us per item at batch 8
    assert encode1_bound(result, noop32) == pytest.approx(200 / 250)
    assert encode1_bound(result, result["points"][0]) is None  # not CPU-bound


def test_met_reads_goals_in_the_right_direction():
    assert met("encode1_vs_noop", TARGETS["encode1_vs_noop"])
    assert not met("encode1_vs_noop", TARGETS["encode1_vs_noop"] - 0.01)
    assert met("cold_start_s", 19.9) and not met("cold_start_s", 20.1)
    assert not met("worker_kill_recovery_s", None) and not met("encode64_vs_compute", float("nan"))


def test_markdown_reports_every_target_and_point(result):
    result["ratios"] = ratios(result, big=64, batch_c=32, encode1_c=(1, 32))
    text = markdown(result)
    for name in TARGETS:
        assert f"| {name} |" in text
    assert "c32: 0.50 (bound 0.80)" in text and "c1: 0.90," in text
    assert "workers encode 2 / decode 1 / sample 1" in text
    assert text.count("| encode x1 |") == 2 and "| 200 |" in text  # CPU us per request
    assert "1 never answered" in text


def test_plot_writes_a_png(result, tmp_path):
    result["ratios"] = ratios(result, big=64, batch_c=32, encode1_c=(1, 32))
    out = tmp_path / "bench.png"
    plot(result, out)
    assert out.read_bytes().startswith(b"\x89PNG")


def test_batching_goal_is_issue_11s():
    assert TARGETS["batching_on_vs_off"] == 2.0
    assert not met("batching_on_vs_off", 1.99) and met("batching_on_vs_off", 2.0)


def test_lone_single_item_p50_minus_the_models_own_time(result):
    r = ratios(result, big=64, batch_c=32, encode1_c=(1, 32))
    lone = r["lone1_p50_over_model_ms"]
    assert lone["rows"]["encode x1"]["over_ms"] == pytest.approx(2.3 - 0.8)
    assert lone["rows"]["v2 decode x1"]["over_ms"] == pytest.approx(2.0 - 0.5)
    assert "decode x1" not in lone["rows"]  # not measured: not invented
    assert lone["worst"] == "v2 sample n=1" and lone["value"] == pytest.approx(2.2)
    assert not met("lone1_p50_over_model_ms", lone["value"])
    at(result, "v2 sample n=1", 1)["p50_ms"] = 2.4  # 1.9 ms over: every row within 2 ms
    lone = ratios(result, big=64, batch_c=32, encode1_c=(1, 32))["lone1_p50_over_model_ms"]
    assert lone["value"] == pytest.approx(1.9) and met("lone1_p50_over_model_ms", lone["value"])


def test_lone_64_image_binary_encode_against_batch_64_on_one_thread(result):
    lone = ratios(result, big=64, batch_c=32, encode1_c=(1, 32))[
        "lone64_v2_encode_p50_over_model_ms"
    ]
    assert lone["value"] == pytest.approx(4.5 - 3.0)  # one worker's thread, not two
    assert met("lone64_v2_encode_p50_over_model_ms", lone["value"])
    at(result, "v2 encode x64", 1)["p50_ms"] = 5.1
    lone = ratios(result, big=64, batch_c=32, encode1_c=(1, 32))[
        "lone64_v2_encode_p50_over_model_ms"
    ]
    assert not met("lone64_v2_encode_p50_over_model_ms", lone["value"])


def test_binary_ceilings_lowest_at_8_clients_or_more_with_the_operations_threads(result):
    r = ratios(result, big=64, batch_c=32, encode1_c=(1, 32))
    enc, dec = r["v2_encode64_vs_compute"], r["v2_decode64_vs_compute"]
    assert enc["compute_threads"] == 2 and dec["compute_threads"] == 1
    assert set(enc["per_concurrency"]) == {8, 16}  # 4 clients is not a target point
    assert enc["value"] == pytest.approx(0.85) and met("v2_encode64_vs_compute", enc["value"])
    assert dec["value"] == pytest.approx(0.71) and met("v2_decode64_vs_compute", dec["value"])
    at(result, "v2 decode x64", 8)["items_per_s"] = (
        9000.0  # decode at 8 clients: 0.64 of its ceiling
    )
    dec = ratios(result, big=64, batch_c=32, encode1_c=(1, 32))["v2_decode64_vs_compute"]
    assert dec["value"] == pytest.approx(9000 / 14000) and not met("v2_decode64_vs_compute", 0.64)


def peer_rows(json_share: float, v2_share: float) -> list[dict]:
    """Ours at every row of issue 11's table, a share of the best JSON peer / of Triton."""
    rows = []
    for (k, c), peers in PEERS.items():
        best = max(hi for name, (_, hi) in peers.items() if name != TRITON)
        rows.append(point(f"encode x{k}", c, best * json_share / k, items=k))
        rows.append(point(f"v2 encode x{k}", c, peers[TRITON][1] * v2_share / k, items=k))
    return rows


def test_peers_json_against_the_best_json_peer_binary_against_triton():
    json_ratio, v2_ratio = against_peers(peer_rows(1.1, 1.2))
    assert json_ratio["value"] == pytest.approx(1.1) and v2_ratio["value"] == pytest.approx(1.2)
    top = {(r["images"], r["clients"]): r for r in json_ratio["rows"]}
    # the best JSON peer is the high end of its range, and Triton is never a JSON peer
    assert top[(1, 32)]["best_peer"] == "FastAPI" and top[(1, 32)]["best_peer_figure"] == 2003
    assert top[(64, 16)]["best_peer"] == "FastAPI" and top[(64, 16)]["best_peer_figure"] == 17638
    assert top[(64, 16)]["triton"] == 25325
    rows = peer_rows(1.1, 1.2)
    rows[0]["items_per_s"] = 1000.0  # 1 image, 1 client on JSON: below FastAPI's 1,064
    json_ratio, _ = against_peers(rows)
    assert json_ratio["value"] == pytest.approx(1000 / 1064)
    assert not met("json_vs_best_peer", json_ratio["value"])


def test_a_fastapi_row_measured_in_the_run_replaces_the_quoted_figure():
    """The peer measured on this machine counts, not the figure quoted from another one."""
    rows = peer_rows(1.1, 1.2)
    rows.append(point("fastapi encode x1", 1, 400.0))  # quoted: 1,064 (another machine)
    rows.append(point("fastapi v2 encode x1", 1, 500.0))
    json_ratio, _ = against_peers(rows)
    row = next(r for r in json_ratio["rows"] if (r["images"], r["clients"]) == (1, 1))
    assert row["fastapi_measured"] == 400.0 and row["fastapi_v2_measured"] == 500.0
    assert row["best_peer"] == "FastAPI" and row["best_peer_figure"] == 400.0
    rows[-2]["items_per_s"] = 100.0  # below LitServe's quoted 168: LitServe is the best peer
    json_ratio, _ = against_peers(rows)
    row = next(r for r in json_ratio["rows"] if (r["images"], r["clients"]) == (1, 1))
    assert row["best_peer"] == "LitServe" and row["best_peer_figure"] == 168
    text = "\n".join(peers_markdown(json_ratio["rows"]))
    assert "| 1 x 1 | 1170 | 100 | 168 (LitServe) |" in text


def test_peers_not_met_when_a_row_was_not_measured():
    rows = [
        r
        for r in peer_rows(2.0, 2.0)
        if not (r["label"] == "v2 encode x64" and r["concurrency"] == 4)
    ]
    json_ratio, v2_ratio = against_peers(rows)
    assert json_ratio["value"] == pytest.approx(2.0)
    assert v2_ratio["value"] is None and not met("v2_vs_triton", v2_ratio["value"])


def test_markdown_shows_the_new_targets_the_peers_and_the_models_own_time(result):
    result["ratios"] = ratios(result, big=64, batch_c=32, encode1_c=(1, 32))
    text = markdown(result)
    assert "| lone1_p50_over_model_ms | 2.20 ms (worst: v2 sample n=1;" in text
    assert "| <= 2 ms | NO |" in text
    assert "| v2_encode64_vs_compute | 0.85 (lowest at >= 8 clients; c8: 0.85, c16: 0.95;" in text
    assert "| json_vs_best_peer | n/a " in text  # the synthetic run lacks the peers' rows
    assert "| 1 x 8 | not measured | not measured | 2091 (FastAPI) | - |" in text
    assert "| 6000 (0.80 ms) |" in text  # encoder, 1 thread, batch 1: items/s (own time)
    assert "| v2 encode x64 | 64 | 8 |" in text


@pytest.mark.parametrize("plan", [Plan(), Plan.targets()], ids=["full", "targets-only"])
def test_the_plan_measures_every_point_the_targets_need(result, plan):
    """A run of the full plan or of --targets-only leaves no target n/a."""
    result["points"] = [point(name, c, 100.0, items=k) for name, _, k, c in plan.points()]
    r = ratios(result, plan.big, plan.batch_c, plan.encode1_c)
    assert not [name for name in TARGETS if r[name]["value"] is None]


def test_the_quick_plan_runs_every_kind_of_point_once_and_misses_only_the_peers(result):
    plan = Plan.quick()
    labels = {name for name, *_ in plan.points()}
    assert {
        f"v2 {op} {'n=' if op == 'sample' else 'x'}{k}"
        for op in ("encode", "decode", "sample")
        for k in (1, 64)
    } <= labels
    result["points"] = [point(name, c, 100.0, items=k) for name, _, k, c in plan.points()]
    r = ratios(result, plan.big, plan.batch_c, plan.encode1_c)
    assert [name for name in TARGETS if r[name]["value"] is None] == [
        "json_vs_best_peer",
        "v2_vs_triton",
    ]
