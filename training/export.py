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
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from training.data import pixel_scaling, to_float
from training.models import Autoencoder, ImageDecoder
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
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Export runs/<name> as TorchScript + manifest.")
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    m = export_run(load_run(a.run), a.out)
    print(
        f"exported {a.out}: {m['kind']} latent {m['latent_dim']}, parity {m['parity_max_abs_diff']}"
    )


if __name__ == "__main__":
    main()
