#!/usr/bin/env python3
"""Write the image's pip requirements from pyproject.toml (the one place pins live).

    python requirements.py pyproject.toml OUT_DIR

OUT_DIR/torch.txt    the torch pin alone (installed from the PyTorch wheel index
                     that matches the image: CPU or a CUDA version)
OUT_DIR/runtime.txt  what serving needs: the handlers' imports (numpy, pillow,
                     pydantic) and the `serve` extra (TorchServe, the archiver,
                     what they import without declaring). The training-only
                     dependencies (matplotlib, tqdm) and the dev tools stay out.

Standard library only (runs in the image's build stage before anything is installed).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

RUNTIME_CORE = ("torch", "numpy", "pillow", "pydantic")  # what handlers/ imports


def name_of(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower()


def split(pyproject: Path) -> tuple[list[str], list[str]]:
    project = tomllib.loads(pyproject.read_text())["project"]
    core = {name_of(r): r for r in project["dependencies"]}
    missing = [n for n in RUNTIME_CORE if n not in core]
    if missing:
        raise SystemExit(f"{pyproject} does not pin {missing}")
    for req in [*core.values(), *project["optional-dependencies"]["serve"]]:
        if "==" not in req:
            raise SystemExit(f"{pyproject}: {req!r} is not pinned with ==")
    torch = [core["torch"]]
    runtime = [core[n] for n in RUNTIME_CORE if n != "torch"]
    runtime += project["optional-dependencies"]["serve"]
    return torch, runtime


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    torch, runtime = split(Path(argv[0]))
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "torch.txt").write_text("\n".join(torch) + "\n")
    (out / "runtime.txt").write_text("\n".join(runtime) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
