"""AOTInductor packages for archives whose format is `aoti`, built from the committed TorchScript.

The committed store holds TorchScript only (its size budget is 20 MB and each
package is about as large as its TorchScript file), so `make archive` builds
`encoder.pt2` / `decoder.pt2` when an archive asks for them: the eager model is
rebuilt from the TorchScript weights (`training.export.eager_from_store`),
exported and compiled (`training.aoti`, ~15-40 s per module on this machine).
The result is cached outside the repository, keyed by what decides its bytes
(the TorchScript files' sha256, the model config, torch's version and the
compile settings), so later builds, other checkouts and the tests reuse it;
TorchScript archives (the default) never compile anything.

    <cache>/<key>/encoder.pt2, decoder.pt2, packages.json   (the manifest's `packages` entry)

The cache is `$LATENTSERVE_PT2_CACHE`, else `$XDG_CACHE_HOME/latentserve/pt2`,
else `~/.cache/latentserve/pt2` (beside the image build's caches); deleting it
only costs a recompile.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from handlers.manifest import MANIFEST, model_files
from handlers.options import MODEL_FORMATS

if TYPE_CHECKING:
    from training.aoti import CompileSettings

# training/ (and the compiler behind it) is imported only where packages are built:
# TorchScript archives, the default, need neither (the image archives without them)

RECORD = "packages.json"
SOURCES = ("encoder.pt", "decoder.pt")  # what the packages are rebuilt from


def cache_root() -> Path:
    if os.environ.get("LATENTSERVE_PT2_CACHE"):
        return Path(os.environ["LATENTSERVE_PT2_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "latentserve" / "pt2"


def cache_key(model_dir: Path, settings: CompileSettings | None = None) -> str:
    """sha256 of the inputs that decide the packages: the TorchScript bytes, the model
    config, torch's version and the compile settings (default: `training.aoti.SETTINGS`)."""
    from training import aoti
    from training.artifacts import sha256_file

    settings = settings or aoti.SETTINGS
    manifest = json.loads((Path(model_dir) / MANIFEST).read_text())
    inputs = {
        "sources": {f: sha256_file(Path(model_dir) / f) for f in SOURCES},
        "model_config": manifest["model_config"],
        "torch": torch.__version__,
        "settings": settings.to_dict(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def packages_for(
    model_dir: Path,
    cache: Path | None = None,
    settings: CompileSettings | None = None,
    log=print,
) -> Path:
    """The cache directory holding `model_dir`'s packages and their record, compiled on
    a miss (into a private folder first, then renamed: a concurrent build never reads
    half a package)."""
    from training import aoti
    from training.export import eager_from_store
    from training.models import ImageDecoder

    settings = settings or aoti.SETTINGS
    model_dir = Path(model_dir)
    cache = Path(cache) if cache is not None else cache_root()
    done = cache / cache_key(model_dir, settings)
    if (done / RECORD).exists():
        return done
    log(f"compiling AOTInductor packages of {model_dir.name} (cached in {cache})")
    model = eager_from_store(model_dir)
    x = torch.rand((64, *model.cfg.image_shape), generator=torch.Generator().manual_seed(0))
    work = cache / f".{done.name}.{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        record = aoti.package_pair(
            model.encoder, ImageDecoder(model.decoder), x, work, settings, log=log
        )
        (work / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        try:
            work.rename(done)
        except OSError:  # another build finished first: its packages are as good
            if not (done / RECORD).exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return done


def packaged_manifest(model_dir: Path, packages: Path) -> dict:
    """`model_dir`'s manifest with the `packages` entry (files and sha256) of `packages`."""
    manifest = json.loads((Path(model_dir) / MANIFEST).read_text())
    manifest["packages"] = json.loads((Path(packages) / RECORD).read_text())
    return manifest


@dataclass(frozen=True)
class Sources:
    """What one model's archives are built from: its manifest and the directory of its
    model files (the model dir itself, or the packages' cache directory)."""

    model: str
    manifest: Path
    files_dir: Path
    model_format: str = "torchscript"

    def files(self, op: str) -> list[Path]:
        return [self.files_dir / f for f in model_files(op, self.model_format)]


def sources(model_dir: Path, model_format: str, out: Path, log=print) -> Sources:
    """An archive's sources in `model_format`: TorchScript from `model_dir`, or the cached
    packages (compiled on a miss) with a copy of the manifest listing them, under `out`."""
    if model_format not in MODEL_FORMATS:
        raise ValueError(f"unknown model format {model_format!r}; known: {MODEL_FORMATS}")
    if model_format == "torchscript":
        return Sources(model_dir.name, model_dir / MANIFEST, model_dir)
    packages = packages_for(model_dir, log=log)
    staged = out / ".build" / f"{model_dir.name}.{model_format}" / MANIFEST
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_text(json.dumps(packaged_manifest(model_dir, packages), indent=2) + "\n")
    return Sources(model_dir.name, staged, packages, model_format)
