"""Test-split metrics, per image, in nats: `python -m training.evaluate --run runs/<name>`.

Writes `metrics.json` into the run directory:
- neg_elbo, recon, kl: one reparameterized sample per image, BCE summed over
  pixels (the pytorch/examples `vae/main.py` test loss), beta = 1;
- mse_per_pixel: squared error of decode(z_mean) against the input;
- nll: importance-sampled estimate of -log p(x) with k samples from q(z|x)
  (Burda et al.), log p(x) ~= logsumexp_k[log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k;
- knn5_accuracy: a 5-nearest-neighbour classifier (Euclidean) fitted on the
  training split's z_mean, scored on the test split's z_mean (null for data
  without labels: skipped, not guessed);
- active_units: latent dims whose z_mean varies across the test set (Cov > 0.01).
For an AE the VAE-only terms (neg_elbo, kl, nll) are null.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from training.data import to_float
from training.dataset import Dataset
from training.losses import (
    gaussian_log_prob,
    kl_to_standard_normal,
    reconstruction,
    reparameterize,
)
from training.models import Autoencoder, encode_all
from training.runs import Run, load_run

ACTIVE_UNIT_THRESHOLD = 0.01


@torch.inference_mode()
def elbo_terms(model: Autoencoder, x: torch.Tensor, seed: int = 0, batch: int = 1000) -> dict:
    """Mean per-image BCE reconstruction, KL, negative ELBO and MSE per pixel."""
    gen = torch.Generator().manual_seed(seed)
    recon = kl = sq = 0.0
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        if model.cfg.kind == "vae":
            mean, log_var = model.encoder(xb)
            z = reparameterize(mean, log_var, gen)
            kl += kl_to_standard_normal(mean, log_var).sum().item()
        else:
            mean = z = model.encoder(xb)
        recon += reconstruction(model.decoder(z), xb, "bce").sum().item()
        sq += (torch.sigmoid(model.decoder(mean)) - xb).pow(2).sum().item()
    n = len(x)
    is_vae = model.cfg.kind == "vae"
    return {
        "recon": recon / n,
        "kl": kl / n if is_vae else None,
        "neg_elbo": (recon + kl) / n if is_vae else None,
        "mse_per_pixel": sq / x.numel(),
    }


@torch.inference_mode()
def importance_nll(
    model: Autoencoder, x: torch.Tensor, k: int = 500, seed: int = 0, chunk: int = 100
) -> float:
    """Mean importance-sampled -log p(x) in nats with k samples per image (VAE only)."""
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for i in tqdm(range(0, len(x), chunk), desc=f"NLL k={k}", leave=False, disable=None):
        xb = x[i : i + chunk]
        mean, log_var = model.encoder(xb)
        log_w = []
        for j in range(0, k, 50):  # samples in groups to bound memory
            s = min(50, k - j)
            m, lv = mean.unsqueeze(0).expand(s, -1, -1), log_var.unsqueeze(0).expand(s, -1, -1)
            z = reparameterize(m, lv, gen)  # (s, B, D)
            logits = model.decoder(z.reshape(-1, z.shape[-1])).reshape(s, len(xb), -1)
            target = xb.flatten(1).expand(s, -1, -1)
            log_px_z = -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)
            log_pz = gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
            log_qz = gaussian_log_prob(z, m, lv)
            log_w.append(log_px_z + log_pz - log_qz)
        log_px = torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)
        total += -log_px.sum().item()
    return total / len(x)


def knn_accuracy(
    train_z: torch.Tensor,
    train_y: torch.Tensor,
    test_z: torch.Tensor,
    test_y: torch.Tensor,
    k: int = 5,
    num_classes: int = 10,
) -> float:
    """Majority vote of the k nearest training codes; ties go to the nearer neighbour."""
    correct = 0
    for i in range(0, len(test_z), 1000):
        d = torch.cdist(test_z[i : i + 1000].double(), train_z.double())
        idx = d.topk(k, largest=False).indices  # (B, k), nearest first
        votes = torch.nn.functional.one_hot(train_y[idx].long(), num_classes).double()
        # weight 1 per vote plus a tiny rank bonus that only breaks ties
        votes *= (1 + 1e-3 * torch.arange(k, 0, -1, dtype=torch.double) / k).view(1, k, 1)
        pred = votes.sum(1).argmax(1)
        correct += (pred == test_y[i : i + 1000].long()).sum().item()
    return correct / len(test_z)


def active_units(z_mean: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    return int((z_mean.double().var(dim=0) > threshold).sum())


def evaluate(
    model: Autoencoder,
    data: Dataset,
    nll_samples: int = 500,
    nll_images: int | None = None,
    seed: int = 0,
) -> dict:
    """All metrics on the full test split (NLL on the first `nll_images`, default all)."""
    model.eval()
    start = time.time()
    x_test = to_float(data.test.images)
    x_train = to_float(data.train.images)
    metrics: dict = {"dataset": data.name, "test_images": len(x_test)}
    metrics.update(elbo_terms(model, x_test, seed))
    z_test, z_train = encode_all(model, x_test), encode_all(model, x_train)
    metrics["knn5_accuracy"] = (
        knn_accuracy(
            z_train,
            torch.tensor(data.train.labels),
            z_test,
            torch.tensor(data.test.labels),
            num_classes=len(data.class_names),
        )
        if data.labelled
        else None
    )
    metrics["active_units"] = active_units(z_test)
    metrics["latent_dim"] = model.cfg.latent_dim
    if model.cfg.kind == "vae" and nll_samples > 0:
        n = len(x_test) if nll_images is None else min(nll_images, len(x_test))
        metrics["nll"] = importance_nll(model, x_test[:n], nll_samples, seed)
        metrics["nll_samples"], metrics["nll_images"] = nll_samples, n
    else:
        metrics["nll"] = None
    metrics["eval_seconds"] = round(time.time() - start, 1)
    return metrics


def evaluate_run(run: Run, nll_samples: int = 500, nll_images: int | None = None) -> dict:
    """Evaluate a loaded run; also writes its metrics.json."""
    metrics = evaluate(run.model, run.data, nll_samples, nll_images, seed=run.config.seed)
    metrics["best_epoch"] = run.checkpoint["epoch"]
    history = run.path / "history.json"
    if history.exists():
        rows = json.loads(history.read_text())
        metrics["train_seconds"] = round(sum(r["seconds"] for r in rows), 1)
        metrics["epochs"] = len(rows)
    (run.path / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Evaluate runs/<name> on the test split.")
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--nll-samples", type=int, default=500, help="k for the NLL; 0 skips it")
    p.add_argument("--nll-images", type=int, default=None, help="NLL on the first N test images")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(json.dumps(evaluate_run(load_run(a.run), a.nll_samples, a.nll_images), indent=2))


if __name__ == "__main__":
    main()
