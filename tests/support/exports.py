"""Models exported through the real export path, randomly initialised (untrained)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

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
    return out
