"""AE and VAE models: an encoder and a decoder, each its own nn.Module.

Two bodies share one shape of code: `mlp` (the classic 784-hidden-latent of
pytorch/examples) and `conv` (default). The VAE encoder has two heads and
returns `(z_mean, z_log_var)`; the AE encoder returns `z`. Decoders return
logits; `ImageDecoder` adds the sigmoid for export, so served images are in
[0, 1] like the inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

KINDS = ("ae", "vae")
BODIES = ("mlp", "conv")


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "vae"
    body: str = "conv"
    latent_dim: int = 16
    image_shape: tuple[int, int, int] = (1, 28, 28)
    hidden: int = 256  # dense width (mlp: the single hidden layer)
    channels: tuple[int, ...] = (32, 64, 96)  # conv body only: 28 -> 14 -> 7 -> 4

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.body not in BODIES:
            raise ValueError(f"body must be one of {BODIES}, got {self.body!r}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        _, h, w = self.image_shape
        if self.body == "conv" and (h % 4 or w % 4):
            raise ValueError(f"conv body needs H and W divisible by 4, got {h}x{w}")

    @property
    def conv_grid(self) -> tuple[int, int]:
        """Spatial size after the three stride-2 convs (28 -> 14 -> 7 -> 4)."""
        _, h, w = self.image_shape
        return (h // 4 + 1) // 2, (w // 4 + 1) // 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["image_shape"] = tuple(d["image_shape"])
        d["channels"] = tuple(d["channels"])
        return cls(**d)


def _act() -> nn.Module:
    return nn.SiLU()


def _features(cfg: ModelConfig) -> tuple[nn.Module, int]:
    """Image -> hidden feature vector."""
    c, h, w = cfg.image_shape
    if cfg.body == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, cfg.hidden), nn.ReLU()), cfg.hidden
    c1, c2, c3 = cfg.channels
    gh, gw = cfg.conv_grid
    net = nn.Sequential(
        nn.Conv2d(c, c1, 4, 2, 1), _act(),  # H/2
        nn.Conv2d(c1, c2, 4, 2, 1), _act(),  # H/4
        nn.Conv2d(c2, c3, 3, 2, 1), _act(),  # ceil(H/8)
        nn.Flatten(),
        nn.Linear(c3 * gh * gw, cfg.hidden), _act(),
    )  # fmt: skip
    return net, cfg.hidden


def _generator(cfg: ModelConfig) -> nn.Module:
    """Latent vector -> image logits (the mirror of `_features`)."""
    c, h, w = cfg.image_shape
    if cfg.body == "mlp":
        return nn.Sequential(
            nn.Linear(cfg.latent_dim, cfg.hidden), nn.ReLU(),
            nn.Linear(cfg.hidden, c * h * w), nn.Unflatten(1, (c, h, w)),
        )  # fmt: skip
    c1, c2, c3 = cfg.channels
    gh, gw = cfg.conv_grid
    pad = (1 - (h // 4) % 2, 1 - (w // 4) % 2)  # lands exactly on H/4 x W/4
    return nn.Sequential(
        nn.Linear(cfg.latent_dim, cfg.hidden), _act(),
        nn.Linear(cfg.hidden, c3 * gh * gw), _act(),
        nn.Unflatten(1, (c3, gh, gw)),
        nn.ConvTranspose2d(c3, c2, 3, 2, 1, output_padding=pad), _act(),  # H/4
        nn.ConvTranspose2d(c2, c1, 4, 2, 1), _act(),  # H/2
        nn.ConvTranspose2d(c1, c, 4, 2, 1),  # H
    )  # fmt: skip


class VAEEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.features, width = _features(cfg)
        self.mean = nn.Linear(width, cfg.latent_dim)
        self.log_var = nn.Linear(width, cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.mean(h), self.log_var(h)


class AEEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.features, width = _features(cfg)
        self.code = nn.Linear(width, cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.code(self.features(x))


class Decoder(nn.Module):
    """z (B, latent) -> logits (B, C, H, W)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.net = _generator(cfg)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ImageDecoder(nn.Module):
    """The exported decoder: z -> pixels in [0, 1]."""

    def __init__(self, decoder: Decoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))


class Autoencoder(nn.Module):
    """Holds the pair for training; `encoder` and `decoder` export on their own."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = VAEEncoder(cfg) if cfg.kind == "vae" else AEEncoder(cfg)
        self.decoder = Decoder(cfg)

    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic code: z_mean for a VAE, z for an AE."""
        out = self.encoder(x)
        return out[0] if isinstance(out, tuple) else out


@torch.inference_mode()
def encode_all(model: Autoencoder, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """`encode_mean` over a whole split, in chunks of `batch` images to bound memory."""
    return torch.cat([model.encode_mean(x[i : i + batch]) for i in range(0, len(x), batch)])


def build_model(cfg: ModelConfig) -> Autoencoder:
    return Autoencoder(cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
