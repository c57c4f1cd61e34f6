"""Encode and decode of a larger colour model beside the shipped 1x28x28 one, in-process.

    python -m loadtests.bench.shapes [--model fashion-vae] [--shape 3,64,64] [--batch 64]
        [--seconds 3]                                                    (make bench-shapes)

The shipped model, and the same recipe (its manifest's `model_config`: kind, body,
latent, widths) built for images of `--shape`, randomly initialised and exported
through the real export path (untrained: the time does not depend on the weights).
Measured at `--batch` items, 1 torch thread (a worker's setting), the calls of all
four alternating (`compute.paired`): the TorchScript module alone, and whole binary
v2 requests through the engine (UINT8 images in for encode, FP32 latents in for decode,
binary outputs: parse -> run -> respond, as a worker runs them). Writes
loadtests/results/shapes.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from client.v2 import write_infer_request
from handlers.device import keep_freed_memory
from handlers.engine import Engine
from handlers.manifest import ModelInfo
from handlers.options import HandlerOptions
from handlers.wire.inputs import image_dims
from handlers.wire.request import RawRequest, media_type
from loadtests.bench.compute import paired
from paths import LOADTEST_RESULTS, STORE
from training.export import export_model
from training.models import ModelConfig, build_model


def v2(arrays: dict[str, np.ndarray]) -> RawRequest:
    body, http = write_infer_request(arrays, {})
    headers = {k.lower(): v for k, v in http.items()} | {"explain": "False"}
    return RawRequest(body, media_type(headers["content-type"]), "v2", headers)


def same_recipe(model_dir: Path, shape: tuple[int, int, int], out: Path) -> Path:
    """`model_dir`'s model_config for images of `shape`, randomly initialised and exported."""
    cfg = json.loads((model_dir / "manifest.json").read_text())["model_config"]
    cfg = ModelConfig.from_dict(cfg | {"image_shape": list(shape)})
    torch.manual_seed(0)
    prior = None
    if cfg.kind == "ae":
        prior = {"type": "gaussian", "mean": [0.0] * cfg.latent_dim,
                 "cov": np.eye(cfg.latent_dim).tolist()}  # fmt: skip
    export_model(
        build_model(cfg),
        out,
        x_check=torch.rand(4, *shape),
        dataset={"name": "random"},
        code_prior=prior,
    )
    return out


def calls(model_dir: Path, batch: int) -> tuple[dict, dict]:
    """{name: (fn, items)} of the model alone and of whole requests, encode and decode."""
    info = ModelInfo.from_dir(model_dir)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, *image_dims(info.image_shape)), dtype=np.uint8)
    z = rng.normal(size=(batch, info.latent_dim)).astype(np.float32)
    enc = Engine.from_dir(model_dir, "encode", HandlerOptions())
    dec = Engine.from_dir(model_dir, "decode", HandlerOptions())
    x = torch.rand(batch, *info.image_shape)
    raw_enc, raw_dec = v2({"image": images}), v2({"z": z})
    for engine, raw in ((enc, raw_enc), (dec, raw_dec)):
        (reply,), _ = engine.handle([raw])
        assert reply.status == 200, reply.body[:300]
    model = {
        "encode": (partial(enc.op.module, x), batch),
        "decode": (partial(dec.op.module, torch.from_numpy(z)), batch),
    }
    requests = {
        "encode": (partial(enc.handle, [raw_enc]), batch),
        "decode": (partial(dec.handle, [raw_dec]), batch),
    }
    return model, requests


def measure_shapes(model: str, shape: tuple[int, int, int], batch: int, seconds: float) -> dict:
    keep_freed_memory()
    shipped = STORE / model
    label = "x".join(map(str, shape))
    with tempfile.TemporaryDirectory() as tmp:
        other = same_recipe(shipped, shape, Path(tmp) / label)
        base = ModelInfo.from_dir(shipped).image_shape
        names = {"x".join(map(str, base)): shipped, label: other}
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            model_calls, request_calls = {}, {}
            for name, d in names.items():
                m, r = calls(d, batch)
                model_calls |= {f"{name} {k}": v for k, v in m.items()}
                request_calls |= {f"{name} {k}": v for k, v in r.items()}
            got = {
                "model": paired(model_calls, seconds),
                "requests": paired(request_calls, seconds),
            }
        finally:
            torch.set_num_threads(before)
    return {
        "model": model,
        "shapes": list(names),
        "batch": batch,
        "threads": 1,
        "items_per_s": got,
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "command": f"python -m loadtests.bench.shapes --model {model} --shape "
        f"{','.join(map(str, shape))} --batch {batch} --seconds {seconds:g}",
    }


def markdown(r: dict) -> str:
    base, other = r["shapes"]
    lines = [
        f"# Image shapes: {other} beside {base} ({r['when']})",
        "",
        f"`{r['command']}`: {r['model']}'s recipe at both shapes, batch {r['batch']}, "
        f"{r['threads']} torch thread, calls alternating; items/s.",
        "",
        f"| | {base} | {other} | {other} ÷ {base} |",
        "| --- | ---: | ---: | ---: |",
    ]
    for kind in ("model", "requests"):
        for op in ("encode", "decode"):
            a, b = r["items_per_s"][kind][f"{base} {op}"], r["items_per_s"][kind][f"{other} {op}"]
            what = "TorchScript alone" if kind == "model" else "whole v2 binary requests"
            lines.append(f"| {op}, {what} | {a:,.0f} | {b:,.0f} | {b / a:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench.shapes", description=__doc__)
    p.add_argument("--model", default="fashion-vae")
    p.add_argument("--shape", default="3,64,64", help="C,H,W of the larger model")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seconds", type=float, default=3.0)
    a = p.parse_args(argv)
    shape = tuple(int(v) for v in a.shape.split(","))
    r = measure_shapes(a.model, shape, a.batch, a.seconds)
    LOADTEST_RESULTS.mkdir(parents=True, exist_ok=True)
    (LOADTEST_RESULTS / "shapes.json").write_text(json.dumps(r, indent=2) + "\n")
    (LOADTEST_RESULTS / "shapes.md").write_text(markdown(r))
    print(markdown(r), end="")


if __name__ == "__main__":
    main()
