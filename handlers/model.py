"""The exported model as the handlers see it: manifest.json (`ModelInfo`) and loading.

The file names come from the export contract (`training/export.py`): encode
needs `encoder.pt`, decode and sample need `decoder.pt`, score needs both. An
archive whose handler option `model_format` is `aoti` carries the same modules
as AOTInductor packages (`encoder.pt2`, `decoder.pt2`, listed under the
manifest's `packages` key) instead: `load_module` loads either, after checking
the file's sha256 against the manifest, and both answer with the same output
structure (a VAE encoder: the tuple (z_mean, z_log_var)).
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


def _listed_sha256(info: ModelInfo, file: str) -> str | None:
    if file.endswith(SUFFIXES["aoti"]):
        want = info.manifest.get("packages", {}).get("files", {}).get(file)
        if want is None:  # a package is only ever served as listed (serving/packages.py)
            raise ValueError(
                f"{file}: manifest.json lists no such package (packages.files); an archive "
                "of format aoti carries them (python -m serving.archive --format NAME=aoti)"
            )
        return want
    return info.manifest.get("files", {}).get(file)


def _load_package(path: Path, info: ModelInfo, placement: Placement):
    """An AOTInductor package: native code compiled for the CPU by one torch version."""
    if placement.device != "cpu":
        raise ValueError(
            f"{path.name}: AOTInductor packages are compiled for the CPU and cannot run on "
            f"{placement.device}; serve this model as TorchScript (model_format: torchscript)"
        )
    built = info.manifest["packages"].get("torch_version")
    if built != torch.__version__:
        raise ValueError(
            f"{path.name} was compiled with torch {built}, this worker runs "
            f"{torch.__version__}: rebuild the archive (make archive)"
        )
    return Package(path)


class Package:
    """An AOTInductor package, called like the module it was compiled from: one tensor
    in; the same output structure out (a tuple for a VAE encoder, else one tensor).

    Through torch's C++ package loader, which `torch._inductor.aoti_load_package`
    wraps: importing torch._inductor for that wrapper costs about 2 s of CPU per
    worker (measured here), which every worker start would pay; our modules take one
    tensor, so the wrapper's pytree handling reduces to the output's tuple-or-not.
    """

    def __init__(self, path: Path) -> None:
        self.loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
        out_spec = json.loads(self.loader.get_call_spec()[1])
        self.tuple_out = isinstance(out_spec, list) and out_spec[1]["type"] == "builtins.tuple"

    def __call__(self, x: torch.Tensor):
        out = self.loader.run([x])
        return tuple(out) if self.tuple_out else out[0]


def load_module(model_dir: Path, info: ModelInfo, file: str, placement: Placement):
    """Load one export (TorchScript `.pt` or AOTInductor `.pt2`) after checking its
    sha256 against the manifest; placed on `placement`'s device."""
    path = Path(model_dir) / file
    want = _listed_sha256(info, file)
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    if want is not None and want != got:
        raise ValueError(f"{file}: sha256 {got} does not match the manifest's {want}")
    if file.endswith(SUFFIXES["aoti"]):
        return _load_package(path, info, placement)
    with warnings.catch_warnings():  # TorchScript is the export contract (training/export.py)
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
        module = torch.jit.load(str(path), map_location=placement.device).eval()
    return module.half() if placement.dtype == torch.float16 else module


def package_max_batch(info: ModelInfo) -> int:
    """The largest batch the manifest's packages accept (their dynamic batch dimension)."""
    return int(info.manifest.get("packages", {}).get("settings", {}).get("max_batch", 0))
