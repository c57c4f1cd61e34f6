"""Training on your own images: folders as datasets (splits, labels), and a colour VAE
trained, evaluated and exported through the real CLI on tinted Fashion-MNIST PNGs."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from paths import ROOT
from tests.support.colour import class_folders, colour_images, write_colour_folder
from training.config import TrainConfig, parse_args, validation_split
from training.data import load_dataset, to_float
from training.evaluate import evaluate
from training.export import main as export_main
from training.models import ModelConfig, build_model
from training.own_images import load_image_source
from training.plots import make_figures
from training.runs import load_run
from training.sources import DataError, SourceError, read_images, source_sha256
from training.train import train


@pytest.fixture(scope="module")
def colour_dir(tmp_path_factory) -> Path:
    """200 tinted Fashion-MNIST images, 32 x 32 RGB, in one folder per class."""
    return write_colour_folder(tmp_path_factory.mktemp("colour") / "tinted-fashion", 200, 32)


def test_a_pool_with_class_folders(colour_dir):
    data = load_dataset("tinted", colour_dir, (3, 32, 32))
    assert data.layout == "pool" and data.labelled
    assert data.classes == tuple(sorted(class_folders()))
    assert (len(data.train), len(data.test)) == (180, 20)
    assert data.train.images.shape == (180, 3, 32, 32) and data.image_shape == (3, 32, 32)
    # the pixels are the ones the PNGs hold, the labels their folders
    rgb, labels = colour_images(200, 32)
    names = class_folders()
    by_class = {c: i for i, c in enumerate(data.classes)}
    first = data.test.images[0].transpose(1, 2, 0)
    match = [i for i in range(200) if np.array_equal(rgb[i], first)]
    assert match and data.test.labels[0] == by_class[names[labels[match[0]]]]
    assert to_float(data.test.images).shape == (20, 3, 32, 32)
    # the same split whatever else happens: seeded, apart from the training seed
    again = load_image_source(colour_dir, (3, 32, 32))
    assert np.array_equal(again.test.images, data.test.images) and again.name == colour_dir.name
    ident = data.identity()
    assert ident["sha256"] == source_sha256(colour_dir) and ident["classes"] == list(data.classes)
    assert ident["split"]["test_fraction"] == 0.1 and ident["test_images"] == 20


def test_train_and_test_subfolders_and_unlabelled_folders(tmp_path):
    split_dir = write_colour_folder(tmp_path / "split", 40, 16, splits=True)
    data = load_dataset("split", split_dir, (1, 16, 16))
    assert data.layout == "folder" and (len(data.train), len(data.test)) == (32, 8)
    assert data.labelled and data.train.images.shape == (32, 1, 16, 16)
    Image.new("RGB", (16, 16)).save(split_dir / "stray.png")
    with pytest.raises(ValueError, match="1 image.*outside train/ and test/"):
        load_dataset("split", split_dir, (1, 16, 16))

    flat = tmp_path / "flat"
    flat.mkdir()
    for i, image in enumerate(colour_images(12, 16)[0]):
        Image.fromarray(image).save(flat / f"{i:02d}.png")  # in the array's order
    data = load_dataset("flat", flat, (3, 16, 16))
    assert not data.labelled and data.classes is None and data.class_names == []
    np.save(tmp_path / "arr.npy", colour_images(12, 16)[0])
    from_npy = load_dataset("arr", tmp_path / "arr.npy", (3, 16, 16))
    assert np.array_equal(from_npy.test.images, data.test.images)  # same pixels, same split
    with pytest.raises(DataError, match="need an image shape"):
        load_dataset("flat", flat)


def test_unlabelled_data_skips_knn_and_the_latent_plot_and_draws_colour(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, image in enumerate(colour_images(30, 16)[0]):
        Image.fromarray(image).save(flat / f"{i:02d}.jpg")
    data = load_dataset("flat", flat, (3, 16, 16))
    model = build_model(ModelConfig("vae", "conv", 2, (3, 16, 16), hidden=16, channels=(4, 8)))
    metrics = evaluate(model, data, nll_samples=5)
    assert metrics["knn5_accuracy"] is None and metrics["test_images"] == 3
    assert metrics["nll"] is not None and metrics["mse_per_pixel"] > 0
    figures = {p.stem for p in make_figures(model, data, tmp_path / "figs", "flat")}
    assert figures == {"manifold", "reconstructions", "samples", "interpolation"}


def test_a_run_refuses_data_that_changed_since_training(tmp_path):
    folder = write_colour_folder(tmp_path / "data", 30, 16)
    cfg = TrainConfig(
        data_dir=str(folder), dataset="data", image_shape=(3, 16, 16), epochs=1, latent_dim=2,
        hidden=16, channels=(4, 8), batch_size=16, out=str(tmp_path / "run"),
    )  # fmt: skip
    train(cfg)
    run = load_run(tmp_path / "run")
    assert run.config.image_shape == (3, 16, 16) and run.data.checksum == source_sha256(folder)
    # 27 training images: validation capped at a fifth, recorded as used, drawn again alike
    assert run.config.val_size == 5
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    _, val = validation_split(config)
    assert val.images.shape == (5, 3, 16, 16) and val.labels is not None
    next(folder.rglob("*.png")).unlink()
    with pytest.raises(DataError, match="the data changed since"):
        _ = load_run(tmp_path / "run").data


def test_cli_arguments_for_your_own_images(colour_dir, capsys):
    cfg = parse_args(["--data-dir", str(colour_dir), "--image-shape", "3,32,32", "--out", "x"])
    assert cfg.image_shape == (3, 32, 32) and cfg.dataset == "tinted-fashion"
    assert cfg.model_config().image_shape == (3, 32, 32)
    assert parse_args(["--out", "x"]).image_shape is None  # IDX: (1, 28, 28) as ever
    assert parse_args(["--out", "x"]).model_config().image_shape == (1, 28, 28)
    for bad, says in [
        ([], "give --image-shape"),
        (["--image-shape", "2,32,32"], "C must be 1 or 3"),
        (["--image-shape", "32x32"], "expected C,H,W"),
    ]:
        with pytest.raises(SystemExit) as info:
            parse_args(["--data-dir", str(colour_dir), *bad, "--out", "x"])
        assert info.value.code == 2 and says in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "tinted", "--out", "x"])  # a free name needs your own images


def test_colour_vae_through_the_cli(colour_dir, tmp_path):
    """python -m training.train on the PNG folder, then evaluate and export: the manifest
    records [3, 32, 32] and the folder's sha256, and the export reads those PNGs."""
    run, out = tmp_path / "run", tmp_path / "export" / "tinted-vae"
    proc = subprocess.run(
        [sys.executable, "-m", "training.train", "--data-dir", str(colour_dir),
         "--image-shape", "3,32,32", "--kind", "vae", "--latent-dim", "4", "--hidden", "32",
         "--channels", "8,16", "--epochs", "2", "--batch-size", "32", "--val-size", "20",
         "--threads", "1", "--out", str(run)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "160 train / 20 val images" in proc.stdout
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 2 and history[1]["val_loss"] < history[0]["val_loss"]
    from training.evaluate import main as evaluate_main

    evaluate_main(["--run", str(run), "--nll-samples", "10"])
    export_main(["--run", str(run), "--out", str(out)])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image_shape"] == [3, 32, 32]
    assert manifest["model_config"]["image_shape"] == [3, 32, 32]
    assert manifest["train_config"]["image_shape"] == [3, 32, 32]
    dataset = manifest["dataset"]
    assert dataset["name"] == "tinted-fashion" and dataset["sha256"] == source_sha256(colour_dir)
    assert dataset["layout"] == "pool" and dataset["classes"] == sorted(class_folders())
    assert manifest["metrics"]["knn5_accuracy"] is not None
    assert manifest["metrics"]["test_images"] == 20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        enc = torch.jit.load(str(out / "encoder.pt"))
        dec = torch.jit.load(str(out / "decoder.pt"))
    x = to_float(read_images(colour_dir, (3, 32, 32))[:8])
    with torch.inference_mode():
        z_mean, _ = enc(x)
        images = dec(z_mean)
    assert images.shape == (8, 3, 32, 32) and torch.isfinite(images).all()


def test_a_bad_folder_is_a_message_not_a_traceback(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"not a png")
    proc = subprocess.run(
        [sys.executable, "-m", "training.train", "--data-dir", str(tmp_path / "imgs"),
         "--image-shape", "1,8,8", "--out", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "a.png: not a readable PNG or JPEG image" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert issubclass(SourceError, ValueError)
