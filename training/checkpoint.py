"""A run's `checkpoint.pt`: the best epoch's weights with the model and training
configs, its validation losses and the identity of its data (`save_checkpoint`,
written by training/train.py; `load_checkpoint`, read by training/runs.py).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from training.config import TrainConfig
from training.models import ModelConfig, build_model


def save_checkpoint(
    path: Path, model, cfg: TrainConfig, epoch: int, val: dict, dataset: dict | None = None
) -> None:
    """`dataset`: the identity of the data it was trained on (`Dataset.identity`), which
    the run checks when it loads the data again (training/runs.py)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = {
        "model_config": model.cfg.to_dict(),
        "train_config": asdict(cfg),
        "epoch": epoch,
        "val": val,
        "state_dict": state,
    }
    if dataset is not None:
        ckpt["dataset"] = dataset
    torch.save(ckpt, path)


def load_checkpoint(path: Path):
    """-> (model in eval mode on CPU, the checkpoint dict)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt
