"""Every shipped model: files intact, metrics at the bars, exports reproduce the metrics."""

import json
import operator

import numpy as np
import pytest
import torch

from paths import FIGURES, SHIPPED_MODELS, STORE
from training.artifacts import sha256_file
from training.data import load_dataset, to_float
from training.prior import draw
from training.recipes import BARS, README_FIGURES, SHIPPED, STORE_BUDGET_BYTES

OPS = {"<=": operator.le, ">=": operator.ge}


def manifest(name):
    path = STORE / name / "manifest.json"
    assert path.exists(), f"{path} missing: run `make models` (and commit the exports)"
    return json.loads(path.read_text())


def test_one_model_list():
    assert tuple(SHIPPED) == SHIPPED_MODELS  # recipes.py also refuses to import otherwise
    assert tuple(BARS) == SHIPPED_MODELS


@pytest.mark.parametrize("name", SHIPPED)
def test_files_match_manifest_and_metrics_meet_bars(name):
    m = manifest(name)
    for f, digest in m["files"].items():
        assert sha256_file(STORE / name / f) == digest, f"{name}/{f} does not match its manifest"
    recipe = SHIPPED[name]
    assert (m["kind"], m["body"], m["latent_dim"]) == (recipe.kind, recipe.body, recipe.latent_dim)
    metrics = m["metrics"]
    assert metrics["test_images"] == 10_000
    for key, (op, bar) in BARS[name].items():
        assert OPS[op](metrics[key], bar), f"{name}: {key} = {metrics[key]} is not {op} {bar}"
    if m["kind"] == "vae":
        assert metrics["nll_samples"] >= 500
    else:
        cov = torch.tensor(m["prior"]["cov"])
        assert cov.shape == (m["latent_dim"], m["latent_dim"])
        torch.linalg.cholesky(cov)  # positive definite: the sample endpoint can draw from it
        factor = np.array(m["prior"]["factor"])  # what the endpoint applies: F F^T = cov
        assert np.allclose(factor @ factor.T, np.array(m["prior"]["cov"]), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", SHIPPED)
def test_running_torch_loads_and_runs_the_exports(name):
    m = manifest(name)
    d, (c, h, w) = m["latent_dim"], m["image_shape"]
    enc = torch.jit.load(str(STORE / name / "encoder.pt"))
    dec = torch.jit.load(str(STORE / name / "decoder.pt"))
    with torch.inference_mode():
        out = enc(torch.rand(5, c, h, w))
        codes = out if m["kind"] == "vae" else (out,)
        assert len(codes) == len(m["encoder_outputs"])
        for t in codes:
            assert t.shape == (5, d) and torch.isfinite(t).all()
        images = dec(draw(m["prior"], d, 5).float())
    assert images.shape == (5, c, h, w) and torch.isfinite(images).all()
    assert float(images.min()) >= 0 and float(images.max()) <= 1


@pytest.mark.parametrize("name", SHIPPED)
def test_exported_torchscript_reproduces_recorded_mse(name):
    m = manifest(name)
    data = load_dataset(m["dataset"]["name"])
    assert data.checksum == m["dataset"]["sha256"]
    x = to_float(data.test.images)
    enc = torch.jit.load(str(STORE / name / "encoder.pt"))
    dec = torch.jit.load(str(STORE / name / "decoder.pt"))
    with torch.inference_mode():
        sq = 0.0
        for i in range(0, len(x), 2000):
            out = enc(x[i : i + 2000])
            z = out[0] if m["kind"] == "vae" else out
            sq += (dec(z) - x[i : i + 2000]).pow(2).sum().item()
    assert sq / x.numel() == pytest.approx(m["metrics"]["mse_per_pixel"], rel=1e-4)


def test_store_size_budget_and_readme_figures():
    total = sum(p.stat().st_size for n in SHIPPED for p in (STORE / n).iterdir())
    assert total <= STORE_BUDGET_BYTES, f"shipped exports take {total / 2**20:.1f} MiB"
    for name in SHIPPED:
        for fig in README_FIGURES:
            if fig == "manifold" and manifest(name)["latent_dim"] != 2:
                continue
            assert (FIGURES / name / f"{fig}.png").exists()
