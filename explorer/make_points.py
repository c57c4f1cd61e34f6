"""Write the explorer's scatter: a labelled image set encoded through the service.

    python -m explorer.make_points [--url http://127.0.0.1:8080] [--model fashion-vae-2d]
    python -m explorer.make_points --model cats-vae-2d --images photos/ --dataset "my photos"

(`make explorer-points`, with `make serve` running.) Encodes the images with
`LatentClient` (by default the 10,000 Fashion-MNIST test images; `--images` takes
an IDX images file with its labels file beside it, or a folder with one
sub-folder per class) and writes explorer/data/<model>.json: z_mean rounded to 3
decimals, the labels, the class names, the model's image shape as the server
gives it (the client converts the images to it: grayscale or colour, its size),
and the sha256 of the encoder that produced them (from
model_store/<model>/manifest.json, when the model is there), so a test can tell
when the shipped file is stale.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from client import LatentClient
from client.inputs import as_items, folder_images, idx_labels_path, is_idx, read_idx
from paths import EXPLORER, FASHION_TEST_IMAGES, STORE

COMMAND = "make explorer-points"


def encoder_sha256(model: str, store: Path = STORE) -> str | None:
    path = store / model / "manifest.json"
    if not path.exists():  # a model registered elsewhere: nothing to compare with
        print(f"note: {path} not found, the points file records no encoder sha256")
        return None
    return json.loads(path.read_text())["files"]["encoder.pt"]


def class_names() -> list[str]:
    from training.dataset import CLASS_NAMES  # the project's one list (a dev tool)

    return CLASS_NAMES["fashion-mnist"]


def read_labelled(images: Path) -> tuple[object, np.ndarray, list[str] | None]:
    """(the images for the client, integer labels, class names or None for the default)."""
    if images.is_dir():  # one sub-folder per class, as an ImageFolder
        files = folder_images(images)
        names = [str(p.parent.relative_to(images)) for p in files]
        classes = sorted(set(names))
        return files, np.asarray([classes.index(n) for n in names]), classes
    if not is_idx(images):
        raise SystemExit(f"{images}: give an IDX images file or a folder of class sub-folders")
    labels_path = idx_labels_path(images)
    if labels_path is None:
        raise SystemExit(f"{images}: no labels file beside it")
    return read_idx(images), read_idx(labels_path), None


def build(
    url: str,
    model: str,
    store: Path = STORE,
    images: Path = FASHION_TEST_IMAGES,
    dataset: str | None = None,
) -> dict:
    x, labels, classes = read_labelled(Path(images))
    if len(as_items(x)) != len(labels):
        raise SystemExit(f"{images}: {len(labels)} labels for {len(as_items(x))} images")
    with LatentClient(url, model=model) as client:
        info = client.model_info("encode")
        start = time.perf_counter()
        z = client.encode(x).z_mean
        took = time.perf_counter() - start
    if z.shape[1] != 2:
        raise SystemExit(f"{model} has a {z.shape[1]}-D latent space; the explorer needs 2-D")
    c, h, w = info.image_shape
    print(
        f"encoded {len(z)} images with {model} ({c}x{h}x{w} {info.mode}) in {took:.1f} s "
        f"({len(z) / took:.0f} items/s)"
    )
    default = Path(images) == FASHION_TEST_IMAGES
    return {
        "model": model,
        "dataset": dataset or ("fashion-mnist test" if default else Path(images).name),
        "classes": classes if classes is not None else class_names(),
        "image_shape": list(info.image_shape),
        "encoder_sha256": encoder_sha256(model, store),
        "generated_by": COMMAND if default else "python -m explorer.make_points",
        "x": np.round(z[:, 0].astype(np.float64), 3).tolist(),
        "y": np.round(z[:, 1].astype(np.float64), 3).tolist(),
        "label": labels.astype(int).tolist(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--model", default="fashion-vae-2d")
    p.add_argument("--store", default=str(STORE), help="where <model>/ is")
    p.add_argument(
        "--images",
        default=str(FASHION_TEST_IMAGES),
        help="IDX images file (labels beside it) or a folder of class sub-folders "
        "(default: the Fashion-MNIST test set)",
    )
    p.add_argument("--dataset", help="the image set's name on the page")
    p.add_argument("--out", help="default explorer/data/<model>.json")
    a = p.parse_args(argv)
    out = Path(a.out or EXPLORER / "data" / f"{a.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    points = build(a.url, a.model, Path(a.store), Path(a.images), a.dataset)
    out.write_text(json.dumps(points, separators=(",", ":")) + "\n")
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
