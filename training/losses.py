"""Losses, per image, in nats: reconstruction (BCE summed over pixels, or MSE) + beta * KL."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

RECONSTRUCTIONS = ("bce", "mse")
LOG_2PI = math.log(2 * math.pi)


def reparameterize(
    z_mean: torch.Tensor, z_log_var: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """z = z_mean + exp(0.5 * z_log_var) * eps, eps ~ N(0, I): differentiable in both inputs."""
    eps = torch.randn(z_mean.shape, generator=generator, device=z_mean.device, dtype=z_mean.dtype)
    return z_mean + torch.exp(0.5 * z_log_var) * eps


def kl_to_standard_normal(z_mean: torch.Tensor, z_log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)) per row, summed over latent dims."""
    return -0.5 * torch.sum(1 + z_log_var - z_mean.pow(2) - z_log_var.exp(), dim=1)


def reconstruction(logits: torch.Tensor, x: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """Per-image reconstruction loss summed over pixels (BCE on logits, or squared error)."""
    if kind == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    elif kind == "mse":
        per_pixel = (torch.sigmoid(logits) - x).pow(2)
    else:
        raise ValueError(f"reconstruction must be one of {RECONSTRUCTIONS}, got {kind!r}")
    return per_pixel.flatten(1).sum(dim=1)


def gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag(exp(log_var))) summed over the last dim."""
    return -0.5 * (LOG_2PI + log_var + (z - mean).pow(2) / log_var.exp()).sum(dim=-1)


@dataclass
class LossTerms:
    total: torch.Tensor  # mean over the batch of recon + beta * kl (what is optimised)
    recon: torch.Tensor  # per image
    kl: torch.Tensor  # per image (zeros for an AE)

    @property
    def neg_elbo(self) -> torch.Tensor:
        """Per image, beta = 1: the negative ELBO in nats (BCE reconstruction)."""
        return self.recon + self.kl


def autoencoder_loss(model, x: torch.Tensor, recon: str = "bce", beta: float = 1.0) -> LossTerms:
    """One forward pass of an `Autoencoder` with its loss terms (single z sample for a VAE)."""
    if model.cfg.kind == "vae":
        z_mean, z_log_var = model.encoder(x)
        z = reparameterize(z_mean, z_log_var)
        kl = kl_to_standard_normal(z_mean, z_log_var)
    else:
        z = model.encoder(x)
        kl = torch.zeros(x.shape[0], device=x.device)
    rec = reconstruction(model.decoder(z), x, recon)
    return LossTerms(total=(rec + beta * kl).mean(), recon=rec, kl=kl)
