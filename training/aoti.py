"""The exported-program format: AOTInductor packages (`.pt2`) of the encoder and decoder.

    encoder.pt2  x (B, C, H, W) -> VAE: (z_mean, z_log_var); AE: z   (as encoder.pt)
    decoder.pt2  z (B, latent_dim) -> pixels in [0, 1]               (as decoder.pt)

TorchScript is deprecated from torch 2.13 on; `torch.export` is its successor.
Each module is exported with a dynamic batch dimension (1..MAX_BATCH), compiled
ahead of time by Inductor into a package of native code for the CPU (freezing
on: weights folded in as constants, convolutions pre-packed), and checked
against the eager module at several batch sizes. The handlers load a package
through torch's C++ package loader (`handlers/model.py`), no TorchScript
involved. Compiling needs a C++ compiler (g++; `make setup` installs it).

Compiled kernels read their thread count when they run (`cpp.dynamic_threads`),
so one package serves workers with any `cpu_threads`: torch's `set_num_threads`
reaches them through the OpenMP runtime that torch ships and the package shares.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from training.artifacts import PARITY_TOL, max_diff, sha256_file

CHECK_BATCHES = (1, 8, 64)
MAX_BATCH = 4096  # far above the handlers' chunk_size (256 by default); the loader checks
PACKAGE_FILES = {"encoder": "encoder.pt2", "decoder": "decoder.pt2"}


class PackageError(RuntimeError):
    pass


@dataclass(frozen=True)
class CompileSettings:
    """Everything besides the weights that decides a package's bytes (the cache key uses it)."""

    device: str = "cpu"
    max_batch: int = MAX_BATCH
    freezing: bool = True
    dynamic_threads: bool = True

    def inductor_configs(self) -> dict:
        return {"freezing": self.freezing, "cpp.dynamic_threads": self.dynamic_threads}

    def to_dict(self) -> dict:
        return asdict(self)


SETTINGS = CompileSettings()


def cxx_compiler() -> str:
    """The C++ compiler Inductor will call (CXX, else c++/g++/clang++ on PATH), or a clear error."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    raise PackageError(
        "compiling an AOTInductor package needs a C++ compiler, and none was found "
        "(CXX, c++, g++, clang++): install g++ (`sudo apt-get install g++`, or `make setup`)"
    )


def compile_package(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    settings: CompileSettings = SETTINGS,
) -> Path:
    """torch.export `module` (batch dimension 1..max_batch) and compile it into `path`."""
    cxx_compiler()
    if settings.device != "cpu":
        raise PackageError(f"packages are compiled for the CPU only, not {settings.device!r}")
    module = module.eval().cpu()
    batch = torch.export.Dim("batch", min=1, max=settings.max_batch)
    # an example batch of 1 or 2 would let export specialise the batch dimension
    example = example[:1].expand(3, *example.shape[1:]).contiguous()
    with torch.inference_mode(False), torch.no_grad():
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        out = torch._inductor.aoti_compile_and_package(
            program, package_path=str(path), inductor_configs=settings.inductor_configs()
        )
    return Path(out)


def load_package(path: Path):
    """A compiled package, callable like the module it came from (same output structure)."""
    return torch._inductor.aoti_load_package(str(path))


def check_package(
    path: Path, module: nn.Module, example: torch.Tensor, batches=CHECK_BATCHES
) -> float:
    """Max abs difference between the package and `module` over `batches` (rows of `example`,
    repeated as needed); raises PackageError above PARITY_TOL."""
    compiled = load_package(path)
    worst = 0.0
    with torch.inference_mode():
        for b in batches:
            x = example.repeat((b + len(example) - 1) // len(example), *[1] * (example.dim() - 1))
            x = x[:b].contiguous()
            worst = max(worst, max_diff(module(x), compiled(x)))
    if not worst <= PARITY_TOL:
        raise PackageError(f"{Path(path).name} differs from eager by {worst:.3g} > {PARITY_TOL}")
    return worst


def package_pair(
    encoder: nn.Module,
    decoder: nn.Module,
    x: torch.Tensor,
    out: Path,
    settings: CompileSettings = SETTINGS,
    log=print,
) -> dict:
    """Compile and check encoder.pt2 and decoder.pt2 into `out`, from eager modules and a
    batch of images `x` (the decoder is checked on the encoder's first output).

    -> the manifest's `packages` entry: {"files": {name: sha256}, "parity_max_abs_diff",
    "compile_seconds", "settings", "torch_version"}
    """
    encoder, decoder = encoder.eval().cpu(), decoder.eval().cpu()
    with torch.inference_mode():
        y = encoder(x)
    z = (y[0] if isinstance(y, tuple) else y).clone()
    record: dict = {"files": {}, "parity_max_abs_diff": {}, "compile_seconds": {}}
    for part, module, example in (("encoder", encoder, x), ("decoder", decoder, z)):
        name = PACKAGE_FILES[part]
        start = time.perf_counter()
        compile_package(module, example, Path(out) / name, settings)
        seconds = time.perf_counter() - start
        diff = check_package(Path(out) / name, module, example)
        record["files"][name] = sha256_file(Path(out) / name)
        record["parity_max_abs_diff"][part] = diff
        record["compile_seconds"][part] = round(seconds, 1)
        log(f"compiled {name} in {seconds:.1f}s, max abs diff {diff:.2g}")
    record["settings"] = settings.to_dict()
    record["torch_version"] = torch.__version__
    return record
