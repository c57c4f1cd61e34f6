"""Figures of a trained model (PNG): `python -m training.plots --run runs/<name>`.

latent.png          test set codes coloured by label, when there are labels (2-D directly,
                    else a PCA projection)
manifold.png        decoded grid over the 2-D latent plane (2-D models only)
reconstructions.png originals (top row) above their reconstructions
samples.png         decoded draws from the manifest's prior (the `sample` endpoint's maths)
interpolation.png   decodes along the straight line between two test codes

`python -m training.plots --export model_store/<name> --out DIR` redraws samples.png
from an export alone (decoder.pt and the manifest's prior), without the checkpoint.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from training.data import to_float  # noqa: E402
from training.dataset import Dataset  # noqa: E402
from training.models import Autoencoder, ImageDecoder, encode_all  # noqa: E402
from training.prior import draw, model_prior  # noqa: E402
from training.runs import load_run  # noqa: E402

FIGURES = ("latent", "manifold", "reconstructions", "samples", "interpolation")
SAMPLES = 64  # an 8 x 8 grid

Pixels = Callable[[torch.Tensor], torch.Tensor]  # z -> images in [0, 1], like decoder.pt


def _pictures(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) -> what imshow takes: (N, H, W) for one channel, (N, H, W, 3) for RGB."""
    x = x.detach().cpu().numpy()
    return x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)


def _decode(decode: Pixels, z: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return _pictures(decode(z.float()))


def _tile(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    n, h, w = images.shape[:3]
    grid = np.ones((rows * h, cols * w, *images.shape[3:]), dtype=np.float32)
    for i in range(min(n, rows * cols)):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = images[i]
    return grid


def _save_grid(grid: np.ndarray, path: Path, title: str, extent=None) -> None:
    fig, ax = plt.subplots(figsize=(6, 6 * grid.shape[0] / grid.shape[1] + 0.4))
    ax.imshow(np.clip(grid, 0, 1), cmap="gray", vmin=0, vmax=1, extent=extent)
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
    k = len(names)
    cmap = "tab10" if k <= 10 else "tab20" if k <= 20 else "viridis"
    sc = ax.scatter(
        pts[:, 0], pts[:, 1], c=labels, cmap=cmap, vmin=-0.5, vmax=k - 0.5, s=2, alpha=0.7
    )
    if k <= 20:
        cbar = fig.colorbar(sc, ticks=range(k))
        cbar.ax.set_yticklabels(names)
    else:
        fig.colorbar(sc)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_samples(
    decode: Pixels, prior: dict, latent_dim: int, path: Path, name: str, seed: int = 0
) -> Path:
    """samples.png: decoded draws from a manifest prior, z = mean + eps @ factor.T."""
    z = draw(prior, latent_dim, SAMPLES, seed)
    _save_grid(_tile(_decode(decode, z), 8, 8), path, f"{name}: samples")
    return path


def export_samples(model_dir: Path, out: Path, seed: int = 0) -> Path:
    """samples.png of an export (decoder.pt + manifest.json); the same picture
    `make_figures` draws from the checkpoint, up to the export's parity tolerance."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    decoder = torch.jit.load(str(model_dir / "decoder.pt")).eval()
    out.mkdir(parents=True, exist_ok=True)
    prior, dim = manifest["prior"], manifest["latent_dim"]
    return draw_samples(decoder, prior, dim, out / "samples.png", manifest["name"], seed)


def make_figures(
    model: Autoencoder,
    data: Dataset,
    out: Path,
    name: str,
    seed: int = 0,
    prior: dict | None = None,
) -> list:
    """Write every figure that applies to this model; return their paths.

    `prior` is the one the export records (training.prior.model_prior); fitted on
    `data`'s training split when not given."""
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    decode = ImageDecoder(model.decoder).eval()
    if prior is None:
        prior = model_prior(model, to_float(data.train.images))
    gen = torch.Generator().manual_seed(seed)
    x = to_float(data.test.images)
    z = encode_all(model, x)
    written = []

    if data.labelled:
        path = out / "latent.png"
        latent_scatter(z.numpy(), data.test.labels, data.class_names, path, f"{name}: test codes")
        written.append(path)

    if model.cfg.latent_dim == 2:
        n, lim = 20, 3.0  # +-3 standard deviations of the prior
        ticks = np.linspace(-lim, lim, n)
        grid_z = torch.tensor([[a, b] for b in ticks[::-1] for a in ticks])
        path = out / "manifold.png"
        _save_grid(
            _tile(_decode(decode, grid_z), n, n),
            path,
            f"{name}: decoded latent plane",
            extent=(-lim, lim, -lim, lim),
        )
        written.append(path)

    idx = torch.randperm(len(x), generator=gen)[:12]
    originals = _pictures(x[idx])
    path = out / "reconstructions.png"
    _save_grid(
        _tile(np.concatenate([originals, _decode(decode, z[idx])]), 2, 12),
        path,
        f"{name}: test images (top) and reconstructions",
    )
    written.append(path)

    written.append(
        draw_samples(decode, prior, model.cfg.latent_dim, out / "samples.png", name, seed)
    )

    a, b = z[idx[0]], z[idx[1 % len(idx)]]
    steps = torch.linspace(0, 1, 12).unsqueeze(1)
    path = out / "interpolation.png"
    _save_grid(
        _tile(_decode(decode, a + steps * (b - a)), 1, 12),
        path,
        f"{name}: interpolation between two test images",
    )
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Figures of runs/<name> into runs/<name>/figures.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path)
    src.add_argument("--export", type=Path, help="model_store/<name>: samples.png only")
    p.add_argument("--out", type=Path, help="with --export: the folder for samples.png")
    a = p.parse_args(argv)
    if a.export:
        if a.out is None:
            p.error("--export needs --out")
        print(export_samples(a.export, a.out))
        return
    run = load_run(a.run)
    for path in make_figures(run.model, run.data, a.run / "figures", run.name, prior=run.prior):
        print(path)


if __name__ == "__main__":
    main()
