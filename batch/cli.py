"""`python -m batch encode|score|decode|sample ...`: a batch job from the command line.

Exit codes: 0 done, 1 the job started and failed (a rerun resumes), 2 a bad
option, model or input (nothing started).
"""

from __future__ import annotations

import argparse
import json
import sys

import paths
from batch.job import run
from batch.spec import JobError, JobFailed, JobSpec


def _actors(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give N or MIN,MAX") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not 1 <= parts[0] <= parts[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: give N or MIN,MAX with 1 <= MIN <= MAX")
    return parts[0], parts[1]


def _common(p: argparse.ArgumentParser, inputs: bool) -> None:
    p.add_argument("--model", required=True, help="a model name (model_store/<name>/)")
    p.add_argument("--model-dir", help="the model's export folder (default model_store/<name>)")
    if inputs:
        p.add_argument(
            "--input", required=True, help="a folder, an IDX/.npy/Parquet file, or a URI"
        )
    p.add_argument("--output", required=True, help="the output folder (local path or URI)")
    p.add_argument(
        "--address",
        help="a Ray cluster: auto, ray://HOST:10001, ... (default: RAY_ADDRESS, else a "
        "local Ray started for the job)",
    )
    p.add_argument(
        "--actors", type=_actors, default=(0, 0), help="N or MIN,MAX (default: one per CPU)"
    )
    p.add_argument("--batch-size", type=int, default=256, help="items per model call (256)")
    p.add_argument(
        "--block-items", type=int, default=4096, help="items per output part (resume unit; 4096)"
    )
    p.add_argument(
        "--cpus-per-actor", type=float, default=1.0, help="Ray CPUs (and torch threads) per actor"
    )
    p.add_argument(
        "--gpus-per-actor", type=float, default=0.0, help="GPUs per actor (> 0: run on CUDA)"
    )
    p.add_argument("--limit", type=int, help="only the first N items")
    p.add_argument("--max-errors", type=int, help="fail once more than N items failed")
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=30.0,
        help="a node lost and no block finished for this long: fail (seconds)",
    )
    p.add_argument(
        "--ship",
        action="store_true",
        help="send the model and the code with the job (a cluster without the image)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace another job's output")
    p.add_argument("--quiet", action="store_true", help="no progress, no summary line")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m batch", description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="operation", required=True)
    enc = sub.add_parser("encode", help="images -> z_mean, z_log_var")
    _common(enc, True)
    score = sub.add_parser("score", help="images -> out-of-distribution scores and p-values")
    _common(score, True)
    score.add_argument(
        "--mode", choices=("full", "latent"), default="full", help="as the API's (default full)"
    )
    score.add_argument(
        "--fpr", type=float, default=0.01, help="false-positive rate of is_outlier (0.01)"
    )
    dec = sub.add_parser("decode", help="latents (Parquet z / z_mean, .npy) -> images")
    _common(dec, True)
    sample = sub.add_parser("sample", help="seeded z ~ prior -> images")
    _common(sample, False)
    sample.add_argument("--n", type=int, required=True, help="images to sample")
    sample.add_argument("--seed", type=int, default=0, help="the same seed, the same images")
    sample.add_argument("--temperature", type=float, default=1.0, help="scales z's spread")
    for p in (dec, sample):
        p.add_argument(
            "--format",
            choices=("png", "array"),
            default="png",
            help="image (PNG bytes, default) or pixels (float32 lists)",
        )
        p.add_argument("--images", help="also write each image as a PNG file here")
    return top


def spec_from(args: argparse.Namespace) -> JobSpec:
    fields = {k: v for k, v in vars(args).items() if k not in ("model_dir",) and v is not None}
    model_dir = args.model_dir or str(paths.STORE / args.model)
    return JobSpec(model_dir=model_dir, **fields)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        manifest = run(spec_from(args), log=lambda m: print(m, file=sys.stderr))
    except JobError as err:
        print(f"python -m batch: {err}", file=sys.stderr)
        return 2
    except JobFailed as err:
        print(f"python -m batch: {err}", file=sys.stderr)
        return 1
    if args.quiet:
        return 0
    print(
        json.dumps(
            {
                k: manifest[k]
                for k in (
                    "rows",
                    "ok",
                    "errors",
                    "wall_seconds",
                    "startup_seconds",
                    "items_per_second",
                )
            }
        )
    )
    return 0
