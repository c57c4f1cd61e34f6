"""Export a trained model as two TorchScript files plus `manifest.json`.

    encoder.pt  x (B, C, H, W) float32 in [0, 1] -> VAE: (z_mean, z_log_var); AE: z
    decoder.pt  z (B, latent_dim) float32       -> images (B, C, H, W) in [0, 1]

The scripted modules are checked against the eager ones on a batch (max abs
diff <= PARITY_TOL) and the export fails loudly otherwise. The manifest is the
contract with the serving handlers (`handlers/` reads it, never `training/`); its
`prior` carries the sampling factor that `sample` applies (training/prior.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from training.data import load_dataset, pixel_scaling, to_float
from training.models import Autoencoder, ImageDecoder, ModelConfig, build_model
from training.prior import STANDARD_NORMAL, gaussian_prior
from training.runs import Run, load_run

PARITY_TOL = 1e-5
MANIFEST_VERSION = 1


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


def _max_diff(a, b) -> float:
    if isinstance(a, tuple):
        return max(_max_diff(x, y) for x, y in zip(a, b, strict=True))
    return float((a - b).abs().max())


def script_and_check(model: Autoencoder, x: torch.Tensor):
    """-> (scripted encoder, scripted decoder, {encoder: diff, decoder: diff})."""
    model = model.eval().cpu()
    encoder = torch.jit.script(model.encoder)
    decoder = torch.jit.script(ImageDecoder(model.decoder).eval())
    with torch.inference_mode():
        z = model.encode_mean(x)
        diffs = {
            "encoder": _max_diff(model.encoder(x), encoder(x)),
            "decoder": _max_diff(torch.sigmoid(model.decoder(z)), decoder(z)),
        }
    for part, diff in diffs.items():
        if not diff <= PARITY_TOL:
            raise ExportError(f"scripted {part} differs from eager by {diff:.3g} > {PARITY_TOL}")
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
) -> dict:
    """Write encoder.pt, decoder.pt and manifest.json into `out`; return the manifest."""
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
    write_manifest(out / "manifest.json", manifest)
    return manifest


def export_run(run: Run, out: Path) -> dict:
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
        dataset={"name": data.name, "sha256": data.checksum, "source": data.source},
        metrics=metrics,
        train_config=asdict(run.config),
        code_prior=run.prior if run.model.cfg.kind == "ae" else None,
    )


def _load_script(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # TorchScript is the export contract
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def _same_code(a: torch.jit.ScriptModule, b: torch.jit.ScriptModule) -> bool:
    """The same TorchScript code in every submodule (weights are checked by parity)."""
    ma, mb = dict(a.named_modules()), dict(b.named_modules())
    return ma.keys() == mb.keys() and all(ma[k].code == mb[k].code for k in ma)


def model_from_export(model_dir: Path) -> Autoencoder:
    """The eager model of an export: `model_config` from its manifest, the weights
    from its TorchScript files (the training checkpoint is not needed)."""
    model_dir = Path(model_dir)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    model = build_model(ModelConfig.from_dict(manifest["model_config"]))
    model.encoder.load_state_dict(_load_script(model_dir / "encoder.pt").state_dict())
    decoder = ImageDecoder(model.decoder)
    decoder.load_state_dict(_load_script(model_dir / "decoder.pt").state_dict())
    return model.eval()


def rescript(model_dir: Path, x_check: torch.Tensor) -> dict:
    """Script an export again with this code (same weights), in place.

    For changes to the modules' code that keep their parameters and outputs
    (a faster layer): the new files must answer as the old ones within
    PARITY_TOL on `x_check`, and the manifest keeps everything but the files'
    sha256, the parity figures and the torch version.
    """
    model_dir = Path(model_dir)
    old = {f: _load_script(model_dir / f) for f in ("encoder.pt", "decoder.pt")}
    encoder, decoder, diffs = script_and_check(model_from_export(model_dir), x_check)
    with torch.inference_mode():
        z = old["encoder.pt"](x_check)
        z = z[0] if isinstance(z, tuple) else z
        drift = {
            "encoder": _max_diff(old["encoder.pt"](x_check), encoder(x_check)),
            "decoder": _max_diff(old["decoder.pt"](z), decoder(z)),
        }
    for part, diff in drift.items():
        if not diff <= PARITY_TOL:
            raise ExportError(f"re-scripted {part} differs from the old file by {diff:.3g}")
    for file, module in (("encoder.pt", encoder), ("decoder.pt", decoder)):
        if not _same_code(old[file], module):  # else keep the file: no churn in git
            module.save(str(model_dir / file))
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["parity_max_abs_diff"] = diffs
    manifest["torch_version"] = torch.__version__
    manifest["files"] = {f: sha256_file(model_dir / f) for f in ("encoder.pt", "decoder.pt")}
    write_manifest(model_dir / "manifest.json", manifest)
    return drift


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Export runs/<name> as TorchScript + manifest.")
    p.add_argument("--run", type=Path)
    p.add_argument("--out", type=Path)
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
            data = load_dataset(manifest["dataset"]["name"])
            drift = rescript(model_dir, to_float(data.test.images[:256]))
            print(f"re-scripted {model_dir}: max change {drift}")
        return
    if a.run is None or a.out is None:
        p.error("--run and --out (or --rescript)")
    m = export_run(load_run(a.run), a.out)
    print(
        f"exported {a.out}: {m['kind']} latent {m['latent_dim']}, parity {m['parity_max_abs_diff']}"
    )


if __name__ == "__main__":
    main()
