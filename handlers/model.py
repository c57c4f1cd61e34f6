"""Loading the exported modules (manifest.json itself: `handlers.manifest`).

An archive whose handler option `model_format` is `aoti` carries the same modules
as AOTInductor packages (`encoder.pt2`, `decoder.pt2`, listed under the
manifest's `packages` key) instead: `load_module` loads either, after checking
the file's sha256 against the manifest, and both answer with the same output
structure (a VAE encoder: the tuple (z_mean, z_log_var)).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch

from handlers.device import Placement
from handlers.manifest import SUFFIXES, ModelInfo


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
