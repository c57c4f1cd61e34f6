"""The compute ceiling: in-process TorchScript throughput and latency, no server, no HTTP.

Items/s and the median time of one call (the model's own time, what a lone
request cannot go below) of the exported encoder and decoder at a given batch
size and number of torch threads, under `torch.inference_mode()` as the workers run them, on real
Fashion-MNIST test images (encoder) and their codes (decoder), with the same
allocator setting as the workers (`handlers.device.keep_freed_memory`), so the
ceiling is the model's best in-process speed on this machine. `score` is the
score operation's model work on the same images (`handlers.calibration.run_model`:
encoder, decoder at z_mean, the statistics and each image's PNG length);
`score_latent` that of a `mode: latent` request (the encoder alone).

    python -m loadtests.bench.compute [--model fashion-vae] [--batch 64] [--seconds 3]

(`make bench-score`) measures only score against encode, 1 thread, at one batch
size, the calls alternating (`score_vs_encode`): the model work, and whole requests
through the engine (a binary v2 request of `batch` UINT8 images, parse -> run ->
respond).

    python -m loadtests.bench.compute [--model fashion-vae] --formats   (make bench-formats)

measures the two model formats against each other (`formats`): the TorchScript
files and the AOTInductor packages (`serving/packages.py`, compiled on first
use and cached), encoder and decoder, 1 thread, batch 1, 8 and 64, the calls
alternating; `make bench` reports the same.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from client.v2 import write_infer_request
from handlers.calibration import latent_code, run_model
from handlers.device import keep_freed_memory, placement
from handlers.engine import Engine
from handlers.manifest import ModelInfo
from handlers.model import load_module
from handlers.options import HandlerOptions
from handlers.wire.request import RawRequest, media_type
from loadtests import payloads
from paths import STORE


def load(model_dir: Path, file: str) -> torch.jit.ScriptModule:
    """An export (`encoder.pt`, `decoder.pt`) as a worker loads it, on the CPU."""
    cpu = placement(None, HandlerOptions(), cuda_available=False)
    return load_module(model_dir, ModelInfo.from_dir(model_dir), file, cpu)


def measure(
    module, x: torch.Tensor, seconds: float = 2.0, min_calls: int = 5
) -> tuple[float, float]:
    """Repeated calls on the same batch for at least `seconds`: (items/s, p50 ms per call)."""
    times = []
    with torch.inference_mode():
        for _ in range(3):  # TorchScript profiles and optimises on its first calls
            module(x)
        start = time.perf_counter()
        while len(times) < min_calls or time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
    return len(times) * len(x) / elapsed, float(np.median(times)) * 1000.0


def ceilings(
    model_dir: Path,
    batches: tuple[int, ...] = (1, 64),
    threads: tuple[int, ...] = (1,),
    seconds: float = 2.0,
) -> dict:
    """{"items_per_s"|"p50_ms": {"encoder"|"decoder"|"score"|"score_latent": {threads:
    {batch: value}}}}.

    Restores torch's thread count.
    """
    keep_freed_memory()
    images = payloads.test_images()[:256].astype(np.float32) / 255.0
    x_img = torch.from_numpy(images)[:, None]
    encoder, decoder = load(model_dir, "encoder.pt"), load(model_dir, "decoder.pt")
    info = ModelInfo.from_dir(model_dir)
    score = partial(run_model, encoder, decoder, scale=info.scale, kind=info.kind)
    with torch.inference_mode():
        out = encoder(x_img)
    z = (out[0] if isinstance(out, tuple) else out).contiguous()
    before = torch.get_num_threads()
    mods = (
        ("encoder", encoder, x_img),
        ("decoder", decoder, z),
        ("score", score, x_img),
        ("score_latent", lambda x: latent_code(encoder(x)), x_img),
    )
    result: dict = {k: {m[0]: {} for m in mods} for k in ("items_per_s", "p50_ms")}
    try:
        for t in threads:
            torch.set_num_threads(t)
            for name, module, x in mods:
                got = {b: measure(module, x[:b].contiguous(), seconds) for b in batches}
                result["items_per_s"][name][t] = {b: v[0] for b, v in got.items()}
                result["p50_ms"][name][t] = {b: v[1] for b, v in got.items()}
    finally:
        torch.set_num_threads(before)
    return result


def paired(calls: dict[str, tuple], seconds: float = 3.0) -> dict[str, float]:
    """{name: (fn, items)} -> {name: items/s}, the calls alternating, so that a
    neighbour's load on the machine slows each of them alike."""
    spent = dict.fromkeys(calls, 0.0)
    with torch.inference_mode():
        for fn, _ in calls.values():  # TorchScript profiles and optimises on its first calls
            for _ in range(3):
                fn()
        start, rounds = time.perf_counter(), 0
        while rounds < 5 or time.perf_counter() - start < seconds:
            for name, (fn, _) in calls.items():
                t0 = time.perf_counter()
                fn()
                spent[name] += time.perf_counter() - t0
            rounds += 1
    return {name: rounds * items / spent[name] for name, (_, items) in calls.items()}


def score_vs_encode(model_dir: Path, batch: int = 64, seconds: float = 3.0) -> dict:
    """Items/s of encode and score (both modes) on `batch` test images, in-process, 1
    thread (a worker's setting): the model work alone (encoder; score's forward), and
    whole binary v2 requests through the engine (parse -> run -> respond) as a worker
    runs them."""
    keep_freed_memory()
    images = payloads.test_images()[:batch]
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]

    def request(parameters: dict) -> RawRequest:  # binary UINT8 in, binary outputs
        body, http = write_infer_request({"image": images}, parameters)
        headers = {k.lower(): v for k, v in http.items()} | {"explain": "False"}
        return RawRequest(body, media_type(headers["content-type"]), "v2", headers)

    raw, latent = request({}), request({"mode": "latent"})
    enc = Engine.from_dir(model_dir, "encode", HandlerOptions())
    score = Engine.from_dir(model_dir, "score", HandlerOptions())
    for engine, r in ((enc, raw), (score, raw), (score, latent)):
        assert engine.handle([r])[0][0].status == 200
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {
            "model": paired(
                {
                    "encode": (partial(enc.op.module, x), batch),
                    "score": (partial(score.op.forward, x), batch),
                    "score_latent": (partial(score.op.forward, x, "latent"), batch),
                },
                seconds,
            ),
            "requests": paired(
                {
                    "encode": (partial(enc.handle, [raw]), batch),
                    "score": (partial(score.handle, [raw]), batch),
                    "score_latent": (partial(score.handle, [latent]), batch),
                },
                seconds,
            ),
        }
    finally:
        torch.set_num_threads(before)


def formats(model_dir: Path, batches=(1, 8, 64), seconds: float = 2.0) -> dict:
    """{"encoder"|"decoder": {batch: {"torchscript"|"aoti": items/s}}}, 1 thread, the
    two formats' calls alternating, on Fashion-MNIST test images and their codes."""
    from serving.packages import packaged_manifest, packages_for  # compiles on a cache miss

    keep_freed_memory()
    cpu = placement(None, HandlerOptions(), cuda_available=False)
    packages = packages_for(model_dir)
    aoti = ModelInfo.from_manifest(packaged_manifest(model_dir, packages))
    x = torch.from_numpy(payloads.test_images()[: max(batches)].astype(np.float32) / 255.0)
    mods = {}
    for part in ("encoder", "decoder"):
        mods[part] = {
            "torchscript": load(model_dir, f"{part}.pt"),
            "aoti": load_module(packages, aoti, f"{part}.pt2", cpu),
        }
    with torch.inference_mode():
        out = mods["encoder"]["torchscript"](x[:, None])
    inputs = {"encoder": x[:, None], "decoder": (out[0] if isinstance(out, tuple) else out)}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {
            part: {
                b: paired(
                    {
                        fmt: (partial(m, inputs[part][:b].contiguous()), b)
                        for fmt, m in mods[part].items()
                    },
                    seconds,
                )
                for b in batches
            }
            for part in mods
        }
    finally:
        torch.set_num_threads(before)


def formats_markdown(got: dict | None) -> list[str]:
    """`formats`' result as a Markdown table (rows: module x batch)."""
    if not got:
        return []
    lines = [
        "## Model formats (in-process, 1 thread, items/s, calls alternating)",
        "",
        "| module | batch | TorchScript | AOTInductor package | package / TorchScript |",
        "| --- | --- | --- | --- | --- |",
    ]
    for part, by_b in got.items():
        for b, v in by_b.items():
            ratio = v["aoti"] / v["torchscript"]
            lines.append(
                f"| {part} | {b} | {v['torchscript']:.0f} | {v['aoti']:.0f} | {ratio:.2f} |"
            )
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="score against encode, in-process, 1 thread")
    p.add_argument("--model", default="fashion-vae")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--formats", action="store_true", help="TorchScript against AOTInductor")
    a = p.parse_args(argv)
    if a.formats:
        print("\n".join(formats_markdown(formats(STORE / a.model, seconds=a.seconds))))
        return
    got = score_vs_encode(STORE / a.model, a.batch, a.seconds)
    print(f"{a.model}, batch {a.batch}, 1 thread, calls alternating (items/s):")
    for key, what in (("model", "model work"), ("requests", "whole v2 requests, engine")):
        e, sc, lat = (got[key][k] for k in ("encode", "score", "score_latent"))
        print(
            f"  {what}: encode {e:.0f}, score {sc:.0f} ({sc / e:.2f} of encode), "
            f"score mode latent {lat:.0f} ({lat / e:.2f} of encode)"
        )


if __name__ == "__main__":
    main()
