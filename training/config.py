"""A training run's settings, `TrainConfig`, and the command line of
`python -m training.train` that fills it (`parse_args`).

`--data-dir` is a directory of the four IDX files, or your own images (a folder
of PNG/JPEG files, a .npy array or an IDX images file) with `--image-shape C,H,W`;
training/own_images.py says how those are split and labelled. The validation images
are drawn from the training split (`validation_split`): `--val-size`, at most a fifth
of it (training/train.py caps it).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace
from pathlib import Path

from training.data import is_image_source, load_dataset, train_val_split
from training.dataset import Dataset, Split
from training.losses import RECONSTRUCTIONS
from training.mnist_family import DATASETS, IDX_SHAPE, download
from training.models import BODIES, KINDS, ModelConfig
from training.own_images import TEST_FRACTION


@dataclass
class TrainConfig:
    dataset: str = "fashion-mnist"  # with your own images (data_dir): a name of your choice
    data_dir: str | None = None
    image_shape: tuple[int, int, int] | None = None  # None: the data's own (1, 28, 28)
    test_fraction: float = TEST_FRACTION  # your own images without a test/ folder
    kind: str = "vae"
    body: str = "conv"
    latent_dim: int = 16
    hidden: int = 256
    channels: tuple[int, ...] = (32, 64, 96)
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # cosine | constant
    warmup_epochs: int = 0  # linear KL warm-up (beta from 0 to beta); 0 = off
    beta: float = 1.0
    recon: str = "bce"
    hflip: bool = False  # augment: mirror half of each batch left-right
    seed: int = 0
    val_size: int = 5000
    limit: int | None = None  # use only this many training images (tests, smoke runs)
    threads: int | None = None  # torch CPU threads; None = torch's default
    device: str = "auto"
    out: str = "runs/model"

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """From parsed arguments, config.json or a checkpoint; unknown keys are ignored
        (checkpoints written before a field was removed still load)."""
        names = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in names})
        shape = None if cfg.image_shape is None else tuple(cfg.image_shape)
        return replace(cfg, channels=tuple(cfg.channels), image_shape=shape)

    def model_config(self) -> ModelConfig:
        shape = tuple(self.image_shape) if self.image_shape else IDX_SHAPE
        return ModelConfig(
            self.kind, self.body, self.latent_dim, shape, self.hidden, tuple(self.channels)
        )

    def load_data(self):
        return load_dataset(self.dataset, self.data_dir, self.image_shape, self.test_fraction)


def validation_split(cfg: TrainConfig | dict, data: Dataset | None = None) -> tuple[Split, Split]:
    """(train, validation) of a run's training split, as it was drawn: from its TrainConfig
    or a manifest's `train_config` (the data loaded again when not given)."""
    if isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    data = data if data is not None else cfg.load_data()
    return train_val_split(data.train, cfg.val_size, cfg.seed)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(description="Train an AE or VAE on MNIST-style or your own images.")
    d = TrainConfig()
    p.add_argument(
        "--dataset",
        help=f"{' or '.join(DATASETS)} (default {d.dataset}); with your own images in "
        "--data-dir, any name (default: the folder's or file's name)",
    )
    p.add_argument(
        "--data-dir",
        help="a directory with the four IDX files (overrides --dataset's), or your own "
        "images: a folder of PNG/JPEG files (with train/ and test/ subfolders, or one pool "
        "split by --test-fraction; labels from first-level subfolder names), a .npy array "
        "or an IDX images file",
    )
    p.add_argument("--image-shape", type=_shape, default=None, metavar="C,H,W",
                   help="the model's image shape, C 1 (grayscale) or 3 (RGB); every image is "
                   "converted to it as the server converts uploads (needed with your own "
                   "images; default 1,28,28 for IDX data)")  # fmt: skip
    p.add_argument("--test-fraction", type=float, default=d.test_fraction,
                   help="your own images without train/ and test/: the share held out "
                   "for testing (seeded, the same for every model)")  # fmt: skip
    p.add_argument("--download", action="store_true", help="fetch the IDX files into --data-dir")
    p.add_argument("--kind", choices=KINDS, default=d.kind)
    p.add_argument("--body", choices=BODIES, default=d.body)
    p.add_argument("--latent-dim", type=int, default=d.latent_dim)
    p.add_argument("--hidden", type=int, default=None, help="dense width (mlp default 400)")
    p.add_argument("--channels", type=lambda s: tuple(int(c) for c in s.split(",")),
                   default=d.channels, help="conv channels, e.g. 32,64,96")  # fmt: skip
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lr-schedule", choices=("cosine", "constant"), default=d.lr_schedule)
    p.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs)
    p.add_argument("--beta", type=float, default=d.beta)
    p.add_argument("--recon", choices=RECONSTRUCTIONS, default=d.recon)
    p.add_argument("--hflip", action="store_true", help="mirror half of each batch (augment)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--val-size", type=int, default=d.val_size)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=d.device)
    p.add_argument("--out", required=True)
    a = vars(p.parse_args(argv))
    own = a["data_dir"] is not None and is_image_source(a["data_dir"])
    if own:
        if a["image_shape"] is None:
            p.error(f"--data-dir {a['data_dir']} holds your own images: give --image-shape C,H,W")
        a["dataset"] = a["dataset"] or Path(a["data_dir"]).resolve().stem
    elif (a["dataset"] or d.dataset) not in DATASETS:
        p.error(f"--dataset must be one of {', '.join(DATASETS)} without images of your own")
    a["dataset"] = a["dataset"] or d.dataset
    if a.pop("download"):
        if not a["data_dir"] or own:
            p.error("--download needs --data-dir (a directory for the IDX files)")
        download(a["dataset"], Path(a["data_dir"]))
    hidden = a.pop("hidden")
    cfg = TrainConfig.from_dict(a)
    cfg.hidden = hidden if hidden is not None else (400 if cfg.body == "mlp" else d.hidden)
    return cfg


def _shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W such as 3,64,64, got {text!r}") from None
    if c not in (1, 3) or min(h, w) < 1:
        raise argparse.ArgumentTypeError(f"C must be 1 or 3 and H, W positive, got {text!r}")
    return c, h, w
