"""The training loop, and only that: `python -m training.train --help`.

Writes into --out: `checkpoint.pt` (the best epoch on validation), `config.json`
and `history.json`. Evaluation and export are separate steps
(`training.evaluate`, `training.export`); `training.recipes` chains them.
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

from training.data import DATASETS, Split, load_dataset, to_float, train_val_split
from training.losses import RECONSTRUCTIONS, autoencoder_loss
from training.models import BODIES, KINDS, ModelConfig, build_model, count_parameters


@dataclass
class TrainConfig:
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
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
        return replace(cfg, channels=tuple(cfg.channels))

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            self.kind, self.body, self.latent_dim, (1, 28, 28), self.hidden, tuple(self.channels)
        )


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
    if train_split is None or val_split is None:
        data = load_dataset(cfg.dataset, cfg.data_dir)
        train_split, val_split = train_val_split(data.train, cfg.val_size, cfg.seed)
    if cfg.limit:
        train_split = train_split.subset(slice(0, cfg.limit))
    x_train, x_val = to_float(train_split.images), to_float(val_split.images)

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
            save_checkpoint(out / "checkpoint.pt", model, cfg, epoch + 1, val)
        print(
            f"epoch {epoch + 1}/{cfg.epochs}  train {row['train_loss']:.3f}  "
            f"val {val['loss']:.3f} (recon {val['recon']:.3f}, kl {val['kl']:.3f})  "
            f"{row['seconds']:.1f}s{'  *best' if improved else ''}",
            flush=True,
        )
        (out / "history.json").write_text(json.dumps(history, indent=2))
    model, _ = load_checkpoint(out / "checkpoint.pt")
    return model, history


def save_checkpoint(path: Path, model, cfg: TrainConfig, epoch: int, val: dict) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(
        {
            "model_config": model.cfg.to_dict(),
            "train_config": asdict(cfg),
            "epoch": epoch,
            "val": val,
            "state_dict": state,
        },
        path,
    )


def load_checkpoint(path: Path):
    """-> (model in eval mode on CPU, the checkpoint dict)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(description="Train an AE or VAE on MNIST-style images.")
    d = TrainConfig()
    p.add_argument("--dataset", choices=DATASETS, default=d.dataset)
    p.add_argument("--data-dir", help="a directory with the four IDX files (overrides --dataset's)")
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
    if a.pop("download"):
        if not a["data_dir"]:
            p.error("--download needs --data-dir")
        from training.data import download

        download(a["dataset"], Path(a["data_dir"]))
    hidden = a.pop("hidden")
    cfg = TrainConfig.from_dict(a)
    cfg.hidden = hidden if hidden is not None else (400 if cfg.body == "mlp" else d.hidden)
    return cfg


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
