"""The prior that `sample` draws from, as the export writes it into the manifest.

A VAE samples N(0, I). An AE samples the Gaussian fitted to its training codes:
the manifest stores its mean, its covariance and a sampling factor F with
F @ F.T == cov, computed here once. Whoever draws (the serving handlers from the
manifest, the README's figures through `draw`) takes z = mean + eps @ F.T with
that F, so no consumer factorises the covariance again in its own way.
"""

from __future__ import annotations

import numpy as np
import torch

from training.models import Autoencoder, encode_all

STANDARD_NORMAL = {"type": "standard_normal"}


def sampling_factor(cov: np.ndarray) -> np.ndarray:
    """F with F @ F.T == cov. The eigendecomposition is exact for a singular
    (positive semi-definite) covariance, where a Cholesky would need jitter."""
    vals, vecs = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    return vecs * np.sqrt(np.clip(vals, 0.0, None))


def gaussian_prior(mean, cov) -> dict:
    """The manifest's prior for N(mean, cov), with its sampling factor."""
    cov = np.atleast_2d(np.asarray(cov, dtype=np.float64))
    return {
        "type": "gaussian",
        "mean": np.asarray(mean, dtype=np.float64).tolist(),
        "cov": cov.tolist(),
        "factor": sampling_factor(cov).tolist(),
    }


def fit_code_prior(model: Autoencoder, x_train: torch.Tensor) -> dict:
    """The Gaussian of the training codes: the AE's prior for `sample`."""
    codes = encode_all(model, x_train).double().numpy()
    return gaussian_prior(codes.mean(axis=0), np.cov(codes, rowvar=False))


def model_prior(model: Autoencoder, x_train: torch.Tensor) -> dict:
    """What the export records: N(0, I) for a VAE, the fitted code Gaussian for an AE."""
    return dict(STANDARD_NORMAL) if model.cfg.kind == "vae" else fit_code_prior(model, x_train)


def draw(prior: dict, latent_dim: int, n: int, seed: int = 0) -> torch.Tensor:
    """n codes (float64) from a manifest prior: z = mean + eps @ factor.T."""
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(n, latent_dim, generator=gen, dtype=torch.double)
    if prior["type"] == "standard_normal":
        return eps
    if prior["type"] != "gaussian":
        raise ValueError(f"unknown prior type {prior['type']!r}")
    mean = torch.tensor(prior["mean"], dtype=torch.double)
    factor = torch.tensor(prior["factor"], dtype=torch.double)
    return mean + eps @ factor.T
