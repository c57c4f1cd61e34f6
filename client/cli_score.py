"""`python -m client score`'s own parts: its options' parsers, the --out file and the
summary (the command itself is in client/cli.py).

--out ending in .npz: the arrays of `client.scores.Scored` under their own names,
`scores`, `p_values` (N x S float64), `is_outlier` (N x S bool), `outlier` (N,
bool, the primary score's flags) and each statistic the answer has (`kl_nats`, ...,
N float64), with `names` (S,), `primary`, `fpr`, `mode` and `model`; it loads
with `np.load(path)` (no pickle). --out ending in .csv: one row per image, columns
`index`, then `<score>`, `<score>_p_value`, `<score>_is_outlier` (0/1) per score,
`outlier` (0/1), and the statistics.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from client.scores import Scored

OUT_SUFFIXES = (".npz", ".csv")


def parse_fpr(text: str) -> float:
    try:
        fpr = float(text)
    except ValueError:
        fpr = float("nan")
    if not 0 < fpr < 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"--fpr takes a number in (0, 1), got {text!r}")
    return fpr


def parse_out(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in OUT_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"--out must end in {' or '.join(OUT_SUFFIXES)}, got {text!r}"
        )
    return path


def write_scores(scored: Scored, out: Path, *, mode: str, model: str) -> str:
    """Save `scored` as .npz or .csv (by out's suffix); returns what was written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    shape = f"{len(scored)} x {len(scored.names)} scores"
    if out.suffix.lower() == ".npz":
        with out.open("wb") as f:  # a file object: savez would otherwise rename x.NPZ
            np.savez(
                f,
                names=np.asarray(scored.names),
                primary=np.asarray(scored.primary),
                fpr=np.asarray(scored.fpr),
                mode=np.asarray(mode),
                model=np.asarray(model),
                scores=scored.scores,
                p_values=scored.p_values,
                is_outlier=scored.is_outlier,
                outlier=scored.outlier,
                **scored.statistics,
            )
        return f"{out} ({shape})"
    header = ["index"]
    columns = []
    for j, name in enumerate(scored.names):
        header += [name, f"{name}_p_value", f"{name}_is_outlier"]
        columns += [scored.scores[:, j], scored.p_values[:, j], scored.is_outlier[:, j]]
    header.append("outlier")
    columns.append(scored.outlier)
    header += list(scored.statistics)
    columns += list(scored.statistics.values())
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i in range(len(scored)):
            writer.writerow([i, *(_cell(col[i]) for col in columns)])
    return f"{out} ({shape}, {len(header)} columns)"


def _cell(value: np.generic) -> str:
    if value.dtype == bool:
        return str(int(value))
    return f"{float(value):.9g}"  # float32's precision, from either protocol


def flagged(scored: Scored) -> str:
    """'flagged 3 of 150 (2.0 %) at fpr 0.01 by mahalanobis (neg_elbo 2, ...)'."""
    n, hits = len(scored), int(scored.outlier.sum())
    others = [
        f"{name} {int(scored.is_outlier[:, j].sum())}"
        for j, name in enumerate(scored.names)
        if name != scored.primary
    ]
    line = (
        f"flagged {hits} of {n} ({100 * hits / n:.1f} %) at fpr {scored.fpr:g} by {scored.primary}"
    )
    return line + (f" ({', '.join(others)})" if others else "")
