"""make bench's report logic on a synthetic run: ratios, the single-image bound, markdown.

The benchmark itself needs an idle machine and minutes (`make bench`); what it
computes from its measurements is checked here, so a wrong ratio or bound
cannot hide behind a long run.
"""

from __future__ import annotations

import pytest

from loadtests import benchreport
from loadtests.benchreport import TARGETS, encode1_bound, markdown, met, ratios


def point(label: str, c: int, req_per_s: float, items: int = 1, machine_cpu: float = 1.9) -> dict:
    return {
        "label": label,
        "concurrency": c,
        "items_per_request": items,
        "req_per_s": req_per_s,
        "items_per_s": req_per_s * items,
        "p50_ms": 5.0,
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
        point("encode x1", 1, 144.0, machine_cpu=0.4),
        point("noop x1", 32, 10000.0, machine_cpu=2.0),  # 200 us of CPU per request
        point("encode x1", 32, 5000.0),
        point("noop x64", 16, 5000.0, items=64),
        point("encode x64", 16, 300.0, items=64),
        point("batching off x1", 32, 1000.0),
        point("batching on x1", 32, 5000.0),
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
    benchreport.plot(result, out)
    assert out.read_bytes().startswith(b"\x89PNG")
