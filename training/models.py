"""AE and VAE models: an encoder and a decoder, each its own nn.Module.

Two bodies share one shape of code: `mlp` (the classic 784-hidden-latent of
pytorch/examples) and `conv` (default). The VAE encoder has two heads and
returns `(z_mean, z_log_var)`; the AE encoder returns `z`. Decoders return
logits; `ImageDecoder` adds the sigmoid for export, so served images are in
[0, 1] like the inputs.

Two choices in the conv decoder are for CPU speed only and change no parameter
or output: its feature maps are channels-last (`ToImage`), and its output layer
runs as a convolution and a pixel shuffle (`SubPixelConvTranspose2d`). At batch
64 on one thread they take the exported decoder from 15.9 to 11.6 ms.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
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


class ToImage(nn.Module):
    """(B, C*H*W) -> (B, C, H, W) in channels-last memory, in which oneDNN runs the
    transposed convolutions that follow 5-15 % faster on a CPU. No parameters, so
    it stands where `nn.Unflatten` stood without changing a state_dict key."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w = self.shape
        return x.reshape(x.shape[0], c, h, w).contiguous(memory_format=torch.channels_last)


class SubPixelConvTranspose2d(nn.ConvTranspose2d):
    """A stride-2, padding-1 transposed convolution (kernel 3 or 4) computed as one 3x3
    convolution into 4x the channels and a pixel shuffle: each output phase is a
    convolution of the input with a subset of the kernel's taps.

    Same parameters (loads ConvTranspose2d's state_dict) and the same outputs up to
    float rounding. Why: oneDNN's CPU transposed convolution with one output channel
    (the decoder's last layer) ran 3.7 ms for 64 images, this 1.2 ms. With more
    output channels the 3x3 form does 2.25x the multiplications and is slower, so
    only the output layer uses it.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, **kw) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=2, padding=1, **kw)
        if kernel_size not in (3, 4) or self.groups != 1 or self.dilation != (1, 1):
            raise ValueError("SubPixelConvTranspose2d: kernel 3 or 4, groups 1, dilation 1")

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        k = self.kernel_size[0]
        # row r of the 3x3 kernel for output phase a: taps (a, r) of the transposed
        # kernel, input offsets -1, 0, +1; index k is the zero row padded on below
        rows = [3, 1, k, k, 2, 0] if k == 4 else [k, 1, k, k, 2, 0]
        taps = torch.tensor(rows, device=self.weight.device)
        w = F.pad(self.weight, (0, 1, 0, 1)).index_select(2, taps).index_select(3, taps)
        cin, cout = w.shape[0], w.shape[1]
        w = w.reshape(cin, cout, 2, 3, 2, 3).permute(1, 2, 4, 0, 3, 5).reshape(cout * 4, cin, 3, 3)
        bias = self.bias
        if bias is not None:
            bias = bias.repeat_interleave(4)
        y = F.pixel_shuffle(F.conv2d(x, w, bias, 1, 1), 2)
        h = 2 * x.shape[-2] - 4 + k + self.output_padding[0]
        return y[..., :h, : 2 * x.shape[-1] - 4 + k + self.output_padding[1]]


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
        ToImage((c3, gh, gw)),
        nn.ConvTranspose2d(c3, c2, 3, 2, 1, output_padding=pad), _act(),  # H/4
        nn.ConvTranspose2d(c2, c1, 4, 2, 1), _act(),  # H/2
        SubPixelConvTranspose2d(c1, c, 4),  # H
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
