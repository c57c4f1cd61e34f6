"""`python -m client embed|score|sample|decode|info`: the client from the command line.

    python -m client info --model cats-vae
    python -m client embed t10k-images-idx3-ubyte.gz --out emb.npy --labels-out labels.npy
    python -m client score t10k-images-idx3-ubyte.gz --out scores.npz --fpr 0.01 --mode full
    python -m client sample --n 64 --seed 1 --out grid.png
    python -m client decode --z 0.5,0.5 --model fashion-vae-2d --out img.png

Requests go over the Open Inference Protocol with binary tensors (--protocol v2,
the default) or latentserve's JSON API (--protocol json). The server address
and key come from --url / --token (or --token-file, the key_file.json
TorchServe writes), defaulting to $LATENTSERVE_URL and $LATENTSERVE_TOKEN. The
model's image shape (grayscale or colour, its size) comes from the server's
metadata (`info` shows it; --image-shape C,H,W for an old server without it). An
`--out` ending in .npy saves float arrays instead of PNG ((N, H, W), or (N, H, W, C)
for colour); score's --out is .npz or .csv (client/cli_score.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from client.api import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, DEFAULT_URL, LatentClient
from client.cli_files import read_source, save_images
from client.cli_score import flagged, parse_fpr, parse_out, write_scores
from client.errors import InputError, LatentServeError
from client.limits import MAX_ITEMS
from client.metadata import OPERATIONS, check_shape
from client.protocols import PROTOCOLS
from client.retry import RetryPolicy
from client.scores import MODES


def read_token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        try:
            keys = json.loads(Path(args.token_file).read_text())
            return keys["inference"]["key"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(
                f"{args.token_file}: not a TorchServe key file with an inference key ({err!r})"
            ) from None
    return args.token or os.environ.get("LATENTSERVE_TOKEN") or None


def make_client(args: argparse.Namespace) -> LatentClient:
    try:
        return LatentClient(
            args.url,
            token=read_token(args),
            model=args.model,
            timeout=args.timeout,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            retry=RetryPolicy(retries=args.retries),
            protocol=args.protocol,
            image_shape=args.image_shape,
        )
    except InputError:
        raise
    except ValueError as err:  # --batch-size or --concurrency out of range: a bad input
        raise InputError(str(err)) from None


def requests_summary(client: LatentClient, operation: str, items: Sequence) -> str:
    size = client.items_per_request(operation, items)  # the model's metadata is kept
    return (
        f"{client.protocol.name}, {client.stats.requests} requests of <= {size} "
        f"images, {client.concurrency} in flight, {client.stats.retries} retries"
    )


def cmd_info(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        info = client.model_info(args.operation)
        size = client.items_per_request(args.operation)
    print(info.describe())
    print(f"requests of <= {size} images ({client.protocol.name}, --batch-size {args.batch_size})")
    return 0


def with_progress(args: argparse.Namespace, client: LatentClient, verb: str, items, call):
    """call(items, progress=...) under a progress bar (none with --quiet) -> (result, s)."""
    start = time.perf_counter()
    desc = f"{verb} {client.model}"
    with tqdm(total=len(items), unit="img", desc=desc, disable=args.quiet) as bar:
        result = call(items, progress=bar.update)
    return result, time.perf_counter() - start


def save_labels(args: argparse.Namespace, labels: np.ndarray | None) -> list[str]:
    """--labels-out, when the source had labels: what was written."""
    if labels is None:
        return []
    np.save(args.labels_out, labels)
    return [f"{args.labels_out} {labels.shape}"]


def cmd_embed(args: argparse.Namespace) -> int:
    items, labels = read_source(args)
    with make_client(args) as client:
        result, elapsed = with_progress(args, client, "embed", items, client.encode)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, result.z_mean)
    written = [f"{out} {result.z_mean.shape}"]
    if args.log_var_out:
        if result.z_log_var is None:
            raise InputError(f"{client.model} is an AE: it has no z_log_var")
        np.save(args.log_var_out, result.z_log_var)
        written.append(f"{args.log_var_out} {result.z_log_var.shape}")
    written += save_labels(args, labels)
    rate = len(result) / elapsed if elapsed > 0 else float("inf")
    print(
        f"embedded {len(result)} images with {client.model} in {elapsed:.2f} s: "
        f"{rate:.0f} img/s ({requests_summary(client, 'encode', items)})\n"
        f"wrote {', '.join(written)}"
    )
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    items, labels = read_source(args)
    with make_client(args) as client:
        score = functools.partial(client.score, fpr=args.fpr, mode=args.mode)
        scored, elapsed = with_progress(args, client, "score", items, score)
    written = [write_scores(scored, args.out, mode=args.mode, model=client.model)]
    written += save_labels(args, labels)
    rate = len(scored) / elapsed if elapsed > 0 else float("inf")
    print(
        f"scored {len(scored)} images with {client.model} ({args.mode}) in {elapsed:.2f} s: "
        f"{rate:.0f} img/s ({requests_summary(client, 'score', items)})\n{flagged(scored)}\n"
        f"wrote {', '.join(written)}"
    )
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    as_array = Path(args.out).suffix == ".npy"
    with make_client(args) as client:
        images = client.sample(args.n, args.seed, args.temperature, as_array=as_array)
        seed = client.last_seed
    where = save_images(images, Path(args.out), args.cols, args.zoom)
    print(f"sampled {args.n} from {args.model} (seed {seed}, temperature {args.temperature})")
    print(f"wrote {where}")
    return 0


def parse_z(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--z takes comma-separated numbers, got {text!r}"
        ) from None


def cmd_decode(args: argparse.Namespace) -> int:
    as_array = Path(args.out).suffix == ".npy"
    with make_client(args) as client:
        images = client.decode(args.z, as_array=as_array)
    print(f"decoded {len(args.z)} latent vector(s) with {args.model}")
    print(f"wrote {save_images(images, Path(args.out), args.cols, args.zoom)}")
    return 0


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        return check_shape(tuple(int(v) for v in text.split(",")))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--image-shape takes C,H,W (C 1 or 3), got {text!r} ({err})"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("LATENTSERVE_URL", DEFAULT_URL),
        help="inference API (default $LATENTSERVE_URL or %(default)s)",
    )
    common.add_argument("--model", default="fashion-vae", help="model name (default %(default)s)")
    auth = common.add_mutually_exclusive_group()
    auth.add_argument("--token", help="inference key (default $LATENTSERVE_TOKEN)")
    auth.add_argument("--token-file", help="TorchServe's key_file.json (uses its inference key)")
    common.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"items per request (<= {MAX_ITEMS})",
    )
    common.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="requests in flight"
    )
    common.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    common.add_argument("--retries", type=int, default=5, help="retries on 503/507/no connection")
    common.add_argument(
        "--protocol",
        choices=sorted(PROTOCOLS),
        default="v2",
        help="v2: the Open Inference Protocol, binary tensors (default); json: the JSON API",
    )
    common.add_argument(
        "--image-shape",
        type=parse_shape,
        help="C,H,W of the model's images, for a server without model metadata (old servers)",
    )

    parser = argparse.ArgumentParser(prog="python -m client", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser(
        "info", parents=[common], help="the model: kind, latent_dim, image shape (the server's)"
    )
    info.add_argument(
        "--operation", choices=OPERATIONS, default="encode", help="whose metadata (%(default)s)"
    )
    info.set_defaults(run=cmd_info)

    embed = sub.add_parser("embed", parents=[common], help="images -> z_mean (.npy)")
    embed.add_argument("source", help="an IDX images file, a PNG/JPEG file, or a folder of them")
    embed.add_argument("--out", required=True, help="z_mean as an N x D .npy")
    embed.add_argument("--labels-out", help="labels .npy (IDX labels file, or sub-folder names)")
    embed.add_argument("--log-var-out", help="z_log_var as an N x D .npy (VAE)")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")
    embed.set_defaults(run=cmd_embed)

    score = sub.add_parser(
        "score", parents=[common], help="images -> anomaly scores, p-values, outliers"
    )
    score.add_argument("source", help="an IDX images file, a PNG/JPEG file, or a folder of them")
    score.add_argument(
        "--out", type=parse_out, required=True, help="scores, p-values, flags: .npz or .csv"
    )
    score.add_argument("--labels-out", help="labels .npy (IDX labels file, or sub-folder names)")
    score.add_argument(
        "--fpr",
        type=parse_fpr,
        default=0.01,
        help="false-positive rate of is_outlier, in (0, 1) (default %(default)s)",
    )
    score.add_argument(
        "--mode",
        choices=MODES,
        default="full",
        help="full: every score (default); latent: the encoder's latent score only",
    )
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(run=cmd_score)

    for name, helptext in (("sample", "images from the prior"), ("decode", "z -> image(s)")):
        p = sub.add_parser(name, parents=[common], help=helptext)
        p.add_argument(
            "--out", required=True, help="PNG grid (L or RGB), or .npy: (N, H, W[, C]) floats"
        )
        p.add_argument("--cols", type=int, help="grid columns (default: square)")
        p.add_argument("--zoom", type=int, default=1, help="integer upscale of the PNG")
        if name == "sample":
            p.add_argument("--n", type=int, default=64, help="number of images")
            p.add_argument("--seed", type=int, help="same seed, same images (default random)")
            p.add_argument("--temperature", type=float, default=1.0, help="prior spread")
            p.set_defaults(run=cmd_sample)
        else:
            p.add_argument(
                "--z", type=parse_z, action="append", required=True, help="e.g. 0.5,0.5 (repeat)"
            )
            p.set_defaults(run=cmd_decode)
    return parser


def _glue_z(argv: list[str]) -> list[str]:
    """`--z -1,0.5` -> `--z=-1,0.5`: argparse would take "-1,0.5" for an option."""
    out, it = [], iter(argv)
    for arg in it:
        out.append(f"--z={next(it, '')}" if arg == "--z" else arg)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_glue_z(sys.argv[1:] if argv is None else argv))
    try:
        return args.run(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except LatentServeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
