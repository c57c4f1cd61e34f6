"""Calibrate the `score` operation of exported models, and evaluate it out of distribution.

    python -m serving.calibrate [--store model_store] [--models NAME ...] [--no-evaluate]

Calibration runs the score operation's own computation
(`handlers.calibration.run_model`) over the validation split the manifest's
`train_config` names (`training.data.train_val_split`: the images that chose
the checkpoint, never the test split), through the exported TorchScript files
as a worker loads them, and writes `calibration` into each `manifest.json`
(held-out score quantiles, the statistics' mean and precision matrix). No
retraining; the sha256 of the TorchScript files do not change.

Evaluation then scores the in-distribution test split and the other dataset's
test split (Fashion-MNIST models: MNIST digits; MNIST models: Fashion-MNIST)
through the real score engine (`Engine.from_dir(..., "score")`) and writes
AUROC, AUPRC and the realised false-positive rate at the 1 % threshold of every
score to `docs/results/scores.{json,md}`, and their histograms to
`docs/figures/scores.png`.

It lives on the serving side because it computes exactly what the handlers
compute (training/ imports no handlers); like the load tests it reads the
datasets through `training.data`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from handlers.calibration import fit_calibration, run_model, stat_names
from handlers.device import placement
from handlers.engine import Engine
from handlers.manifest import MANIFEST, ModelInfo
from handlers.metrics import Recorder
from handlers.model import load_module
from handlers.options import HandlerOptions
from paths import FIGURES, RESULTS, SHIPPED_MODELS, STORE
from training.artifacts import write_manifest
from training.config import TrainConfig, validation_split
from training.data import load_dataset

FPR = 0.01  # the evaluated threshold: the default `fpr` of a request
OTHER = {"fashion-mnist": "mnist", "mnist": "fashion-mnist"}
CHUNK = 256


def model_input(images: np.ndarray, scale: float) -> torch.Tensor:
    """(n, C, H, W) uint8 -> the float32 model input, uint8 / scale clipped to [0, 1] (as
    `handlers.wire.images.scale_pixels` gives it)."""
    x = images.astype(np.float32) / np.float32(scale)
    if scale < 255:  # only then can uint8 / scale exceed 1
        np.clip(x, 0.0, 1.0, out=x)
    return torch.from_numpy(x)


def model_images(images: np.ndarray, info: ModelInfo) -> np.ndarray:
    """Images as (n, C, H, W) uint8 of the model's shape; a grayscale model also takes
    (n, H, W) (the shape the MNIST-style datasets load as)."""
    images = np.asarray(images)
    if images.ndim == 3 and info.channels == 1:
        images = images[:, None]
    if images.shape[1:] != info.image_shape:
        raise ValueError(
            f"images of shape {images.shape[1:]} for a model of image shape {info.image_shape}"
        )
    return images


def statistics(model_dir: Path, images: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(n, C, H, W) uint8 (`model_images`) -> the score statistics of each image and the
    encoder's outputs (`latent_code`, (n, K)), as a worker computes them."""
    info = ModelInfo.from_dir(model_dir)
    images = model_images(images, info)
    cpu = placement(None, HandlerOptions(), cuda_available=False)
    encoder, decoder = (load_module(model_dir, info, f, cpu) for f in ("encoder.pt", "decoder.pt"))
    rows, codes = [], []
    with torch.inference_mode():
        for i in range(0, len(images), CHUNK):
            x = model_input(images[i : i + CHUNK], info.scale)
            table, code, _ = run_model(encoder, decoder, x, info.scale, info.kind)
            rows.append(table.float())  # float32 on the way, as a worker's outputs
            codes.append(code)
    table = torch.cat(rows).double().numpy()
    stats = {k: table[:, j] for j, k in enumerate(stat_names(info.kind))}
    return stats, torch.cat(codes).double().numpy()


def calibrate(model_dir: Path, images: np.ndarray, held_out: dict | None = None) -> dict:
    """Fit the calibration on held-out in-distribution images ((n, C, H, W) uint8, see
    `model_images`); write it into the manifest."""
    path = Path(model_dir) / MANIFEST
    manifest = json.loads(path.read_text())
    cal = fit_calibration(manifest["kind"], *statistics(model_dir, images))
    cal["held_out"] |= held_out or {}
    manifest["calibration"] = cal
    write_manifest(path, manifest)
    return cal


def validation_images(manifest: dict) -> tuple[np.ndarray, dict]:
    """The validation split of the manifest's training run, and how it was drawn."""
    cfg = TrainConfig.from_dict(manifest["train_config"])
    data = cfg.load_data()  # IDX or a folder of the user's images, as the run read it
    _, val = validation_split(cfg, data)
    how = f"validation split: train_val_split(train, {cfg.val_size}, seed {cfg.seed})"
    held_out = {"dataset": data.name, "split": how, "dataset_sha256": data.checksum}
    return val.images, held_out  # (n, H, W) from IDX, (n, C, H, W): `model_images` takes both


# ---- evaluation ------------------------------------------------------------------------
def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(score of an outside image > score of an inside one), ties counted half."""
    s = np.concatenate([inside, outside])
    order = np.argsort(s, kind="mergesort")
    _, inverse, counts = np.unique(s[order], return_inverse=True, return_counts=True)
    ranks = np.empty(len(s))
    ranks[order] = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    n_in, n_out = len(inside), len(outside)
    return float((ranks[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))


def auprc(inside: np.ndarray, outside: np.ndarray) -> float:
    """Average precision with the outside images as positives (highest scores first)."""
    s = np.concatenate([inside, outside])
    y = np.concatenate([np.zeros(len(inside)), np.ones(len(outside))])
    y = y[np.argsort(-s, kind="mergesort")]
    hits = np.cumsum(y)
    return float((hits / np.arange(1, len(y) + 1))[y == 1].mean())


def evaluate(model_dir: Path, inside: np.ndarray, outside: np.ndarray) -> dict:
    """Each score of the served engine on both test sets ((n, C, H, W) uint8, see
    `model_images`): AUROC, AUPRC, realised FPR."""
    engine = Engine.from_dir(model_dir, "score", HandlerOptions(chunk_size=CHUNK))
    op, got = engine.op, {}
    for name, images in (("in", inside), ("out", outside)):
        x = model_input(model_images(images, op.info), op.info.scale)
        _, scores, p = op.evaluate_outputs(engine.run_chunks(x, Recorder()))
        got[name] = (scores, p)
    rows = {}
    for j, score in enumerate(op.scores):
        s_in, s_out = got["in"][0][:, j], got["out"][0][:, j]
        rows[score] = {
            "auroc": auroc(s_in, s_out),
            "auprc": auprc(s_in, s_out),
            "fpr_at_1pct": float((got["in"][1][:, j] < FPR).mean()),
            "tpr_at_1pct": float((got["out"][1][:, j] < FPR).mean()),
        }
    return {"rows": rows, "scores": {k: (v[0].tolist()) for k, v in got.items()}}


def markdown(results: dict) -> str:
    lines = [
        "| model | in → out | score | AUROC | AUPRC | FPR at 1 % (in test) | TPR at 1 % |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model, r in results.items():
        for score, v in r["rows"].items():
            lines.append(
                f"| {model} | {r['in']} → {r['out']} | {score} | {v['auroc']:.4f} | "
                f"{v['auprc']:.4f} | {100 * v['fpr_at_1pct']:.2f} % | "
                f"{100 * v['tpr_at_1pct']:.1f} % |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results)
    cols = max(len(r["rows"]) for r in results.values())
    size = (3.7 * cols, 2.3 * len(models))
    fig, axes = plt.subplots(len(models), cols, figsize=size, squeeze=False)
    for row, model in zip(axes, models, strict=True):
        r = results[model]
        for j, (ax, score) in enumerate(zip(row, r["rows"], strict=True)):
            s_in, s_out = (np.asarray(r["scores"][k])[:, j] for k in ("in", "out"))
            if score in ("mahalanobis", "latent"):  # heavy right tails: log axes show both
                s_in, s_out = np.log10(s_in), np.log10(s_out)
                score = f"log10 {score}"
            lo, hi = np.percentile(np.concatenate([s_in, s_out]), [0.5, 99.5])
            bins = np.linspace(lo, hi, 60)
            ax.hist(s_in, bins, alpha=0.6, density=True, label=f"{r['in']} test (in)")
            ax.hist(s_out, bins, alpha=0.6, density=True, label=f"{r['out']} test (out)")
            auc = r["rows"][score.removeprefix("log10 ")]["auroc"]
            ax.set_title(f"{model}: {score} (AUROC {auc:.4f})", fontsize=9)
            ax.tick_params(labelsize=7)
        row[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Calibrate and evaluate the score operation.")
    p.add_argument("--store", type=Path, default=STORE)
    p.add_argument("--models", nargs="+", default=list(SHIPPED_MODELS))
    p.add_argument("--no-evaluate", action="store_true", help="calibrate only")
    a = p.parse_args(argv)
    torch.set_num_threads(1)  # the workers' setting; the numbers do not depend on it
    results, tests = {}, {}
    for model in a.models:
        model_dir, start = a.store / model, time.time()
        manifest = json.loads((model_dir / MANIFEST).read_text())
        images, held_out = validation_images(manifest)
        calibrate(model_dir, images, held_out)
        took = time.time() - start
        print(f"{model}: calibrated on {len(images)} images, {held_out['split']} ({took:.0f} s)")
        if a.no_evaluate:
            continue
        inside = manifest["train_config"]["dataset"]
        for name in (inside, OTHER[inside]):
            tests.setdefault(name, load_dataset(name).test.images[:, None])
        r = evaluate(model_dir, tests[inside], tests[OTHER[inside]])
        results[model] = {"in": inside, "out": OTHER[inside], **r}
        print(markdown({model: results[model]}), end="")
    if results and (a.store.resolve() != STORE or set(results) != set(SHIPPED_MODELS)):
        print(
            "docs/results and the figure are written only for every shipped model in model_store/"
        )
    elif results:
        summary = {m: {k: v for k, v in r.items() if k != "scores"} for m, r in results.items()}
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "scores.json").write_text(json.dumps(summary, indent=2) + "\n")
        (RESULTS / "scores.md").write_text(markdown(results))
        plot(results, FIGURES / "scores.png")
        print(f"wrote {RESULTS / 'scores.json'}, scores.md, {FIGURES / 'scores.png'}")


if __name__ == "__main__":
    main()
