"""The exported model as the handlers see it: manifest.json (`ModelInfo`) and loading.

The file names come from the export contract (`training/export.py`): encode
needs `encoder.pt`, decode and sample need `decoder.pt`, score needs both.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from handlers.device import Placement

MANIFEST = "manifest.json"
# the TorchScript files each operation loads, in the order its module tuple takes them
FILES = {
    "encode": ("encoder.pt",),
    "decode": ("decoder.pt",),
    "sample": ("decoder.pt",),
    "score": ("encoder.pt", "decoder.pt"),
}


@dataclass(frozen=True)
class ModelInfo:
    """What the handlers need from manifest.json, checked once at load."""

    name: str
    kind: str  # ae | vae
    latent_dim: int
    image_hw: tuple[int, int]
    scale: float  # uint8 / scale = model input
    prior_mean: np.ndarray  # (D,)
    prior_factor: np.ndarray  # (D, D): F @ F.T == the prior's cov, computed once at export
    manifest: dict

    @classmethod
    def from_manifest(cls, manifest: dict) -> ModelInfo:
        try:
            kind, dim = manifest["kind"], int(manifest["latent_dim"])
            c, h, w = (int(v) for v in manifest["image_shape"])
            scale = float(manifest["pixel_scaling"]["divide_by"])
            prior = manifest["prior"]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"manifest.json lacks or mangles a required key: {err!r}") from None
        if kind not in ("ae", "vae") or c != 1 or dim < 1:
            raise ValueError(f"unsupported model: kind {kind!r}, channels {c}, latent_dim {dim}")
        if prior.get("type") == "standard_normal":
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
        if mean.shape != (dim,) or factor.shape != (dim, dim):
            raise ValueError(
                f"prior shapes {mean.shape}, {factor.shape} do not fit latent_dim {dim}"
            )
        return cls(manifest.get("name", "?"), kind, dim, (h, w), scale, mean, factor, manifest)

    @classmethod
    def from_dir(cls, model_dir: Path) -> ModelInfo:
        return cls.from_manifest(json.loads((Path(model_dir) / MANIFEST).read_text()))


def load_script(model_dir: Path, info: ModelInfo, file: str, placement: Placement):
    """torch.jit.load one export after checking its sha256 against the manifest."""
    path = Path(model_dir) / file
    want = info.manifest.get("files", {}).get(file)
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    if want is not None and want != got:
        raise ValueError(f"{file}: sha256 {got} does not match the manifest's {want}")
    with warnings.catch_warnings():  # TorchScript is the export contract (training/export.py)
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
        module = torch.jit.load(str(path), map_location=placement.device).eval()
    return module.half() if placement.dtype == torch.float16 else module
