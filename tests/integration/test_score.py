"""The score operation on the session TorchServe, with the shipped, calibrated models.

Real data, offline: Fashion-MNIST test images (in distribution for the Fashion
models) and MNIST test digits (out of it), over the JSON API and over the Open
Inference Protocol with tritonclient; answers equal the in-process engine's.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import tritonclient.http as httpclient

from handlers.engine import Engine
from handlers.wire.request import RawRequest
from loadtests.payloads import png_b64
from paths import STORE
from training.data import load_dataset

N = 24  # images of each set per request


@functools.cache
def images(dataset: str) -> np.ndarray:
    return load_dataset(dataset).test.images[100 : 100 + N]


def body(batch: np.ndarray, **fields) -> dict:
    return {"instances": [{"image_b64": png_b64(a)} for a in batch], **fields}


def flagged(answer: dict) -> list[bool]:
    return [p["is_outlier"] for p in answer["predictions"]]


@pytest.mark.parametrize(
    ("model", "inside", "outside"),
    [("fashion-vae", "fashion-mnist", "mnist"), ("mnist-vae-2d", "mnist", "fashion-mnist")],
)
def test_shipped_models_flag_the_other_dataset_and_answer_as_in_process(
    torchserve, model, inside, outside
):
    batch = np.concatenate([images(inside), images(outside)])
    resp = torchserve.post(f"{model}-score", json=body(batch))
    assert resp.status_code == 200, resp.text[:500]
    answer = resp.json()
    flags = flagged(answer)
    # fixed images, so this is deterministic; the bounds say what the evaluation leads
    # to expect: 1 % of in-distribution images flagged, 98.6-100 % of the others
    assert sum(flags[:N]) <= 2, flags[:N]
    assert sum(flags[N:]) >= N - 2, flags[N:]
    engine = Engine.from_dir(STORE / model, "score")
    raw = RawRequest(resp.request.body, "application/json")
    local = engine.handle([raw])[0][0]
    for got, want in zip(answer["predictions"], json.loads(local.body)["predictions"], strict=True):
        for name, s in want["scores"].items():
            assert got["scores"][name]["score"] == pytest.approx(s["score"], rel=1e-5)
            assert got["scores"][name]["is_outlier"] == s["is_outlier"]


def test_tritonclient_reads_scores_p_values_and_bool_flags(torchserve):
    batch = np.concatenate([images("fashion-mnist")[:4], images("mnist")[:4]])
    client = httpclient.InferenceServerClient(torchserve.url.removeprefix("http://"))
    x = httpclient.InferInput("image", list(batch.shape), "UINT8")
    x.set_data_from_numpy(batch, binary_data=True)
    names = ("scores", "p_values", "is_outlier", "png_bits")
    outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in names]
    result = client.infer("fashion-vae-score", [x], outputs=outputs, parameters={"fpr": 0.05})
    flags = result.as_numpy("is_outlier")
    assert flags.dtype == np.bool_ and flags.shape == (8, 4)
    p = result.as_numpy("p_values")
    assert np.array_equal(flags, p < 0.05)
    params = result.get_response()["parameters"]
    scores = "neg_elbo,complexity,mahalanobis,latent"
    assert params == {"fpr": 0.05, "scores": scores, "primary": "mahalanobis"}
    assert flags[4:, 2].all()  # MNIST digits, by the primary score
    json_answer = torchserve.post("fashion-vae-score", json=body(batch, fpr=0.05)).json()
    mahalanobis = [p["scores"]["mahalanobis"]["score"] for p in json_answer["predictions"]]
    assert result.as_numpy("scores")[:, 2] == pytest.approx(mahalanobis, rel=1e-5)


def test_mode_latent_over_both_wires_is_the_full_answers_latent_score(torchserve):
    """The encoder-only mode: the full answer's latent score and p-value, on its own."""
    batch = np.concatenate([images("fashion-mnist")[:4], images("mnist")[:4]])
    full = torchserve.post("fashion-vae-score", json=body(batch)).json()["predictions"]
    resp = torchserve.post("fashion-vae-score", json=body(batch, mode="latent"))
    assert resp.status_code == 200, resp.text[:300]
    answer = resp.json()
    assert answer["primary"] == "latent"
    for got, want in zip(answer["predictions"], full, strict=True):
        assert list(got["scores"]) == ["latent"] and got["recon_nats"] is None
        assert got["scores"]["latent"]["score"] == pytest.approx(
            want["scores"]["latent"]["score"], rel=1e-4
        )
        assert got["kl_nats"] == pytest.approx(want["kl_nats"], rel=1e-5)
    client = httpclient.InferenceServerClient(torchserve.url.removeprefix("http://"))
    x = httpclient.InferInput("image", list(batch.shape), "UINT8")
    x.set_data_from_numpy(batch, binary_data=True)
    result = client.infer("fashion-vae-score", [x], parameters={"mode": "latent"})
    assert result.get_response()["parameters"]["scores"] == "latent"
    latent = [p["scores"]["latent"]["score"] for p in answer["predictions"]]
    assert result.as_numpy("scores")[:, 0] == pytest.approx(latent, rel=1e-4)
    assert result.as_numpy("is_outlier")[4:, 0].sum() >= 2  # digits, by a weaker score
    resp = torchserve.post("fashion-vae-score", json=body(batch, mode="latent", error_map=True))
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "error_map"


def test_bad_requests_are_400s_naming_the_field(torchserve):
    resp = torchserve.post("fashion-vae-score", json=body(images("mnist")[:1], fpr=0.9))
    assert resp.status_code == 400
    assert resp.json()["error"]["field"] == "fpr"
    resp = torchserve.post("fashion-ae-score", json={"instances": [{"pixels": [[0.5] * 27]}]})
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "wrong_shape"


def test_flagged_items_and_p_values_reach_the_metrics(torchserve):
    name = "fashion-ae-score"
    count = "latentserve_score_p_value_count"
    before = torchserve.metric(count, ModelName=name)
    flagged_before = torchserve.metric("latentserve_score_flagged_total", ModelName=name)
    resp = torchserve.post(name, json=body(images("mnist")[:5], fpr=0.01))
    assert resp.status_code == 200, resp.text[:300]
    assert torchserve.wait_metric(count, before + 5, ModelName=name) == before + 5
    want = flagged_before + sum(flagged(resp.json()))  # the request asked for the counter's 1 %
    got = torchserve.wait_metric("latentserve_score_flagged_total", want, ModelName=name)
    assert got == want
