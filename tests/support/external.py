"""An autoencoder "trained elsewhere": a small colour VAE written here with plain torch
(nothing of training/), saved as a TorchScript pair the way a team would export its own,
then registered through the real `python -m serving.register` CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from paths import ROOT

SHAPE = (3, 40, 40)  # an unusual size on purpose: not 28, not a power of two
LATENT = 12


class Encoder(nn.Module):
    """(B, 3, 40, 40) in [0, 1] -> (z_mean, z_log_var), (B, LATENT) each."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 4, 2, 1), nn.ReLU(),  # 20 x 20
            nn.Conv2d(8, 16, 4, 2, 1), nn.ReLU(),  # 10 x 10
            nn.Flatten(),
        )  # fmt: skip
        self.mean = nn.Linear(16 * 10 * 10, LATENT)
        self.log_var = nn.Linear(16 * 10 * 10, LATENT)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mean(h), self.log_var(h)


class Decoder(nn.Module):
    """(B, LATENT) -> (B, 3, 40, 40) in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(LATENT, 16 * 10 * 10)
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Unflatten(1, (16, 10, 10)),
            nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.ReLU(),  # 20 x 20
            nn.ConvTranspose2d(8, 3, 4, 2, 1), nn.Sigmoid(),  # 40 x 40
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.fc(z))


def write_pair(out: Path, seed: int = 0) -> tuple[Path, Path]:
    """encoder.pt and decoder.pt (TorchScript) of a randomly initialised colour VAE."""
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "my_encoder.pt", out / "my_decoder.pt"
    for module, path in zip((Encoder(), Decoder()), paths, strict=True):
        torch.jit.script(module.eval()).save(str(path))
    return paths


def colour_images(n: int, seed: int = 0) -> np.ndarray:
    """(n, 40, 40, 3) uint8 smooth colour blobs: the registration's --data."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, 10, 10, 3)) * rng.random((n, 1, 1, 3))
    return np.rint(np.kron(coarse, np.ones((4, 4, 1))) * 255).astype(np.uint8)


def register(store: Path, name: str, workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    """`python -m serving.register NAME ...` for the pair of `write_pair` into `store`."""
    encoder, decoder = write_pair(workdir)
    cmd = [
        sys.executable, "-m", "serving.register", name,
        "--encoder", str(encoder), "--decoder", str(decoder),
        "--kind", "vae", "--image-shape", ",".join(map(str, SHAPE)),
        "--latent-dim", str(LATENT), "--store", str(store), *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
