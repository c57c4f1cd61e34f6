"""The training loop, and only that: `python -m training.train --help`.

Writes into --out: `checkpoint.pt` (the best epoch on validation, training/checkpoint.py),
`config.json` and `history.json`. The settings and the command line are
training/config.py's; evaluation and export are separate steps (`training.evaluate`,
`training.export`); `training.recipes` chains them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import TrainConfig, parse_args, validation_split
from training.data import to_float
from training.dataset import Split
from training.losses import autoencoder_loss
from training.models import build_model, count_parameters
from training.sources import DataError


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


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    try:
        train(cfg)
    except DataError as e:  # a bad folder or file: its message, not a traceback
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
