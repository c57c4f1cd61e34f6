"""Write the explorer's scatter: the Fashion-MNIST test set encoded through the service.

    python -m explorer.make_points [--url http://127.0.0.1:8080] [--model fashion-vae-2d]

(`make explorer-points`, with `make serve` running.) Encodes the 10,000 test
images with `LatentClient` and writes explorer/data/<model>.json: z_mean rounded
to 3 decimals, the labels, the class names, and the sha256 of the encoder that
produced them (from model_store/<model>/manifest.json), so a test can tell when
the shipped file is stale.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from client import LatentClient
from client.inputs import idx_labels_path, read_idx
from paths import EXPLORER, FASHION_TEST_IMAGES, STORE

COMMAND = "make explorer-points"


def encoder_sha256(model: str, store: Path = STORE) -> str:
    manifest = json.loads((store / model / "manifest.json").read_text())
    return manifest["files"]["encoder.pt"]


def class_names() -> list[str]:
    from training.data import CLASS_NAMES  # the project's one list (imports torch: a dev tool)

    return CLASS_NAMES["fashion-mnist"]


def build(url: str, model: str, store: Path = STORE, images: Path = FASHION_TEST_IMAGES) -> dict:
    x = read_idx(images)
    labels_path = idx_labels_path(images)
    if labels_path is None:
        raise SystemExit(f"{images}: no labels file beside it")
    labels = read_idx(labels_path)
    with LatentClient(url, model=model) as client:
        start = time.perf_counter()
        z = client.encode(x).z_mean
        took = time.perf_counter() - start
    if z.shape[1] != 2:
        raise SystemExit(f"{model} has a {z.shape[1]}-D latent space; the explorer needs 2-D")
    print(f"encoded {len(z)} images with {model} in {took:.1f} s ({len(z) / took:.0f} items/s)")
    return {
        "model": model,
        "dataset": "fashion-mnist test",
        "classes": class_names(),
        "encoder_sha256": encoder_sha256(model, store),
        "generated_by": COMMAND,
        "x": np.round(z[:, 0].astype(np.float64), 3).tolist(),
        "y": np.round(z[:, 1].astype(np.float64), 3).tolist(),
        "label": labels.astype(int).tolist(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--model", default="fashion-vae-2d")
    p.add_argument("--store", default=str(STORE), help="where <model>/ is")
    p.add_argument("--out", help="default explorer/data/<model>.json")
    a = p.parse_args(argv)
    out = Path(a.out or EXPLORER / "data" / f"{a.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(build(a.url, a.model, Path(a.store)), separators=(",", ":")) + "\n")
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
