"""The training loop, and only that: `python -m training.train --help`.

Writes into --out: `checkpoint.pt` (the best epoch on validation), `config.json`
and `history.json`. Evaluation and export are separate steps
(`training.evaluate`, `training.export`); `training.recipes` chains them.

`--data-dir` is a directory of the four IDX files, or your own images (a folder
of PNG/JPEG files, a .npy array or an IDX images file) with `--image-shape C,H,W`;
training/data.py says how those are split and labelled. The validation images are
drawn from the training split: `--val-size`, at most a fifth of it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training.data import (
    DATASETS,
    IDX_SHAPE,
    TEST_FRACTION,
    DataError,
    Dataset,
    Split,
    is_image_source,
    load_dataset,
    to_float,
    train_val_split,
)
from training.losses import RECONSTRUCTIONS, autoencoder_loss
from training.models import BODIES, KINDS, ModelConfig, build_model, count_parameters


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


def pick_device(requested: str = "auto") -> torch.device:
    """`auto` means CUDA when present, else CPU; anything else is taken as given."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def lr_at(cfg: TrainConfig, epoch: float) -> float:
    if cfg.lr_schedule == "constant":
        return cfg.lr
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(epoch / cfg.epochs, 1.0)))


def beta_at(cfg: TrainConfig, epoch: float) -> float:
    if cfg.warmup_epochs <= 0:
        return cfg.beta
    return cfg.beta * min(1.0, epoch / cfg.warmup_epochs)


@torch.no_grad()
def validate(model, x: torch.Tensor, cfg: TrainConfig, device: torch.device) -> dict:
    """Mean per-image loss terms on `x` (beta = 1 for the ELBO)."""
    model.eval()
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(cfg.seed + 1)  # the same noise every epoch: comparable numbers
    recon = kl = 0.0
    for i in range(0, len(x), 1000):
        terms = autoencoder_loss(model, x[i : i + 1000].to(device), cfg.recon, beta=1.0)
        recon += terms.recon.sum().item()
        kl += terms.kl.sum().item()
    torch.random.set_rng_state(gen_state)
    n = len(x)
    return {"recon": recon / n, "kl": kl / n, "loss": (recon + cfg.beta * kl) / n}


def train(cfg: TrainConfig, train_split: Split | None = None, val_split: Split | None = None):
    """Train; return (model on CPU with the best weights, history). Writes into cfg.out."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    dataset = None
    if train_split is None or val_split is None:
        data = cfg.load_data()
        dataset = data.identity()
        val_size = min(cfg.val_size, len(data.train) // 5)
        if val_size < cfg.val_size:  # recorded as used, so the split can be drawn again
            print(f"validation: {val_size} of the {len(data.train):,} training images "
                  f"(--val-size {cfg.val_size} is more than a fifth of them)")  # fmt: skip
            cfg = replace(cfg, val_size=val_size)
        train_split, val_split = validation_split(cfg, data)
    if cfg.limit:
        train_split = train_split.subset(slice(0, cfg.limit))
    x_train, x_val = to_float(train_split.images), to_float(val_split.images)
    if cfg.image_shape is None:  # recorded as trained: config.json, checkpoint, manifest
        cfg = replace(cfg, image_shape=tuple(x_train.shape[1:]))

    model = build_model(cfg.model_config()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    print(
        f"{cfg.kind}/{cfg.body} latent {cfg.latent_dim}: {count_parameters(model):,} parameters, "
        f"{len(x_train):,} train / {len(x_val):,} val images on {device}"
    )
    history: list[dict] = []
    best = math.inf
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = math.ceil(len(x_train) / cfg.batch_size)
    for epoch in range(cfg.epochs):
        model.train()
        start = time.time()
        order = torch.randperm(len(x_train), generator=gen)
        running, seen = 0.0, 0
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=None)
        for step in bar:
            progress = epoch + step / steps
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, progress)
            xb = x_train[order[step * cfg.batch_size : (step + 1) * cfg.batch_size]].to(device)
            if cfg.hflip:
                flip = torch.rand(len(xb), 1, 1, 1, generator=gen) < 0.5
                xb = torch.where(flip.to(device), xb.flip(-1), xb)
            terms = autoencoder_loss(model, xb, cfg.recon, beta_at(cfg, progress))
            opt.zero_grad(set_to_none=True)
            terms.total.backward()
            opt.step()
            running += terms.total.item() * len(xb)
            seen += len(xb)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{running / seen:.2f}")
        val = validate(model, x_val, cfg, device)
        row = {"epoch": epoch + 1, "train_loss": running / seen, "seconds": time.time() - start}
        row.update({f"val_{k}": v for k, v in val.items()})
        history.append(row)
        improved = val["loss"] < best
        if improved:
            best = val["loss"]
            save_checkpoint(out / "checkpoint.pt", model, cfg, epoch + 1, val, dataset)
        print(
            f"epoch {epoch + 1}/{cfg.epochs}  train {row['train_loss']:.3f}  "
            f"val {val['loss']:.3f} (recon {val['recon']:.3f}, kl {val['kl']:.3f})  "
            f"{row['seconds']:.1f}s{'  *best' if improved else ''}",
            flush=True,
        )
        (out / "history.json").write_text(json.dumps(history, indent=2))
    model, _ = load_checkpoint(out / "checkpoint.pt")
    return model, history


def validation_split(cfg: TrainConfig | dict, data: Dataset | None = None) -> tuple[Split, Split]:
    """(train, validation) of a run's training split, as it was drawn: from its TrainConfig
    or a manifest's `train_config` (the data loaded again when not given)."""
    if isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    data = data if data is not None else cfg.load_data()
    return train_val_split(data.train, cfg.val_size, cfg.seed)


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
        from training.data import download

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


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    try:
        train(cfg)
    except DataError as e:  # a bad folder or file: its message, not a traceback
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
