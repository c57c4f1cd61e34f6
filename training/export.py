"""Export a trained model as two TorchScript files plus `manifest.json`.

    encoder.pt  x (B, C, H, W) float32 in [0, 1] -> VAE: (z_mean, z_log_var); AE: z
    decoder.pt  z (B, latent_dim) float32       -> images (B, C, H, W) in [0, 1]

The scripted modules are checked against the eager ones on a batch (max abs
diff <= PARITY_TOL) and the export fails loudly otherwise. The manifest is the
contract with the serving handlers (`handlers/` reads it, never `training/`); its
`prior` carries the sampling factor that `sample` applies (training/prior.py).

With `packages=True` the export also compiles `encoder.pt2` / `decoder.pt2`
(AOTInductor packages, `training/aoti.py`) and lists them with their sha256
under the manifest's `packages` key; `files` stays the TorchScript pair. The
shipped store commits only TorchScript: `make archive` builds packages from it
when an archive asks for them (`eager_from_store` rebuilds the eager modules).
"""

from __future__ import annotations

import argparse
import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from training import aoti
from training.artifacts import (
    PARITY_TOL,
    ExportError,
    max_diff,
    sha256_file,
    write_manifest,
)
from training.data import load_dataset, pixel_scaling, to_float
from training.mnist_family import DATASETS
from training.models import Autoencoder, ImageDecoder, ModelConfig, build_model
from training.prior import STANDARD_NORMAL, gaussian_prior
from training.runs import Run, load_run

MANIFEST_VERSION = 1


def check_parity(
    model: Autoencoder, encoder, decoder, x: torch.Tensor, failure: Callable[[str, float], str]
) -> dict[str, float]:
    """{encoder: diff, decoder: diff} of another form of the model's two modules against
    the eager `model` on images `x` (the decoder at z_mean, as `ImageDecoder`); an ExportError
    saying `failure(part, diff)` when a diff is above PARITY_TOL."""
    with torch.inference_mode():
        z = model.encode_mean(x)
        diffs = {
            "encoder": max_diff(model.encoder(x), encoder(x)),
            "decoder": max_diff(ImageDecoder(model.decoder)(z), decoder(z)),
        }
    for part, diff in diffs.items():
        if not diff <= PARITY_TOL:
            raise ExportError(failure(part, diff))
    return diffs


def script_and_check(model: Autoencoder, x: torch.Tensor):
    """-> (scripted encoder, scripted decoder, {encoder: diff, decoder: diff})."""
    model = model.eval().cpu()
    encoder = torch.jit.script(model.encoder)
    decoder = torch.jit.script(ImageDecoder(model.decoder).eval())
    diffs = check_parity(
        model, encoder, decoder, x,
        lambda part, diff: f"scripted {part} differs from eager by {diff:.3g} > {PARITY_TOL}",
    )  # fmt: skip
    return encoder, decoder, diffs


def export_model(
    model: Autoencoder,
    out: Path,
    *,
    x_check: torch.Tensor,
    dataset: dict,
    metrics: dict | None = None,
    train_config: dict | None = None,
    code_prior: dict | None = None,
    packages: bool = False,
) -> dict:
    """Write encoder.pt, decoder.pt and manifest.json into `out` (with `packages`, also
    encoder.pt2 and decoder.pt2); return the manifest."""
    cfg = model.cfg
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    encoder, decoder, diffs = script_and_check(model, x_check)
    encoder.save(str(out / "encoder.pt"))
    decoder.save(str(out / "decoder.pt"))
    if cfg.kind == "ae" and code_prior is None:
        raise ExportError("an AE export needs code_prior (mean/cov of training codes)")
    # the factor is (re)computed from mean/cov here, so every AE manifest carries one
    prior = (
        gaussian_prior(code_prior["mean"], code_prior["cov"])
        if cfg.kind == "ae"
        else dict(STANDARD_NORMAL)
    )
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "name": out.name,
        "kind": cfg.kind,
        "body": cfg.body,
        "latent_dim": cfg.latent_dim,
        "image_shape": list(cfg.image_shape),
        "pixel_scaling": pixel_scaling(),
        "encoder_outputs": ["z_mean", "z_log_var"] if cfg.kind == "vae" else ["z"],
        "decoder_output": "pixels in [0, 1] (sigmoid of the decoder's logits)",
        "prior": prior,
        "dataset": dataset,
        "metrics": metrics or {},
        "model_config": cfg.to_dict(),
        "train_config": train_config or {},
        "parity_max_abs_diff": diffs,
        "torch_version": torch.__version__,
        "files": {f: sha256_file(out / f) for f in ("encoder.pt", "decoder.pt")},
    }
    if packages:
        decoder = ImageDecoder(model.decoder)
        manifest["packages"] = aoti.package_pair(model.encoder, decoder, x_check, out)
    write_manifest(out / "manifest.json", manifest)
    return manifest


def _quiet_jit_load(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # reading TorchScript is this function's purpose
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def eager_from_store(model_dir: Path, check: torch.Tensor | None = None) -> Autoencoder:
    """The eager model of an export, rebuilt from its manifest's `model_config` and the
    TorchScript files' weights, and checked against them (max abs diff <= PARITY_TOL)
    on `check` images (default: 8 seeded random ones)."""
    model_dir = Path(model_dir)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    model = build_model(ModelConfig.from_dict(manifest["model_config"])).eval()
    encoder, decoder = (_quiet_jit_load(model_dir / f) for f in ("encoder.pt", "decoder.pt"))
    model.encoder.load_state_dict(encoder.state_dict())
    # decoder.pt's keys: `decoder.net.N...`
    ImageDecoder(model.decoder).load_state_dict(decoder.state_dict())
    if check is None:
        check = torch.rand((8, *model.cfg.image_shape), generator=torch.Generator().manual_seed(0))
    check_parity(
        model, encoder, decoder, check,
        lambda part, diff: f"rebuilt {part} differs from {model_dir}'s TorchScript by {diff:.3g}",
    )  # fmt: skip
    return model


def export_run(run: Run, out: Path, packages: bool = False) -> dict:
    """Export a loaded run (its checkpoint and metrics.json) into `out`."""
    metrics_path = run.path / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    data = run.data
    if out.exists():
        shutil.rmtree(out)
    return export_model(
        run.model,
        out,
        x_check=to_float(data.test.images[:256]),
        dataset=data.identity(),
        metrics=metrics,
        train_config=asdict(run.config),
        code_prior=run.prior if run.model.cfg.kind == "ae" else None,
        packages=packages,
    )


def _same_code(a: torch.jit.ScriptModule, b: torch.jit.ScriptModule) -> bool:
    """The same TorchScript code in every submodule (weights are checked by parity)."""
    ma, mb = dict(a.named_modules()), dict(b.named_modules())
    return ma.keys() == mb.keys() and all(ma[k].code == mb[k].code for k in ma)


def rescript(model_dir: Path, x_check: torch.Tensor) -> dict:
    """Script an export again with this code (same weights), in place.

    For changes to the modules' code that keep their parameters and outputs
    (a faster layer): the new files must answer as the old ones within
    PARITY_TOL on `x_check` (so within 2 x PARITY_TOL of the old files), and the
    manifest keeps everything but the files'
    sha256, the parity figures and the torch version.
    """
    model_dir = Path(model_dir)
    model = eager_from_store(model_dir, x_check)  # answers as the old files, or raises
    encoder, decoder, diffs = script_and_check(model, x_check)  # and the new ones as it
    for file, module in (("encoder.pt", encoder), ("decoder.pt", decoder)):
        if not _same_code(_quiet_jit_load(model_dir / file), module):  # else no churn in git
            module.save(str(model_dir / file))
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["parity_max_abs_diff"] = diffs
    manifest["torch_version"] = torch.__version__
    manifest["files"] = {f: sha256_file(model_dir / f) for f in ("encoder.pt", "decoder.pt")}
    write_manifest(model_dir / "manifest.json", manifest)
    return diffs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Export runs/<name> as TorchScript + manifest.")
    p.add_argument("--run", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument(
        "--packages", action="store_true", help="also encoder.pt2 / decoder.pt2 (AOTInductor)"
    )
    p.add_argument(
        "--rescript",
        type=Path,
        nargs="+",
        metavar="EXPORT_DIR",
        help="script these exports again with this code, in place (same weights)",
    )
    a = p.parse_args(argv)
    if a.rescript:
        for model_dir in a.rescript:
            manifest = json.loads((model_dir / "manifest.json").read_text())
            name = manifest["dataset"]["name"]
            if name in DATASETS:
                x = to_float(load_dataset(name).test.images[:256])
            else:  # your own images may not be at hand: seeded random ones
                x = torch.rand(
                    (256, *manifest["image_shape"]), generator=torch.Generator().manual_seed(0)
                )
            diffs = rescript(model_dir, x)
            print(f"re-scripted {model_dir}: parity {diffs}")
        return
    if a.run is None or a.out is None:
        p.error("--run and --out (or --rescript)")
    m = export_run(load_run(a.run), a.out, a.packages)
    print(
        f"exported {a.out}: {m['kind']} latent {m['latent_dim']}, parity {m['parity_max_abs_diff']}"
    )


if __name__ == "__main__":
    main()
