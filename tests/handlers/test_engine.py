"""The engine: flattening, chunking, per-request isolation, the three operations."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from handlers.engine import BATCH_ID, BATCH_ITEMS, BATCH_REQUESTS
from handlers.limits import LIMITS
from handlers.manifest import ModelInfo
from handlers.metrics import SPECS, STAGES, Recorder
from handlers.operations import OPERATIONS
from handlers.wire.json_schemas import RESPONSES, ErrorResponse
from handlers.wire.request import RawRequest
from tests.handlers.tiny import LATENT, json_request, make_engine, pixels


def body(reply) -> dict:
    return json.loads(reply.body)


def total(rec: Recorder, name: str, **labels: str) -> float:
    """Sum of the values recorded for `name` whose labels include `labels`."""
    dims = SPECS[name].dims
    return sum(
        o.value
        for o in rec.observations
        if o.name == name and all(o.labels[dims.index(k)] == v for k, v in labels.items())
    )


def reference_encode(model_dir, items: list[dict]) -> torch.Tensor:
    enc = torch.jit.load(str(model_dir / "encoder.pt"))
    x = torch.tensor([it["pixels"] for it in items], dtype=torch.float32)[:, None]
    with torch.inference_mode():
        out = enc(x)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("chunk", [1, 3, 256])
def test_mixed_batch_each_request_gets_exactly_its_own_items(vae_dir, chunk):
    engine = make_engine(vae_dir, "encode", chunk_size=chunk)
    sizes = [1, 5, 2, 7]
    payloads = [pixels(k, seed=i) for i, k in enumerate(sizes)]
    replies, rec = engine.handle([json_request({"instances": p}) for p in payloads])
    assert [r.status for r in replies] == [200] * 4
    for p, r in zip(payloads, replies, strict=True):
        got = torch.tensor([q["z_mean"] for q in body(r)["predictions"]])
        assert torch.allclose(got, reference_encode(vae_dir, p), atol=1e-5)
        RESPONSES["encode"].model_validate(body(r))
    # one handler call, model calls of at most `chunk` items covering all 15
    items = total(rec, "latentserve_model_batch_items")
    calls = [o for o in rec.observations if o.name == "latentserve_model_batch_items"]
    assert items == 15 and all(o.value <= chunk for o in calls)
    assert len(calls) == -(-15 // chunk)
    assert total(rec, "latentserve_items_total", Operation="encode") == 15
    assert total(rec, "latentserve_batch_requests") == 4
    ids = {r.headers[BATCH_ID] for r in replies}
    assert len(ids) == 1
    assert {r.headers[BATCH_REQUESTS] for r in replies} == {"4"}
    assert {r.headers[BATCH_ITEMS] for r in replies} == {"15"}


def test_one_bad_request_does_not_hurt_its_neighbours(vae_dir):
    engine = make_engine(vae_dir, "encode", chunk_size=4)
    good = [pixels(3, seed=1), pixels(2, seed=2)]
    nan = json.dumps({"instances": pixels(1)}).replace("0.", "NaN, 0.", 1)
    raws = [
        json_request({"instances": good[0]}),
        RawRequest(nan.encode(), "application/json"),
        RawRequest(b"{broken", "application/json"),
        json_request({"instances": good[1]}),
    ]
    replies, rec = engine.handle(raws)
    assert [r.status for r in replies] == [200, 400, 400, 200]
    assert [len(body(r)["predictions"]) for r in (replies[0], replies[3])] == [3, 2]
    err = ErrorResponse.model_validate(body(replies[2])).error
    assert (err.code, err.field) == ("bad_json", "body")
    assert total(rec, "latentserve_rejected_total") == 2
    assert total(rec, "latentserve_items_total") == 5


def test_a_crashing_request_gets_a_500_alone(vae_dir, monkeypatch):
    engine = make_engine(vae_dir, "decode")
    real = engine.op.respond

    def respond(parsed, out):
        if parsed.items == 2:
            raise RuntimeError("boom")
        return real(parsed, out)

    monkeypatch.setattr(engine.op, "respond", respond)
    z = {"z": [0.0] * LATENT}
    replies, rec = engine.handle([json_request({"instances": [z] * k}) for k in (1, 2, 3)])
    assert [r.status for r in replies] == [200, 500, 200]
    assert body(replies[1])["error"]["code"] == "internal_error"
    assert total(rec, "latentserve_rejected_total", Reason="internal_error") == 1


def test_model_failure_on_the_batch_falls_back_per_request(vae_dir, monkeypatch):
    engine = make_engine(vae_dir, "decode", chunk_size=2)
    real, calls = engine.op.forward, []

    def forward(x, variant=None):
        calls.append(len(x))
        if len(calls) == 2:  # the merged batch's second chunk fails once
            raise RuntimeError("out of memory")
        return real(x, variant)

    monkeypatch.setattr(engine.op, "forward", forward)
    z = {"z": [0.0] * LATENT}
    replies, rec = engine.handle([json_request({"instances": [z] * k}) for k in (2, 2)])
    assert [r.status for r in replies] == [200, 200]
    assert calls == [2, 2, 2, 2]  # merged: 2 ok + 2 failed; then one call per request
    assert total(rec, "latentserve_model_batch_items") == 4  # the failed attempt is not counted


def test_encode_raw_png_and_b64_equal_pixels(vae_dir):
    engine = make_engine(vae_dir, "encode")
    arr = (np.random.default_rng(3).random((28, 28)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, format="PNG")
    png = buf.getvalue()
    as_pixels = {"instances": [{"pixels": (arr / 255.0).tolist()}]}
    as_b64 = {"instances": [{"image_b64": base64.b64encode(png).decode()}]}
    replies, _ = engine.handle(
        [RawRequest(png, "image/png"), json_request(as_b64), json_request(as_pixels)]
    )
    zs = [body(r)["predictions"][0]["z_mean"] for r in replies]
    assert np.allclose(zs[0], zs[2], atol=1e-6) and np.allclose(zs[1], zs[2], atol=1e-6)
    assert body(replies[0])["predictions"][0]["converted_from"] is None


def test_encode_sample_is_seeded_vae_only(vae_dir, ae_dir):
    engine = make_engine(vae_dir, "encode")
    req = {"instances": pixels(2), "sample": True, "seed": 7}
    a, b = (body(r) for r in engine.handle([json_request(req), json_request(req)])[0])
    assert a["seed"] == 7 and a == b
    p = a["predictions"][0]
    assert len(p["z"]) == LATENT and p["z"] != p["z_mean"]
    drawn = body(engine.handle([json_request({**req, "seed": None})])[0][0])
    assert isinstance(drawn["seed"], int) and 0 <= drawn["seed"] <= LIMITS.max_seed
    plain = body(engine.handle([json_request({"instances": pixels(1)})])[0][0])
    assert "z" not in plain["predictions"][0] and "seed" not in plain
    ae = make_engine(ae_dir, "encode")
    (reply,), _ = ae.handle([json_request(req)])
    assert reply.status == 400 and body(reply)["error"]["field"] == "sample"
    (reply,), _ = ae.handle([json_request({"instances": pixels(1)})])
    assert body(reply)["predictions"][0]["z_log_var"] is None


def test_encode_latent_statistics(vae_dir):
    engine = make_engine(vae_dir, "encode")
    (reply,), rec = engine.handle([json_request({"instances": pixels(4)})])
    preds = body(reply)["predictions"]
    mu = torch.tensor([p["z_mean"] for p in preds], dtype=torch.float64)
    lv = torch.tensor([p["z_log_var"] for p in preds], dtype=torch.float64)
    kl = 0.5 * (mu**2 + lv.exp() - 1 - lv).sum(1)
    assert total(rec, "latentserve_encode_z_mean_norm_total") == pytest.approx(
        float(mu.norm(dim=1).sum()), rel=1e-5
    )
    assert total(rec, "latentserve_encode_kl_nats_total") == pytest.approx(
        float(kl.sum()), rel=1e-4
    )


def test_decode_formats_and_latent_checks(vae_dir):
    engine = make_engine(vae_dir, "decode")
    z = {"z": [0.1] * LATENT}
    raws = [
        json_request({"instances": [z, z]}),
        json_request({"instances": [z], "format": "array"}),
        json_request({"instances": [z, {"z": [0.0] * (LATENT + 1)}]}),
        json_request({"instances": [{"z": [0.0] * (LATENT - 1) + [1e6]}]}),
        RawRequest(b"\x89PNG\r\n\x1a\nxxxx", "image/png"),
    ]
    replies, _ = engine.handle(raws)
    assert [r.status for r in replies] == [200, 200, 400, 400, 400]
    png = body(replies[0])["predictions"]
    assert len(png) == 2 and Image.open(io.BytesIO(base64.b64decode(png[0]["image_b64"]))).size == (
        28,
        28,
    )
    arr = np.array(body(replies[1])["predictions"][0]["pixels"])
    assert arr.shape == (28, 28) and arr.min() >= 0 and arr.max() <= 1
    assert [body(r)["error"]["field"] for r in replies[2:]] == [
        "instances[1].z",
        f"instances[0].z[{LATENT - 1}]",
        "body",
    ]
    assert [body(r)["error"]["code"] for r in replies[2:]] == [
        "wrong_latent_dim",
        "out_of_range",
        "unsupported_media_type",
    ]


def test_sample_determinism_and_batch_independence(vae_dir):
    engine = make_engine(vae_dir, "sample", chunk_size=3)
    alone = body(engine.handle([json_request({"n": 4, "seed": 11})])[0][0])
    mixed, _ = engine.handle(
        [json_request({"n": 2, "seed": 5}), json_request({"n": 4, "seed": 11})]
    )
    assert body(mixed[1]) == alone
    assert alone["seed"] == 11 and alone["temperature"] == 1.0 and len(alone["predictions"]) == 4
    other = body(engine.handle([json_request({"n": 4, "seed": 12})])[0][0])
    assert other["predictions"] != alone["predictions"]


def test_ae_sample_draws_from_the_fitted_gaussian(ae_dir):
    engine = make_engine(ae_dir, "sample")
    prior = json.loads((ae_dir / "manifest.json").read_text())["prior"]
    zs = torch.cat(
        [engine.op.parse(json_request({"n": 256, "seed": s})).x for s in range(40)]
    ).double()
    mean, cov = np.array(prior["mean"]), np.array(prior["cov"])
    assert np.allclose(zs.mean(0).numpy(), mean, atol=0.15 * np.sqrt(np.diag(cov)).max())
    assert np.allclose(np.cov(zs.numpy(), rowvar=False), cov, atol=0.1 * np.abs(cov).max())
    cold = engine.op.parse(json_request({"n": 3, "seed": 0, "temperature": 0.0})).x
    assert np.allclose(cold.numpy(), mean[None].repeat(3, 0), atol=1e-5)


def test_a_gaussian_prior_needs_the_exports_sampling_factor(ae_dir):
    manifest = json.loads((ae_dir / "manifest.json").read_text())
    info = ModelInfo.from_manifest(manifest)
    factor = np.array(manifest["prior"]["factor"])
    assert np.array_equal(info.prior_factor, factor)
    assert np.allclose(factor @ factor.T, np.array(manifest["prior"]["cov"]), atol=1e-9)
    del manifest["prior"]["factor"]
    with pytest.raises(ValueError, match="prior.*factor.*re-export"):
        ModelInfo.from_manifest(manifest)


def test_vae_sample_temperature_scales_a_standard_normal(vae_dir):
    engine = make_engine(vae_dir, "sample")
    one = engine.op.parse(json_request({"n": 8, "seed": 3})).x
    two = engine.op.parse(json_request({"n": 8, "seed": 3, "temperature": 2.0})).x
    assert torch.allclose(two, 2 * one, atol=1e-6)


def test_warmup_runs_every_operation_without_recording(vae_dir, ae_dir):
    for model_dir in (vae_dir, ae_dir):
        for op in OPERATIONS:
            engine = make_engine(model_dir, op)
            engine.warmup()
            outputs = engine.run_chunks(engine.op.example(2), Recorder())
            assert outputs and all(y.shape[0] == 2 for y in outputs)


def test_stages_are_timed_in_order_and_run_only_with_live_requests(vae_dir):
    engine = make_engine(vae_dir, "decode")

    def stages(raws):
        _, rec = engine.handle(raws)
        seconds = [o for o in rec.observations if o.name == "latentserve_stage_seconds"]
        assert all(o.labels[0] == "decode" and o.value >= 0 for o in seconds)
        return tuple(o.labels[1] for o in seconds)

    assert stages([json_request({"instances": [{"z": [0.0] * LATENT}]})]) == STAGES
    parse, _, respond = STAGES
    assert stages([RawRequest(b"{broken", "application/json")]) == (parse, respond)
