"""Models exported through the real export path, randomly initialised (untrained),
and calibrated for the score operation on stand-in images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from serving.calibrate import calibrate
from serving.packages import packaged_manifest, packages_for
from training.export import export_model
from training.models import ModelConfig, build_model


def export_fixture(out: Path, kind: str, latent_dim: int = 8, seed: int = 0) -> Path:
    """A randomly initialised model exported through the real export path."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(kind=kind, latent_dim=latent_dim, hidden=64))
    prior = None
    if kind == "ae":
        prior = {"type": "gaussian", "mean": [0.5] * latent_dim, "cov": np.eye(latent_dim).tolist()}
    export_model(
        model,
        out,
        x_check=torch.rand(8, 1, 28, 28),
        dataset={"name": "fashion-mnist", "note": "test fixture, untrained"},
        code_prior=prior,
    )
    calibrate_fixture(out)
    return out


def fixture_images(
    n: int = 300, seed: int = 0, channels: int | None = None, hw: tuple[int, int] = (28, 28)
) -> np.ndarray:
    """(n, 28, 28) uint8 blobs of varied brightness: stand-ins for a validation split;
    with `channels`, (n, C, H, W) blobs of that size (H and W multiples of 4)."""
    rng = np.random.default_rng(seed)
    h, w = hw[0] // 4, hw[1] // 4
    coarse = rng.random((n, channels or 1, h, w)) * rng.random((n, 1, 1, 1))
    out = np.rint(np.kron(coarse, np.ones((4, 4))) * 255).astype(np.uint8)
    return out if channels else out[:, 0]


def calibrate_fixture(
    model_dir: Path, seed: int = 0, channels: int | None = None, hw: tuple[int, int] = (28, 28)
) -> dict:
    """The score calibration of a fixture export, on `fixture_images` (the real code path)."""
    images = fixture_images(seed=seed, channels=channels, hw=hw)
    return calibrate(model_dir, images, {"dataset": "fixture images"})


def packaged_copy(model_dir: Path, dest: Path) -> Path:
    """A copy of an export with its AOTInductor packages (compiled once, then from the
    cache of serving/packages.py) and a manifest that lists them: the model files and
    manifest an `aoti` archive carries, beside the TorchScript ones."""
    packages = packages_for(model_dir, log=lambda *_: None)
    shutil.copytree(model_dir, dest)
    for package in packages.glob("*.pt2"):
        shutil.copy2(package, dest / package.name)
    manifest = packaged_manifest(model_dir, packages)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return dest
