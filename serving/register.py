"""Add an autoencoder trained elsewhere to the store: a checked TorchScript pair + manifest.

    python -m serving.register NAME --encoder ENC --decoder DEC --kind ae|vae
        --image-shape C,H,W --latent-dim D [--pixel-scale 255] [--data PATH]
        [--store model_store] [--force]

writes `<store>/NAME/` with encoder.pt, decoder.pt (byte copies of ENC and DEC)
and manifest.json in the format `training/export.py` writes (body "external"),
after the checks of `serving/register_checks.py` (docs/register.md). Nothing is
written on a refusal: the directory is built in a hidden temp dir beside the
target and renamed into place at the end.

With `--data` (a folder of PNG/JPEG images, an IDX images file, a `.npy`; read
by `training.sources.read_images`) a seeded held-out set calibrates the score
operation (`serving.calibrate.calibrate`) and, for an AE, the other images fit
the sampling prior (the Gaussian of the encoder's codes, `training.prior`).
Without it a VAE samples N(0, I), an AE has no prior (`sample` answers 400) and
no model has a calibration (`score` answers 400).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from handlers.manifest import MANIFEST, ModelInfo
from paths import SHIPPED_MODELS, STORE
from serving.calibrate import CHUNK, calibrate, model_input
from serving.register_checks import (
    RegisterError,
    check_name,
    check_pair,
    check_settings,
    load_torchscript,
    parse_image_shape,
)
from training.artifacts import sha256_file, write_manifest
from training.export import MANIFEST_VERSION
from training.prior import STANDARD_NORMAL, gaussian_prior
from training.sources import read_images, source_sha256

HELD_OUT = 5000  # at most this many --data images calibrate the score
SEED = 0  # the held-out split's permutation
MIN_IMAGES = 20  # fewer --data images calibrate nothing useful
FILES = ("encoder.pt", "decoder.pt")
NO_PRIOR = {"type": "none"}  # an AE without --data: nothing to sample from


@dataclass(frozen=True)
class Registration:
    name: str
    encoder: Path
    decoder: Path
    kind: str
    image_shape: tuple[int, int, int]
    latent_dim: int
    pixel_scale: float = 255.0
    data: Path | None = None
    store: Path = STORE
    force: bool = False
    command: str = ""


# ---- --data ---------------------------------------------------------------------------
def read_data(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """(N, C, H, W) uint8 images of `path`, read as training reads them (and as the server
    converts an upload: mode, then size)."""
    if not path.exists():
        raise RegisterError(f"--data {path}: no such file or folder")
    try:
        images = read_images(path, shape)
    except (OSError, ValueError, RuntimeError) as err:
        raise RegisterError(f"--data {path}: {err}") from None
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != shape:
        raise RegisterError(
            f"--data {path}: read as {images.dtype} {images.shape}, want uint8 (N, {shape})"
        )
    if len(images) < MIN_IMAGES:
        raise RegisterError(
            f"--data {path}: {len(images)} images; calibration needs at least {MIN_IMAGES}"
        )
    return images


def split(images: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(held-out images, the others, how). An AE's prior is fitted on the others, so
    half at most is held out; a VAE fits nothing else on the data."""
    n = len(images)
    held = min(HELD_OUT, n if kind == "vae" else n // 2)
    order = np.random.default_rng(SEED).permutation(n)
    how = f"held out: {held} of {n} images (numpy default_rng({SEED}).permutation)"
    return images[np.sort(order[:held])], images[np.sort(order[held:])], how


def codes(encoder, images: np.ndarray, scale: float) -> np.ndarray:
    """The AE encoder's z of every image (float64), as a worker computes it."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), CHUNK):
            out.append(encoder(model_input(images[i : i + CHUNK], scale)).double())
    z = torch.cat(out).numpy()
    if not np.isfinite(z).all():
        raise RegisterError(
            f"encoder gives NaN or infinite codes on {int((~np.isfinite(z)).any(1).sum())} of "
            "the --data images"
        )
    return z


# ---- the manifest ----------------------------------------------------------------------
def manifest_of(reg: Registration, dataset: dict | None, checks: dict, model_dir: Path) -> dict:
    vae = reg.kind == "vae"
    return {
        "manifest_version": MANIFEST_VERSION,
        "name": reg.name,
        "kind": reg.kind,
        "body": "external",
        "latent_dim": reg.latent_dim,
        "image_shape": list(reg.image_shape),
        "pixel_scaling": {
            "input": "uint8",
            "divide_by": float(reg.pixel_scale),
            "range": [0.0, 1.0],
        },
        "encoder_outputs": ["z_mean", "z_log_var"] if vae else ["z"],
        "decoder_output": "pixels in [0, 1] (checked at registration)",
        "prior": dict(STANDARD_NORMAL) if vae else dict(NO_PRIOR),
        "dataset": dataset,
        "torch_version": torch.__version__,
        "files": {f: sha256_file(model_dir / f) for f in FILES},
        "registered": {
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "from": {
                "encoder": str(Path(reg.encoder).resolve()),
                "decoder": str(Path(reg.decoder).resolve()),
                "data": str(Path(reg.data).resolve()) if reg.data else None,
            },
            "command": reg.command,
            "checks": checks,
        },
    }


def _place(tmp: Path, target: Path, force: bool) -> None:
    """Rename the finished `tmp` to `target` (an old one moved aside, then removed)."""
    if not target.exists():
        os.replace(tmp, target)
        return
    if not force:
        raise RegisterError(f"{target} exists: pass --force to replace it")
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.replaced-", dir=target.parent))
    os.replace(target, old / target.name)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old / target.name, target)  # the old model stays as it was
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def register(reg: Registration, log=print) -> dict:
    """Check the pair (and read --data) first, then write `<store>/<name>/`; the manifest."""
    check_name(reg.name, SHIPPED_MODELS)
    check_settings(reg.kind, reg.latent_dim, reg.pixel_scale)
    store, target = Path(reg.store), Path(reg.store) / reg.name
    if target.exists() and not reg.force:
        raise RegisterError(f"{target} exists: pass --force to replace it")
    encoder = load_torchscript(reg.encoder, "encoder")
    decoder = load_torchscript(reg.decoder, "decoder")
    args = (reg.kind, reg.image_shape, reg.latent_dim, reg.pixel_scale)
    checks = check_pair(encoder, decoder, *args)
    log(f"{reg.name}: the pair passed the checks ({checks['probe']})")
    dataset = images = None
    if reg.data is not None:
        data = Path(reg.data)
        images = read_data(data, reg.image_shape)
        log(f"{reg.name}: read {len(images)} images from {data}")
        dataset = {
            "name": data.stem if data.is_file() else data.name,
            "sha256": source_sha256(data),
            "source": str(data.resolve()),
            "images": len(images),
        }
    created = not store.exists()
    store.mkdir(parents=True, exist_ok=True)
    # hidden, beside the target: one rename away, and no model dir (serving.archive skips it)
    tmp = Path(tempfile.mkdtemp(prefix=f".{reg.name}.registering-", dir=store))
    try:
        for f, src in zip(FILES, (reg.encoder, reg.decoder), strict=True):
            shutil.copyfile(src, tmp / f)
        manifest = manifest_of(reg, dataset, checks, tmp)
        if images is not None:
            held, rest, how = split(images, reg.kind)
            if reg.kind == "ae":
                z = codes(encoder, rest, reg.pixel_scale)
                manifest["prior"] = gaussian_prior(z.mean(0), np.cov(z, rowvar=False))
                manifest["registered"]["prior"] = f"fitted on the {len(rest)} images not held out"
        write_manifest(tmp / MANIFEST, manifest)
        try:
            ModelInfo.from_dir(tmp)  # what every worker checks at load
        except ValueError as err:
            raise RegisterError(f"the handlers refuse the manifest: {err}") from None
        if images is not None:
            held_out = {
                "dataset": dataset["name"],
                "split": how,
                "dataset_sha256": dataset["sha256"],
            }
            try:
                calibrate(tmp, held, held_out)
            except Exception as err:
                where = traceback.extract_tb(err.__traceback__)[-1]
                raise RegisterError(
                    f"calibrating the score on {len(held)} --data images failed in "
                    f"{Path(where.filename).name}:{where.lineno} ({where.name}): "
                    f"{type(err).__name__}: {err}"
                ) from err
            log(f"{reg.name}: calibrated the score on {len(held)} held-out images")
            manifest = ModelInfo.from_dir(tmp).manifest
        _place(tmp, target, reg.force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and not any(store.iterdir()):
            store.rmdir()
        raise
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Check a TorchScript encoder/decoder pair and add it to the model store "
        "(docs/register.md)."
    )
    p.add_argument("name", help="model name: the archives are <name>-{encode,decode,sample,score}")
    p.add_argument("--encoder", type=Path, required=True, help="TorchScript encoder file")
    p.add_argument("--decoder", type=Path, required=True, help="TorchScript decoder file")
    p.add_argument("--kind", required=True, help="vae: encoder -> (z_mean, z_log_var); ae: z")
    p.add_argument("--image-shape", required=True, help="C,H,W of the images, C 1 or 3")
    p.add_argument("--latent-dim", type=int, required=True, help="D, the code's width")
    p.add_argument("--pixel-scale", type=float, default=255.0, help="model input = uint8 / this")
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="images (folder of PNG/JPEG, IDX, .npy) to calibrate score and fit an AE's prior",
    )
    p.add_argument("--store", type=Path, default=STORE, help="the model store (model_store/)")
    p.add_argument("--force", action="store_true", help="replace an existing <store>/NAME/")
    a = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    try:
        reg = Registration(
            name=a.name,
            encoder=a.encoder,
            decoder=a.decoder,
            kind=a.kind,
            image_shape=parse_image_shape(a.image_shape),
            latent_dim=a.latent_dim,
            pixel_scale=a.pixel_scale,
            data=a.data,
            store=a.store,
            force=a.force,
            command=shlex.join(["python", "-m", "serving.register", *argv]),
        )
        m = register(reg)
    except RegisterError as err:
        print(f"register {a.name}: refused: {err}", file=sys.stderr)
        return 2
    extra = "calibrated" if "calibration" in m else "no calibration (score answers 400)"
    prior = m["prior"]["type"]
    print(
        f"registered {a.store / a.name}/: {m['kind']} {tuple(m['image_shape'])} latent "
        f"{m['latent_dim']}, prior {prior}, {extra}\n"
        f'serve it: make serve MODELS="{a.name}"   (make archive MODELS=... builds its archives)'
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
