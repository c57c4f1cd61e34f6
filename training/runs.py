"""One training run on disk, loaded once: `load_run(runs/<name>)`.

A run directory holds `checkpoint.pt` (the model and the TrainConfig it was
trained with), `history.json` and, once evaluated, `metrics.json`. Evaluation,
figures, export and the recipes all start from `load_run`; the dataset and the
AE's code prior are loaded on first use and then shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.data import to_float
from training.dataset import Dataset
from training.models import Autoencoder
from training.prior import model_prior
from training.sources import DataError


@dataclass
class Run:
    path: Path
    model: Autoencoder  # eval mode, on the CPU
    config: TrainConfig
    checkpoint: dict  # as saved by training.checkpoint.save_checkpoint

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def data(self) -> Dataset:
        """The data it was trained on, loaded again; refused when its files changed since
        (the export would record another dataset's sha256)."""
        data = self.config.load_data()
        trained_on = self.checkpoint.get("dataset")
        if trained_on and trained_on["sha256"] != data.checksum:
            raise DataError(
                f"{data.source}: the data changed since {self.path} was trained on it "
                f"(sha256 {trained_on['sha256'][:12]}..., now {data.checksum[:12]}...)"
            )
        return data

    @cached_property
    def prior(self) -> dict:
        """The prior the export records and the figures sample from."""
        return model_prior(self.model, to_float(self.data.train.images))


def load_run(run: Path | str) -> Run:
    path = Path(run)
    model, ckpt = load_checkpoint(path / "checkpoint.pt")
    return Run(path, model, TrainConfig.from_dict(ckpt["train_config"]), ckpt)
