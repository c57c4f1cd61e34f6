"""The shipped models and the baselines of the README's results table, as recipes.

`python -m training.recipes build NAME` trains, evaluates, plots and exports one
shipped model into model_store/NAME (what `make models` runs for each);
`python -m training.recipes baselines` runs the reference rows of the table.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from training.train import TrainConfig, train

RUNS = Path("runs")
STORE = Path("model_store")
FIGURES = Path("docs/figures")

# Selected on the validation split only (val_size 5000, seed 0), never on test.
SHIPPED: dict[str, TrainConfig] = {
    "fashion-vae": TrainConfig(dataset="fashion-mnist", kind="vae", latent_dim=32, epochs=30),
    "fashion-vae-2d": TrainConfig(dataset="fashion-mnist", kind="vae", latent_dim=2, epochs=20),
    "fashion-ae": TrainConfig(
        dataset="fashion-mnist", kind="ae", latent_dim=32, epochs=20, recon="mse"
    ),
    "mnist-vae-2d": TrainConfig(dataset="mnist", kind="vae", latent_dim=2, epochs=15),
}
_MLP = dict(body="mlp", hidden=400, epochs=10, lr_schedule="constant")
BASELINES: dict[str, TrainConfig] = {
    "fashion-mlp-vae-20": TrainConfig(dataset="fashion-mnist", kind="vae", latent_dim=20, **_MLP),
    "fashion-mlp-vae-2": TrainConfig(dataset="fashion-mnist", kind="vae", latent_dim=2, **_MLP),
    # cross-check against pytorch/examples' vae/main.py (test loss 105.6 nats on MNIST)
    "mnist-mlp-vae-20": TrainConfig(dataset="mnist", kind="vae", latent_dim=20, **_MLP),
}


def recipe(name: str) -> TrainConfig:
    table = SHIPPED | BASELINES
    if name not in table:
        raise SystemExit(f"unknown model {name!r}; known: {', '.join(table)}")
    return replace(table[name], out=str(RUNS / name))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("train").add_argument("name")
    args = p.parse_args(argv)
    if args.cmd == "train":
        train(recipe(args.name))


if __name__ == "__main__":
    main()
