"""AE and VAE models: an encoder and a decoder, each its own nn.Module.

Two bodies share one shape of code: `mlp` (the classic 784-hidden-latent of
pytorch/examples) and `conv` (default). Both take any image shape (C, H, W) with C
1 or 3: the conv body halves H and W in stride-2 stages until both are at most
GRID_MAX (`conv_stages`; 1x28x28 gets exactly the three stages it always had, so
the shipped exports rebuild unchanged), and its decoder maps back to exactly H x W.
The VAE encoder has two heads and returns `(z_mean, z_log_var)`; the AE encoder
returns `z`. Decoders return logits; `ImageDecoder` adds the sigmoid for export,
so served images are in [0, 1] like the inputs.

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
GRID_MAX = 4  # the conv body halves H and W until both are at most this


@dataclass(frozen=True)
class ConvStage:
    """One stride-2, padding-1 convolution of the conv body, and its mirror in the decoder.

    The kernel is 4 when the stage's input H and W are both even (each halves exactly),
    else 3 (each becomes ceil(n / 2)); the decoder's transposed convolution with the same
    kernel maps back to exactly (H, W), with `output_padding` making up an odd size."""

    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    kernel: int

    @property
    def output_padding(self) -> tuple[int, int]:
        # a transposed conv (stride 2, padding 1) gives 2 * (m - 1) - 2 + k rows from m
        (h, w), (mh, mw) = self.in_hw, self.out_hw
        return h - (2 * mh - 4 + self.kernel), w - (2 * mw - 4 + self.kernel)  # 0 or 1


def conv_stages(h: int, w: int, grid_max: int = GRID_MAX) -> tuple[ConvStage, ...]:
    """The conv body's stages for an H x W image: halve until both sides are <= grid_max
    (at least one stage). 28 x 28: 28 -> 14 -> 7 -> 4 with kernels 4, 4, 3."""
    stages: list[ConvStage] = []
    while not stages or max(h, w) > grid_max:
        kernel = 4 if h % 2 == 0 and w % 2 == 0 else 3
        out = ((h + 2 - kernel) // 2 + 1, (w + 2 - kernel) // 2 + 1)
        stages.append(ConvStage((h, w), out, kernel))
        h, w = out
    return tuple(stages)


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "vae"
    body: str = "conv"
    latent_dim: int = 16
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W), C in {1, 3}
    hidden: int = 256  # dense width (mlp: the single hidden layer)
    # conv body only: one entry per stage (`conv_stages`); the last is repeated when the
    # image has more stages than entries, extra entries are unused when it has fewer.
    # 28 x 28 has three: 28 -> 14 -> 7 -> 4.
    channels: tuple[int, ...] = (32, 64, 96)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.body not in BODIES:
            raise ValueError(f"body must be one of {BODIES}, got {self.body!r}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if len(self.image_shape) != 3 or self.image_shape[0] not in (1, 3):
            raise ValueError(f"image_shape must be (C, H, W) with C 1 or 3, got {self.image_shape}")
        _, h, w = self.image_shape
        if min(h, w) < 1:
            raise ValueError(f"image H and W must be >= 1, got {h}x{w}")
        if self.body == "conv" and (not self.channels or min(self.channels) < 1):
            raise ValueError(f"channels must be positive, got {self.channels}")

    @property
    def stages(self) -> tuple[ConvStage, ...]:
        """The conv body's downsampling stages (`conv_stages`)."""
        return conv_stages(*self.image_shape[1:])

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Output channels of each conv stage: `channels`, cut to the number of stages
        or with its last entry repeated up to it."""
        n = len(self.stages)
        return tuple(self.channels[:n]) + (self.channels[-1],) * (n - len(self.channels))

    @property
    def conv_grid(self) -> tuple[int, int]:
        """Spatial size after the last stride-2 conv (28 -> 14 -> 7 -> 4)."""
        return self.stages[-1].out_hw

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
    layers: list[nn.Module] = []
    widths = (c, *cfg.stage_channels)
    for stage, cin, cout in zip(cfg.stages, widths[:-1], widths[1:], strict=True):
        layers += [nn.Conv2d(cin, cout, stage.kernel, 2, 1), _act()]
    gh, gw = cfg.conv_grid
    layers += [nn.Flatten(), nn.Linear(widths[-1] * gh * gw, cfg.hidden), _act()]
    return nn.Sequential(*layers), cfg.hidden


def _generator(cfg: ModelConfig) -> nn.Module:
    """Latent vector -> image logits (the mirror of `_features`)."""
    c, h, w = cfg.image_shape
    if cfg.body == "mlp":
        return nn.Sequential(
            nn.Linear(cfg.latent_dim, cfg.hidden), nn.ReLU(),
            nn.Linear(cfg.hidden, c * h * w), nn.Unflatten(1, (c, h, w)),
        )  # fmt: skip
    widths = (c, *cfg.stage_channels)
    gh, gw = cfg.conv_grid
    layers: list[nn.Module] = [
        nn.Linear(cfg.latent_dim, cfg.hidden), _act(),
        nn.Linear(cfg.hidden, widths[-1] * gh * gw), _act(),
        ToImage((widths[-1], gh, gw)),
    ]  # fmt: skip
    # the stages in reverse, each back to its input size; the last one to C channels
    for i in range(len(cfg.stages) - 1, -1, -1):
        stage, cin, cout = cfg.stages[i], widths[i + 1], widths[i]
        if i:
            layers += [nn.ConvTranspose2d(cin, cout, stage.kernel, 2, 1, stage.output_padding)]
            layers += [_act()]
        else:
            layers += [
                SubPixelConvTranspose2d(
                    cin, cout, stage.kernel, output_padding=stage.output_padding
                )
            ]
    return nn.Sequential(*layers)


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
