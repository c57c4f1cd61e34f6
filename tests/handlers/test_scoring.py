"""The score operation without a server: its statistics, calibration and answers on tiny exports.

`vae_dir` / `ae_dir` are calibrated on stand-in images by the fixture export
(`tests.support.exports.calibrate_fixture`), through `serving.calibrate`.
"""

from __future__ import annotations

import base64
import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from handlers.calibration import (
    Calibration,
    fit_calibration,
    png_bits,
    score_names,
    scores_of,
    stat_names,
    write_png_file,
)
from handlers.engine import Engine
from handlers.manifest import MANIFEST
from handlers.wire.json_schemas import ScoreResponse
from handlers.wire.request import RawRequest
from serving.calibrate import auprc, auroc, statistics
from tests.handlers.test_v2_engine import png_b64, v2_error
from tests.handlers.tiny import json_request, make_engine, rejects, v2_request
from tests.support.exports import fixture_images
from tests.support.v2 import binary_input
from tests.support.v2 import read_reply as read_v2

IMAGES = fixture_images(6, seed=9)


def score_json(images: np.ndarray, **fields) -> object:
    return json_request({"instances": [{"image_b64": png_b64(a)} for a in images], **fields})


# ---- statistics and calibration ----------------------------------------------------
def test_png_bits_is_the_length_of_a_real_png_of_the_same_pixels():
    rng = np.random.default_rng(0)
    cases = [*fixture_images(4), np.zeros((28, 28), np.uint8), rng.integers(0, 256, (28, 28))]
    for image in (np.asarray(c, dtype=np.uint8) for c in cases):
        data = write_png_file(image)
        assert np.array_equal(np.array(Image.open(io.BytesIO(data))), image)
        assert png_bits(image[None])[0] == 8 * len(data)
    # a flat image compresses far better than noise: the complexity term orders them
    assert png_bits(np.zeros((1, 28, 28), np.uint8))[0] < png_bits(cases[-1][None])[0] / 4


def test_calibration_round_trip_gives_uniform_p_values_on_the_held_out_set(vae_dir):
    stats, code = statistics(vae_dir, fixture_images(600, seed=3))
    cal_json = json.loads(json.dumps(fit_calibration("vae", stats, code)))
    dim = json.loads((vae_dir / MANIFEST).read_text())["latent_dim"]
    cal = Calibration.from_manifest({"kind": "vae", "latent_dim": dim, "calibration": cal_json})
    assert cal.scores == score_names("vae") and cal.features == stat_names("vae")
    assert code.shape == (600, 2 * dim) and cal.code_precision.shape == (2 * dim, 2 * dim)
    p = cal.p_values(scores_of("vae", stats, code, cal))
    assert p.min() >= 1 / 601 and p.max() <= 1
    for fpr in (0.01, 0.05, 0.2):  # what the quantiles promise, on the images they came from
        assert np.abs((p < fpr).mean(axis=0) - fpr).max() <= 0.005 + 1 / 600
    # higher score, lower p-value
    s = np.linspace(cal.quantiles[:, 0] - 1, cal.quantiles[:, -1] + 1, 50)
    assert np.all(np.diff(cal.p_values(s), axis=0) <= 0)


def test_broken_calibration_fails_at_load_and_none_answers_400(vae_dir, tmp_path):
    broken = shutil.copytree(vae_dir, tmp_path / "m")
    manifest = json.loads((broken / MANIFEST).read_text())
    manifest["calibration"]["quantiles"]["complexity"].reverse()
    (broken / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="not increasing"):
        Engine.from_dir(broken, "score")
    manifest["calibration"]["levels"] = "nope"
    (broken / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="make calibrate"):
        Engine.from_dir(broken, "score")
    # a model registered without data has no calibration: it loads, and each request
    # gets a 400 that says what the model lacks (the worker stays up for other models)
    del manifest["calibration"]
    (broken / MANIFEST).write_text(json.dumps(manifest))
    engine = Engine.from_dir(broken, "score")
    (reply,), _ = engine.handle([score_json(IMAGES)])
    err = json.loads(reply.body)["error"]
    assert reply.status == 400 and err["code"] == "unsupported", err
    assert "no score calibration" in err["message"] and "--data" in err["message"]


def test_auroc_and_auprc_on_known_cases():
    a, b = np.arange(10.0), np.arange(10.0) + 100
    assert auroc(a, b) == 1.0 and auroc(b, a) == 0.0 and auprc(a, b) == 1.0
    assert auroc(np.ones(5), np.ones(7)) == 0.5  # ties count half
    assert auroc(np.array([0.0, 2.0]), np.array([1.0, 3.0])) == 0.75


# ---- answers -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_json_answer_matches_its_schema_and_the_v2_answer(kind, vae_dir, ae_dir):
    engine = make_engine(vae_dir if kind == "vae" else ae_dir, "score")
    (reply,), _ = engine.handle([score_json(IMAGES, fpr=0.2)])
    assert reply.status == 200, reply.body
    answer = ScoreResponse.model_validate_json(reply.body)
    assert answer.fpr == 0.2 and answer.primary == "mahalanobis" and len(answer.predictions) == 6
    names = list(score_names(kind))
    header = {"inputs": [binary_input("image", IMAGES)], "parameters": {"fpr": 0.2}}
    ((v2,), _) = engine.handle([v2_request(header, IMAGES.tobytes())])
    head, out = read_v2(v2)
    assert head["parameters"] == {"fpr": 0.2, "scores": ",".join(names), "primary": "mahalanobis"}
    for i, pred in enumerate(answer.predictions):
        assert list(pred.scores) == names
        got = [pred.scores[s] for s in names]
        assert np.allclose([v.score for v in got], out["scores"][i], rtol=1e-6)
        assert np.allclose([v.p_value for v in got], out["p_values"][i], rtol=1e-6)
        assert [v.is_outlier for v in got] == out["is_outlier"][i].tolist()
        assert [v.p_value < 0.2 for v in got] == [v.is_outlier for v in got]
        assert pred.is_outlier == pred.scores["mahalanobis"].is_outlier
        assert pred.png_bits == out["png_bits"][i] == png_bits(IMAGES[i : i + 1])[0]
        assert (pred.kl_nats is None) == (kind == "ae")
        elbo = pred.recon_nats + (pred.kl_nats or 0.0)
        assert np.isclose(pred.scores[names[0]].score, elbo, rtol=1e-6)
        assert np.isclose(pred.bits_per_dim, elbo / np.log(2) / 784, rtol=1e-6)
        assert np.isclose(pred.scores["complexity"].score, elbo / np.log(2) - pred.png_bits)


def test_a_raw_png_body_and_the_error_map(vae_dir):
    engine = make_engine(vae_dir, "score")
    buf = io.BytesIO()
    Image.fromarray(IMAGES[0], "L").save(buf, format="PNG")
    requests = [RawRequest(buf.getvalue(), "image/png"), score_json(IMAGES[:1], error_map=True)]
    raw, listed = (json.loads(r.body) for r in engine.handle(requests)[0])
    assert raw["fpr"] == 0.01 and "error_map" not in raw["predictions"][0]
    assert raw["predictions"][0]["scores"] == listed["predictions"][0]["scores"]
    err = np.array(Image.open(io.BytesIO(base64.b64decode(listed["predictions"][0]["error_map"]))))
    x = torch.from_numpy(IMAGES[:1] / 255.0).float()[:, None]
    with torch.inference_mode():
        z = engine.op.module[0](x)[0]
        recon = engine.op.module[1](z)[0, 0].numpy()
    want = np.rint(np.abs(IMAGES[0] / 255.0 - recon) * 255)
    assert err.shape == (28, 28) and np.abs(err - want).max() <= 1


def numbers(tree) -> list[float]:
    """Every number and flag of a JSON answer, in order (chunking moves the last float bits)."""
    if isinstance(tree, dict):
        return [v for x in tree.values() for v in numbers(x)]
    if isinstance(tree, list):
        return [v for x in tree for v in numbers(x)]
    return [float(tree)] if isinstance(tree, int | float) else []


# ---- bad input --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"fpr": 0.0}, "out_of_range", "fpr"),
        ({"fpr": 0.9}, "out_of_range", "fpr"),
        ({"fpr": "0.1"}, "invalid_field", "fpr"),
        ({"error_map": 1}, "invalid_field", "error_map"),
        ({"sample": True}, "invalid_field", "sample"),
    ],
)
def test_bad_fields_are_400s_naming_the_field(vae_dir, fields, code, field):
    op = make_engine(vae_dir, "score").op
    rejects(code, field, op.parse, score_json(IMAGES[:1], **fields))


def test_bad_items_and_tensors_are_400s(vae_dir):
    op = make_engine(vae_dir, "score").op
    short = json_request({"instances": [{"pixels": [[0.5] * 28] * 3}]})
    rejects("wrong_shape", "instances[0].pixels", op.parse, short)
    not_b64 = json_request({"instances": [{"image_b64": "%%"}]})
    rejects("bad_base64", "instances[0].image_b64", op.parse, not_b64)
    engine = make_engine(vae_dir, "score")
    bad = v2_request({"inputs": [binary_input("image", IMAGES[:, :27])]}, IMAGES[:, :27].tobytes())
    header = {"inputs": [binary_input("image", IMAGES)], "parameters": {"fpr": 2}}
    fpr = v2_request(header, IMAGES.tobytes())
    a, b = engine.handle([bad, fpr])[0]
    assert v2_error(a).startswith("input 'image': shape [6, 27, 28]")
    assert v2_error(b).startswith("parameter 'fpr'")


def test_one_bad_request_in_a_batch_fails_alone(vae_dir):
    engine = make_engine(vae_dir, "score", chunk_size=4)  # the good items span chunks
    alone = [json.loads(r.body) for r in engine.handle([score_json(IMAGES[:3])])[0]]
    header = {"inputs": [binary_input("image", IMAGES[3:])]}
    replies, rec = engine.handle(
        [
            score_json(IMAGES[:3]),
            json_request({"instances": [{"pixels": [[2.0] * 28] * 28}]}),
            v2_request(header, IMAGES[3:].tobytes()),
        ]
    )
    assert [r.status for r in replies] == [200, 400, 200]
    assert numbers(json.loads(replies[0].body)) == pytest.approx(numbers(alone[0]), rel=1e-5)
    assert json.loads(replies[1].body)["error"]["code"] == "out_of_range"
    assert read_v2(replies[2])[1]["scores"].shape == (3, 4)
    p_values = [o for o in rec.observations if o.name == "latentserve_score_p_value"]
    flagged = [o for o in rec.observations if o.name == "latentserve_score_flagged_total"]
    assert len(p_values) == 6 and len(flagged) == 1
    assert flagged[0].value == sum(o.value < 0.01 for o in p_values)


# ---- mode latent: the encoder alone -------------------------------------------------------
@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_latent_mode_is_the_full_answers_latent_score_from_the_encoder_alone(kind, vae_dir, ae_dir):
    engine = make_engine(vae_dir if kind == "vae" else ae_dir, "score")
    (full, latent), _ = engine.handle([score_json(IMAGES), score_json(IMAGES, mode="latent")])
    full, latent = (ScoreResponse.model_validate_json(r.body) for r in (full, latent))
    assert latent.primary == "latent" and full.primary == "mahalanobis"
    for f, lat in zip(full.predictions, latent.predictions, strict=True):
        assert list(lat.scores) == ["latent"]
        assert lat.scores["latent"].score == pytest.approx(f.scores["latent"].score, rel=1e-5)
        assert lat.scores["latent"].p_value == pytest.approx(f.scores["latent"].p_value)
        assert lat.is_outlier == lat.scores["latent"].is_outlier
        assert lat.recon_nats is lat.neg_elbo_nats is lat.bits_per_dim is lat.png_bits is None
        if kind == "vae":
            assert lat.kl_nats == pytest.approx(f.kl_nats, rel=1e-5)
        else:
            assert lat.kl_nats is None
    header = {"inputs": [binary_input("image", IMAGES)], "parameters": {"mode": "latent"}}
    ((v2,), _) = engine.handle([v2_request(header, IMAGES.tobytes())])
    head, out = read_v2(v2)
    assert head["parameters"] == {"fpr": 0.01, "scores": "latent", "primary": "latent"}
    want = {"scores", "p_values", "is_outlier"} | ({"kl_nats"} if kind == "vae" else set())
    assert set(out) == want and out["scores"].shape == (6, 1)
    assert np.allclose(out["scores"][:, 0], [p.scores["latent"].score for p in latent.predictions])


def test_latent_mode_runs_no_decoder(vae_dir):
    engine = make_engine(vae_dir, "score")
    encoder, _ = engine.op.module

    def no_decoder(z):
        raise AssertionError("the decoder ran")

    engine.op.module = (encoder, no_decoder)
    (reply,), _ = engine.handle([score_json(IMAGES, mode="latent")])
    assert reply.status == 200, reply.body


def test_modes_mixed_in_one_batch_answer_as_alone_and_a_bad_one_fails_alone(vae_dir):
    engine = make_engine(vae_dir, "score", chunk_size=4)
    requests = [
        score_json(IMAGES[:3]),
        score_json(IMAGES[3:], mode="latent"),
        score_json(IMAGES[:2], mode="latent", error_map=True),
        score_json(IMAGES[:1], mode="fast"),
        score_json(IMAGES[2:], error_map=True),
    ]
    alone = [engine.handle([r])[0][0] for r in requests]
    replies, rec = engine.handle(requests)
    assert [r.status for r in replies] == [200, 200, 400, 400, 200]
    for got, want in zip(replies, alone, strict=True):
        assert got.status == want.status
        if got.status == 200:  # other chunks round the encoder's float32 otherwise, and
            # the latent distance (a quadratic form) magnifies that to ~2e-5
            assert numbers(json.loads(got.body)) == pytest.approx(
                numbers(json.loads(want.body)), rel=1e-4
            )
    assert json.loads(replies[2].body)["error"]["field"] == "error_map"
    assert json.loads(replies[3].body)["error"]["field"] == "mode"
    assert "error_map" in json.loads(replies[4].body)["predictions"][0]
    p_values = [o for o in rec.observations if o.name == "latentserve_score_p_value"]
    assert len(p_values) == 3 + 3 + 4  # one per answered item, whichever the mode
