"""manifest.json as the handlers read it (`ModelInfo`): no torch, so a host-side
reader (`batch/`'s driver, `serving/`) checks a model without importing it.

The file names come from the export contract (`training/export.py`): encode
needs `encoder.pt`, decode and sample need `decoder.pt`, score needs both (or
their AOTInductor packages, `.pt2`). Loading the modules: `handlers.model`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
# the TorchScript files each operation loads, in the order its module tuple takes them
FILES = {
    "encode": ("encoder.pt",),
    "decode": ("decoder.pt",),
    "sample": ("decoder.pt",),
    "score": ("encoder.pt", "decoder.pt"),
}
SUFFIXES = {"torchscript": ".pt", "aoti": ".pt2"}  # handlers.options.MODEL_FORMATS
MODES = {1: "L", 3: "RGB"}  # image channels -> PIL mode (grayscale, colour)
MAX_SIDE = 4096  # an image side the manifest may declare


def model_files(operation: str, model_format: str = "torchscript") -> tuple[str, ...]:
    """The files `operation` loads in `model_format` (encoder.pt, or encoder.pt2, ...)."""
    return tuple(Path(f).stem + SUFFIXES[model_format] for f in FILES[operation])


@dataclass(frozen=True)
class ModelInfo:
    """What the handlers need from manifest.json, checked once at load."""

    name: str
    kind: str  # ae | vae
    latent_dim: int
    image_shape: tuple[int, int, int]  # (C, H, W), C a key of MODES
    scale: float  # uint8 / scale = model input
    # the sampling prior: None when the manifest has none (an AE registered without data)
    prior_mean: np.ndarray | None  # (D,)
    prior_factor: np.ndarray | None  # (D, D): F @ F.T == the prior's cov, computed once
    manifest: dict

    @property
    def channels(self) -> int:
        return self.image_shape[0]

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.image_shape[1], self.image_shape[2]

    @property
    def mode(self) -> str:
        """The images' PIL mode: L (one channel) or RGB."""
        return MODES[self.channels]

    @classmethod
    def from_manifest(cls, manifest: dict) -> ModelInfo:
        try:
            kind, dim = manifest["kind"], int(manifest["latent_dim"])
            c, h, w = (int(v) for v in manifest["image_shape"])
            scale = float(manifest["pixel_scaling"]["divide_by"])
            prior = manifest["prior"]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"manifest.json lacks or mangles a required key: {err!r}") from None
        if kind not in ("ae", "vae") or c not in MODES or dim < 1:
            raise ValueError(
                f"unsupported model: kind {kind!r}, channels {c} (1 or 3), latent_dim {dim}"
            )
        if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE) or not scale > 0:
            raise ValueError(f"unsupported image: {h}x{w} pixels, pixel scaling {scale}")
        if prior.get("type") == "none":  # no sampling prior: `sample` answers 400
            mean = factor = None
        elif prior.get("type") == "standard_normal":
            mean, factor = np.zeros(dim), np.eye(dim)
        elif prior.get("type") == "gaussian":
            try:
                mean = np.asarray(prior["mean"], dtype=np.float64)
                factor = np.asarray(prior["factor"], dtype=np.float64)
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(
                    f"manifest.json lacks or mangles a required key: prior {err!r} "
                    "(re-export the model: the export writes the prior's sampling factor)"
                ) from None
        else:
            raise ValueError(f"unknown prior type {prior.get('type')!r}")
        if mean is not None and (mean.shape != (dim,) or factor.shape != (dim, dim)):
            raise ValueError(
                f"prior shapes {mean.shape}, {factor.shape} do not fit latent_dim {dim}"
            )
        name = manifest.get("name", "?")
        return cls(name, kind, dim, (c, h, w), scale, mean, factor, manifest)

    @classmethod
    def from_dir(cls, model_dir: Path) -> ModelInfo:
        return cls.from_manifest(json.loads((Path(model_dir) / MANIFEST).read_text()))
