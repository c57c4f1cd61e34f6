"""Prometheus metrics on the metrics port move by exactly what each test sent.

The server is shared by the whole session, so every check compares a reading
taken before the test's own requests with one taken after: a change, never an
absolute value. Handler metrics travel worker log -> frontend asynchronously,
so each check polls until the expected change arrives, then re-reads to be
sure nothing more arrives (an overshoot would mean a miscount).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from handlers.metrics import STAGES
from tests.handlers.tiny import pixels


def kl_to_prior(mu: np.ndarray, lv: np.ndarray) -> np.ndarray:
    """Per item KL(N(mu, exp(lv)) || N(0, I)) in nats, as the handler computes it."""
    return (0.5 * (mu**2 + np.exp(lv) - 1 - lv)).sum(axis=1)


def latents(resp) -> tuple[np.ndarray, np.ndarray]:
    preds = resp.json()["predictions"]
    mu = np.array([p["z_mean"] for p in preds], dtype=np.float64)
    lv = np.array([p["z_log_var"] for p in preds], dtype=np.float64)
    return mu, lv


def test_metrics_move_by_what_was_sent(torchserve, vae):
    enc, dec, smp = (f"{vae.name}-{op}" for op in ("encode", "decode", "sample"))
    parse, run, respond = STAGES
    from_answers = None  # computed from the encode answers below
    expected = [  # (metric, labels, the change the requests below cause)
        ("latentserve_items_total", {"ModelName": enc}, 5),
        ("latentserve_items_total", {"ModelName": dec}, 4),
        ("latentserve_items_total", {"ModelName": smp, "Operation": "sample"}, 5),
        ("latentserve_rejected_total", {"ModelName": enc, "Reason": "wrong_shape"}, 1),
        ("latentserve_rejected_total", {"ModelName": smp, "Reason": "too_many_items"}, 1),
        ("ts_inference_requests_total", {"model_name": enc}, 3),
        ("latentserve_encode_z_mean_norm_total", {"ModelName": enc}, from_answers),
        ("latentserve_encode_kl_nats_total", {"ModelName": enc}, from_answers),
        ("latentserve_model_batch_items_sum", {"ModelName": enc}, 5),  # not the bad request
        ("latentserve_batch_requests_sum", {"ModelName": enc}, 3),
        ("latentserve_batch_requests_count", {"ModelName": enc}, 3),  # one request per call
        ("latentserve_stage_seconds_count", {"ModelName": enc, "Stage": parse}, 3),
        ("latentserve_stage_seconds_count", {"ModelName": enc, "Stage": run}, 2),  # not the bad
        ("latentserve_stage_seconds_count", {"ModelName": enc, "Stage": respond}, 3),
        ("Requests4XX", {}, 2),
    ]
    before = [torchserve.metric(name, **labels) for name, labels, _ in expected]

    # encode requests one at a time: each is a handler call (a batch) of its own
    good = [
        torchserve.post(enc, json={"instances": pixels(k, seed)}) for k, seed in ((3, 1), (2, 2))
    ]
    assert [r.status_code for r in good] == [200, 200]
    bad = torchserve.post(enc, json={"instances": [{"pixels": [[0.5] * 28] * 3}]})
    assert bad.status_code == 400
    zs = [{"z": [0.0] * vae.latent_dim}] * 4
    assert torchserve.post(dec, json={"instances": zs}).status_code == 200
    assert torchserve.post(smp, json={"n": 5, "seed": 0}).status_code == 200
    assert torchserve.post(smp, json={"n": 10_000}).status_code == 400

    mu, lv = (np.concatenate(parts) for parts in zip(*map(latents, good), strict=True))
    answers = {
        "latentserve_encode_z_mean_norm_total": float(np.linalg.norm(mu, axis=1).sum()),
        "latentserve_encode_kl_nats_total": float(kl_to_prior(mu, lv).sum()),
    }
    expected = [(n, lab, answers[n] if w is from_answers else w) for n, lab, w in expected]

    def check_changes() -> None:
        for (name, labels, want), start in zip(expected, before, strict=True):
            got = torchserve.wait_metric(name, start + want - 1e-9, **labels) - start
            assert got == pytest.approx(want, rel=1e-4, abs=1e-6), (name, labels, got, want)

    check_changes()
    time.sleep(1.0)
    check_changes()  # nothing more arrived later


def test_every_stage_is_timed_and_the_gauges_describe_the_last_batch(torchserve, vae):
    enc = f"{vae.name}-encode"

    def stage(sample: str, s: str) -> float:
        return torchserve.metric(f"latentserve_stage_seconds_{sample}", ModelName=enc, Stage=s)

    before = {s: (stage("count", s), stage("sum", s)) for s in STAGES}
    resp = torchserve.post(enc, json={"instances": pixels(2, 0)})
    assert resp.status_code == 200
    for s in STAGES:
        count = torchserve.wait_metric(
            "latentserve_stage_seconds_count", before[s][0] + 1, ModelName=enc, Stage=s
        )
        assert count - before[s][0] == 1, s
        assert stage("sum", s) > before[s][1], s

    # gauges hold the last encode batch: this request's two items
    mu, lv = latents(resp)
    gauges = {
        "latentserve_encode_batch_z_mean_norm": float(np.linalg.norm(mu, axis=1).mean()),
        "latentserve_encode_batch_kl_nats": float(kl_to_prior(mu, lv).mean()),
    }
    for name, want in gauges.items():
        deadline = time.monotonic() + 20
        while (got := torchserve.metric(name, ModelName=enc)) != pytest.approx(
            want, rel=1e-5
        ) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert got == pytest.approx(want, rel=1e-5), name
