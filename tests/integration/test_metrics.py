"""Prometheus metrics on the metrics port move by exactly what the test sent.

Handler metrics travel worker log -> frontend asynchronously, so each check
polls until the expected value arrives, then re-reads to be sure nothing more
arrives (an overshoot would mean a miscount).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

HIST = ("latentserve_model_batch_items", "latentserve_batch_requests")


def pixels(k: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"pixels": rng.random((28, 28)).round(4).tolist()} for _ in range(k)]


def test_metrics_move_by_what_was_sent(torchserve, vae):
    enc, dec, smp = (f"{vae.name}-{op}" for op in ("encode", "decode", "sample"))
    names = [
        ("latentserve_items_total", {"ModelName": enc}),
        ("latentserve_items_total", {"ModelName": dec}),
        ("latentserve_items_total", {"ModelName": smp, "Operation": "sample"}),
        ("latentserve_rejected_total", {"ModelName": enc, "Reason": "wrong_shape"}),
        ("latentserve_rejected_total", {"ModelName": smp, "Reason": "too_many_items"}),
        ("ts_inference_requests_total", {"model_name": enc}),
        ("latentserve_encode_z_mean_norm_total", {"ModelName": enc}),
        ("latentserve_encode_kl_nats_total", {"ModelName": enc}),
        ("latentserve_model_batch_items_sum", {"ModelName": enc}),
        ("latentserve_batch_requests_sum", {"ModelName": enc}),
        ("latentserve_stage_seconds_count", {"ModelName": enc, "Stage": "model"}),
        ("Requests4XX", {}),
    ]
    before = {(n, tuple(sorted(lab.items()))): torchserve.metric(n, **lab) for n, lab in names}

    z = []
    for k, seed in ((3, 1), (2, 2)):
        resp = torchserve.post(enc, json={"instances": pixels(k, seed)})
        assert resp.status_code == 200
        z += [(p["z_mean"], p["z_log_var"]) for p in resp.json()["predictions"]]
    bad = torchserve.post(enc, json={"instances": [{"pixels": [[0.5] * 28] * 3}]})
    assert bad.status_code == 400
    zs = [{"z": [0.0] * vae.latent_dim}] * 4
    assert torchserve.post(dec, json={"instances": zs}).status_code == 200
    assert torchserve.post(smp, json={"n": 5, "seed": 0}).status_code == 200
    assert torchserve.post(smp, json={"n": 10_000}).status_code == 400

    mu = np.array([m for m, _ in z], dtype=np.float64)
    lv = np.array([v for _, v in z], dtype=np.float64)
    expected = {
        "latentserve_items_total": {enc: 5, dec: 4, smp: 5},
        "latentserve_rejected_total": {enc: 1, smp: 1},
        "ts_inference_requests_total": {enc: 3},
        "latentserve_encode_z_mean_norm_total": {enc: float(np.linalg.norm(mu, axis=1).sum())},
        "latentserve_encode_kl_nats_total": {
            enc: float((0.5 * (mu**2 + np.exp(lv) - 1 - lv)).sum())
        },
        "latentserve_model_batch_items_sum": {enc: 5},  # the bad request never reaches the model
        "latentserve_batch_requests_sum": {enc: 3},
        "Requests4XX": {None: 2},
    }

    def delta(name, labels):
        key = (name, tuple(sorted(labels.items())))
        want = expected[name][labels.get("ModelName", labels.get("model_name"))]
        got = torchserve.wait_metric(name, before[key] + want - 1e-9, **labels) - before[key]
        return got, want

    time.sleep(0.5)
    for name, labels in names:
        if name == "latentserve_stage_seconds_count":
            got = torchserve.metric(name, **labels) - before[(name, tuple(sorted(labels.items())))]
            assert 1 <= got <= 2, (name, got)  # one per handler call with live requests
            continue
        got, want = delta(name, labels)
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6), (name, labels, got, want)
    # nothing more arrives later
    time.sleep(1.0)
    for name, labels in names:
        if name in ("latentserve_items_total", "latentserve_rejected_total"):
            got, want = delta(name, labels)
            assert got == want


def test_latency_histograms_and_gauges_exist_for_every_stage(torchserve, vae):
    assert (
        torchserve.post(f"{vae.name}-encode", json={"instances": pixels(1, 0)}).status_code == 200
    )
    enc = f"{vae.name}-encode"
    for stage in ("decode_input", "model", "encode_output"):
        count = torchserve.wait_metric(
            "latentserve_stage_seconds_count", 1, ModelName=enc, Stage=stage
        )
        assert count >= 1, stage
        assert torchserve.metric("latentserve_stage_seconds_sum", ModelName=enc, Stage=stage) > 0
    assert torchserve.metric("latentserve_encode_batch_z_mean_norm", ModelName=enc) > 0
    assert torchserve.metric("latentserve_encode_batch_kl_nats", ModelName=enc) > 0
