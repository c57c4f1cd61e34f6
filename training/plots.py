"""Figures of a trained model (PNG): `python -m training.plots --run runs/<name>`.

latent.png          test set codes coloured by label (2-D directly, else a PCA projection)
manifold.png        decoded grid over the 2-D latent plane (2-D models only)
reconstructions.png originals (top row) above their reconstructions
samples.png         decoded draws from the prior
interpolation.png   decodes along the straight line between two test codes
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from training.data import Dataset, load_dataset, to_float  # noqa: E402
from training.models import Autoencoder  # noqa: E402

FIGURES = ("latent", "manifold", "reconstructions", "samples", "interpolation")


def _decode(model: Autoencoder, z: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return torch.sigmoid(model.decoder(z.float())).squeeze(1).numpy()


def _tile(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    n, h, w = images.shape
    grid = np.ones((rows * h, cols * w), dtype=np.float32)
    for i in range(min(n, rows * cols)):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = images[i]
    return grid


def _save_grid(grid: np.ndarray, path: Path, title: str, extent=None) -> None:
    fig, ax = plt.subplots(figsize=(6, 6 * grid.shape[0] / grid.shape[1] + 0.4))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, extent=extent)
    ax.set_title(title)
    if extent is None:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def pca_2d(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project onto the two leading principal components; -> (points, explained ratio)."""
    centred = z - z.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    ratio = s**2 / np.sum(s**2)
    return centred @ vt[:2].T, ratio[:2]


def latent_scatter(z: np.ndarray, labels: np.ndarray, names: list[str], path: Path, title: str):
    if z.shape[1] == 2:
        pts, axes = z, ("z[0]", "z[1]")
    else:
        pts, ratio = pca_2d(z)
        axes = (f"PC1 ({ratio[0]:.0%})", f"PC2 ({ratio[1]:.0%})")
    fig, ax = plt.subplots(figsize=(7, 6))
    sc = ax.scatter(
        pts[:, 0], pts[:, 1], c=labels, cmap="tab10", vmin=-0.5, vmax=9.5, s=2, alpha=0.7
    )
    cbar = fig.colorbar(sc, ticks=range(10))
    cbar.ax.set_yticklabels(names)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def make_figures(model: Autoencoder, data: Dataset, out: Path, name: str, seed: int = 0) -> list:
    """Write every figure that applies to this model; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    x = to_float(data.test.images)
    with torch.inference_mode():
        z = torch.cat([model.encode_mean(x[i : i + 1000]) for i in range(0, len(x), 1000)])
    written = []

    path = out / "latent.png"
    latent_scatter(z.numpy(), data.test.labels, data.class_names, path, f"{name}: test codes")
    written.append(path)

    if model.cfg.latent_dim == 2:
        n, lim = 20, 3.0  # +-3 standard deviations of the prior
        ticks = np.linspace(-lim, lim, n)
        grid_z = torch.tensor([[a, b] for b in ticks[::-1] for a in ticks])
        path = out / "manifold.png"
        _save_grid(
            _tile(_decode(model, grid_z), n, n),
            path,
            f"{name}: decoded latent plane",
            extent=(-lim, lim, -lim, lim),
        )
        written.append(path)

    idx = torch.randperm(len(x), generator=gen)[:12]
    originals = x[idx].squeeze(1).numpy()
    path = out / "reconstructions.png"
    _save_grid(
        _tile(np.concatenate([originals, _decode(model, z[idx])]), 2, 12),
        path,
        f"{name}: test images (top) and reconstructions",
    )
    written.append(path)

    if model.cfg.kind == "vae":
        prior = torch.randn(64, model.cfg.latent_dim, generator=gen)
    else:  # the Gaussian fitted to the codes, as the `sample` endpoint does
        mean, cov = z.double().mean(0), torch.cov(z.double().T).reshape(z.shape[1], z.shape[1])
        chol = torch.linalg.cholesky(cov + 1e-6 * torch.eye(len(mean), dtype=torch.double))
        prior = mean + torch.randn(64, len(mean), generator=gen, dtype=torch.double) @ chol.T
    path = out / "samples.png"
    _save_grid(_tile(_decode(model, prior), 8, 8), path, f"{name}: samples")
    written.append(path)

    a, b = z[idx[0]], z[idx[1]]
    steps = torch.linspace(0, 1, 12).unsqueeze(1)
    path = out / "interpolation.png"
    _save_grid(
        _tile(_decode(model, a + steps * (b - a)), 1, 12),
        path,
        f"{name}: interpolation between two test images",
    )
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    from training.train import load_checkpoint

    p = argparse.ArgumentParser(description="Figures of runs/<name> into runs/<name>/figures.")
    p.add_argument("--run", required=True, type=Path)
    a = p.parse_args(argv)
    model, ckpt = load_checkpoint(a.run / "checkpoint.pt")
    tc = ckpt["train_config"]
    for path in make_figures(
        model, load_dataset(tc["dataset"], tc.get("data_dir")), a.run / "figures", a.run.name
    ):
        print(path)


if __name__ == "__main__":
    main()
