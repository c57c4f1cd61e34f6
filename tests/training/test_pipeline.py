"""A 1-epoch run on a small subset, through evaluation, figures and export."""

import copy
import json
from dataclasses import replace

import pytest
import torch

from training.artifacts import ExportError, sha256_file
from training.checkpoint import load_checkpoint
from training.config import TrainConfig, parse_args
from training.data import to_float
from training.evaluate import active_units, evaluate, evaluate_run, knn_accuracy
from training.export import (
    eager_from_store,
    export_model,
    export_run,
    rescript,
    script_and_check,
)
from training.models import ImageDecoder, ModelConfig, build_model, encode_all
from training.plots import main as plots_main
from training.plots import make_figures
from training.prior import draw
from training.runs import load_run
from training.train import pick_device, train


@pytest.fixture(scope="module", params=["vae", "ae"])
def tiny_run(request, tmp_path_factory, fashion):
    out = tmp_path_factory.mktemp(f"run-{request.param}")
    cfg = TrainConfig(
        kind=request.param,
        latent_dim=2 if request.param == "vae" else 8,
        epochs=1,
        limit=2000,
        val_size=500,
        batch_size=64,
        out=str(out),
        recon="bce" if request.param == "vae" else "mse",
    )
    model, history = train(cfg)
    return model, history, out


def test_training_writes_checkpoint_and_history(tiny_run):
    model, history, out = tiny_run
    assert len(history) == 1 and history[0]["val_loss"] > 0
    reloaded, ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["epoch"] == 1
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(reloaded.encode_mean(x), model.encode_mean(x))
    assert json.loads((out / "config.json").read_text())["limit"] == 2000


def test_evaluate_figures_and_export(tiny_run, fashion, tmp_path):
    model, _, out = tiny_run
    metrics = evaluate(model, fashion, nll_samples=20, nll_images=50)
    assert metrics["test_images"] == 10_000
    assert 0 < metrics["mse_per_pixel"] < 0.2
    assert 0.1 < metrics["knn5_accuracy"] <= 1.0
    if model.cfg.kind == "vae":
        assert metrics["neg_elbo"] == pytest.approx(metrics["recon"] + metrics["kl"])
        # the importance-sampled bound is tighter than the one-sample ELBO, within noise
        assert metrics["nll"] < metrics["neg_elbo"] + 5
    else:
        assert metrics["neg_elbo"] is None and metrics["nll"] is None

    figures = {p.stem for p in make_figures(model, fashion, tmp_path / "figs", "tiny")}
    expected = {"latent", "reconstructions", "samples", "interpolation"}
    assert figures == expected | ({"manifold"} if model.cfg.latent_dim == 2 else set())
    assert all((tmp_path / "figs" / f"{f}.png").stat().st_size > 1000 for f in figures)

    prior = {"type": "gaussian", "mean": [0.0] * 8, "cov": torch.eye(8).tolist()}
    manifest = export_model(
        model,
        tmp_path / "export",
        x_check=torch.rand(16, 1, 28, 28),
        dataset={"name": "fashion-mnist"},
        metrics=metrics,
        code_prior=prior if model.cfg.kind == "ae" else None,
    )
    for f in ("encoder.pt", "decoder.pt"):
        assert manifest["files"][f] == sha256_file(tmp_path / "export" / f)
    on_disk = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert on_disk["kind"] == model.cfg.kind and on_disk["latent_dim"] == model.cfg.latent_dim
    assert on_disk["pixel_scaling"]["divide_by"] == 255.0
    enc = torch.jit.load(str(tmp_path / "export" / "encoder.pt"))
    dec = torch.jit.load(str(tmp_path / "export" / "decoder.pt"))
    x = torch.rand(3, 1, 28, 28)
    z = enc(x)[0] if model.cfg.kind == "vae" else enc(x)
    img = dec(z).detach()
    assert img.shape == (3, 1, 28, 28) and float(img.min()) >= 0 and float(img.max()) <= 1


def test_load_run_then_evaluate_export_and_redraw_samples_from_the_export(tiny_run, tmp_path):
    model, _, out = tiny_run
    run = load_run(out)
    assert run.name == out.name and run.checkpoint["epoch"] == 1
    assert isinstance(run.config, TrainConfig) and run.config.limit == 2000
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(run.model.encode_mean(x), model.encode_mean(x))
    assert run.data.name == run.config.dataset and run.data is run.data  # loaded once
    # a slice of the data keeps the test quick; the full splits are covered above
    run.data = replace(run.data, train=run.data.train.subset(slice(0, 3000)))
    run.data = replace(run.data, test=run.data.test.subset(slice(0, 1000)))

    metrics = evaluate_run(run, nll_samples=0)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["best_epoch"] == 1 and metrics["epochs"] == 1
    manifest = export_run(run, tmp_path / "export")
    assert manifest["metrics"] == metrics and manifest["train_config"]["limit"] == 2000
    prior = manifest["prior"]
    if model.cfg.kind == "vae":
        assert prior == {"type": "standard_normal"}
    else:  # the Gaussian of the training codes, with the factor the endpoint applies
        codes = encode_all(model, to_float(run.data.train.images)).double()
        mean, cov, factor = (
            torch.tensor(prior[k], dtype=torch.double) for k in ("mean", "cov", "factor")
        )
        assert torch.allclose(mean, codes.mean(0), atol=1e-6)
        assert torch.allclose(cov, torch.cov(codes.T), atol=1e-6)
        assert torch.allclose(factor @ factor.T, cov, atol=1e-9)

    # the figure's draws from the export equal those from the checkpoint
    z = draw(prior, model.cfg.latent_dim, 16, seed=0).float()
    decoder = torch.jit.load(str(tmp_path / "export" / "decoder.pt"))
    with torch.inference_mode():
        assert torch.allclose(decoder(z), ImageDecoder(model.decoder)(z), atol=1e-5)
    plots_main(["--export", str(tmp_path / "export"), "--out", str(tmp_path / "figs")])
    assert (tmp_path / "figs" / "samples.png").stat().st_size > 1000


def test_rescript_keeps_weights_and_unchanged_files(tiny_run, tmp_path):
    """An export scripted again with this code: the same answers, a file whose code
    did not change keeps its bytes, and the manifest's sha256 follow the files."""
    run = load_run(tiny_run[2])
    out = tmp_path / "export"
    manifest = export_run(run, out)
    x = to_float(run.data.test.images[:32])
    with torch.inference_mode():
        assert torch.allclose(eager_from_store(out).encode_mean(x), run.model.encode_mean(x))
    before = {f: (out / f).read_bytes() for f in ("encoder.pt", "decoder.pt")}
    stale = json.loads((out / "manifest.json").read_text())
    stale["files"]["decoder.pt"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(stale))
    diffs = rescript(out, x)
    assert max(diffs.values()) <= 1e-5
    assert {f: (out / f).read_bytes() for f in before} == before  # same code: untouched
    again = json.loads((out / "manifest.json").read_text())
    assert again["files"] == manifest["files"]
    assert again["metrics"] == manifest["metrics"] and again["prior"] == manifest["prior"]


def test_old_checkpoint_configs_still_load():
    cfg = TrainConfig.from_dict({"kind": "ae", "channels": [8, 8, 8], "extra": {}})
    assert cfg.kind == "ae" and cfg.channels == (8, 8, 8)


def test_export_fails_loudly_on_parity_mismatch(monkeypatch):
    model = build_model(ModelConfig("vae", "mlp", 3, hidden=16))
    real_script = torch.jit.script

    def tampered(module, *args, **kwargs):
        if isinstance(module, ImageDecoder):  # the ImageDecoder wrapper: script a drifted copy
            module = copy.deepcopy(module)
            with torch.no_grad():
                next(module.parameters()).add_(0.1)
        return real_script(module, *args, **kwargs)

    monkeypatch.setattr(torch.jit, "script", tampered)
    with pytest.raises(ExportError, match="scripted decoder differs"):
        script_and_check(model, torch.rand(4, 1, 28, 28))


def test_ae_export_requires_a_prior(tmp_path):
    model = build_model(ModelConfig("ae", "mlp", 3, hidden=16))
    with pytest.raises(ExportError, match="code_prior"):
        export_model(model, tmp_path, x_check=torch.rand(2, 1, 28, 28), dataset={})


def test_knn_and_active_units_on_known_codes():
    train_z = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0]])
    train_y = torch.tensor([0, 0, 0, 1, 1])
    test_z = torch.tensor([[0.05, 0.05], [5.0, 5.1]])
    assert knn_accuracy(train_z, train_y, test_z, torch.tensor([0, 1]), k=3) == 1.0
    assert knn_accuracy(train_z, train_y, test_z, torch.tensor([1, 0]), k=3) == 0.0
    z = torch.cat([torch.randn(1000, 1), torch.full((1000, 1), 0.3)], dim=1)
    assert active_units(z) == 1


def test_cli_parsing_and_device():
    cfg = parse_args(["--body", "mlp", "--latent-dim", "20", "--out", "x"])
    assert cfg.hidden == 400 and cfg.latent_dim == 20 and cfg.body == "mlp"
    assert parse_args(["--out", "x"]).hidden == 256
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu").type == "cpu"
