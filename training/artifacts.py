"""What every exported artifact is checked with: file digests, the manifest writer, parity.

Shared by the TorchScript export (`training/export.py`), the AOTInductor
packages (`training/aoti.py`) and the registration of models trained elsewhere,
so that each builds on this module instead of on one another.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

PARITY_TOL = 1e-5


class ExportError(RuntimeError):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(path: Path, manifest: dict) -> None:
    """indent=2, but lists of numbers on one line (the calibration's quantiles are long)."""
    text = json.dumps(manifest, indent=2)
    number = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
    flat = re.compile(rf"\[\s*({number}(?:,\s*{number})*)\s*\]")
    path.write_text(flat.sub(lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text) + "\n")


def max_diff(a, b) -> float:
    """The largest absolute difference of two outputs (tensors, or tuples of them)."""
    if isinstance(a, tuple | list):
        return max(max_diff(x, y) for x, y in zip(a, b, strict=True))
    return float((a - b).abs().max())
