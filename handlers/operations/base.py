"""What every operation is: parse -> run -> respond, in the model's words.

An operation reads one request into a tensor of items (`parse`), runs the model
on a chunk of items that may come from many requests (`forward`), and writes
its request's answer from that request's slice of each model output (`respond`).
The batching around them lives in `handlers.engine`; the wire formats in
`handlers.wire`. This module holds the base class, the parsed request and the
helpers the operations share; each operation has a module of its own.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from handlers.limits import Limits
from handlers.manifest import ModelInfo
from handlers.metrics import Recorder
from handlers.wire import images, json_write
from handlers.wire.request import RawRequest
from handlers.wire.v2_read import Tensor


@dataclass
class Parsed:
    """One valid request: its items as a float32 CPU tensor, plus what respond needs."""

    x: torch.Tensor
    body: BaseModel | None = None  # the JSON body or the v2 parameters; None for a raw image
    seed: int | None = None  # sample seeds (encode with sample: true, and sample)
    converted_from: list[dict | None] = field(default_factory=list)  # encode, per item
    # how the model runs for this request (`Operation.forward`'s `variant`): requests of
    # one batch run together per variant; None for every operation but score's modes
    variant: str | None = None

    @property
    def items(self) -> int:
        return len(self.x)


Outputs = tuple[torch.Tensor, ...]  # the model's outputs, one tensor each (first dim: items)


def pick_seed(requested: int | None) -> int:
    return requested if requested is not None else secrets.randbelow(2**63)


def standard_normal(seed: int, n: int, dim: int) -> torch.Tensor:
    """eps ~ N(0, I), (n, dim), a function of the seed only (CPU generator)."""
    return torch.randn((n, dim), generator=torch.Generator().manual_seed(seed))


def channels_last(pixels: torch.Tensor) -> np.ndarray:
    """(n, C, H, W) -> (n, H, W) for one channel, (n, H, W, C) for colour (as images are held)."""
    if pixels.shape[1] == 1:
        return pixels[:, 0].numpy()
    return np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy())


def image_predictions(outputs: Outputs, fmt: str, scale: float) -> list[dict]:
    """A decoder's one output, (n, C, H, W) in [0, 1] -> n image predictions."""
    (pixels,) = outputs
    return json_write.write_images(channels_last(pixels), fmt, scale)


def image_tensor(outputs: Outputs, datatype: str, scale: float) -> np.ndarray:
    """A decoder's one output -> the v2 "image" (n, H, W) or (n, H, W, C): UINT8 as the
    PNG's pixels, or FP32."""
    pixels = channels_last(outputs[0])
    if datatype == "UINT8":
        return images.to_uint8(pixels, scale)
    return np.clip(pixels, 0.0, 1.0)


class Operation:
    name = ""

    def __init__(self, info: ModelInfo, module, limits: Limits) -> None:
        self.info, self.module, self.limits = info, module, limits

    def parse(self, raw: RawRequest) -> Parsed:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, variant: str | None = None) -> Any:
        """The model on a chunk of items (all of one `Parsed.variant`): a tensor, or a tuple."""
        return self.module(x)

    def example(self, n: int) -> torch.Tensor:
        """A valid model input of n items (for warm-up): latents; Encode overrides."""
        return torch.zeros(n, self.info.latent_dim)

    def respond(self, parsed: Parsed, outputs: Outputs) -> str:
        """This request's slice of each model output -> its JSON answer (text)."""
        raise NotImplementedError

    # The Open Inference Protocol (handlers.wire.v2_read / v2_write do the wire).
    def parse_tensors(self, inputs: dict[str, Tensor], params: dict) -> Parsed:
        """A v2 request's named input tensors and parameters -> the same `Parsed` as `parse`."""
        raise NotImplementedError

    def output_names(self, parsed: Parsed) -> tuple[str, ...]:
        """The v2 outputs this request gets, in order."""
        return ("image",)

    def outputs(self, parsed: Parsed, outputs: Outputs) -> tuple[dict[str, np.ndarray], dict]:
        """This request's slice of each model output -> its named v2 outputs, parameters."""
        raise NotImplementedError

    def observe(self, outputs: Outputs, rec: Recorder) -> None:
        """Record operation-specific metrics over the answered items."""
