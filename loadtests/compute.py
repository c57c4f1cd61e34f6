"""The compute ceiling: in-process TorchScript throughput and latency, no server, no HTTP.

Items/s and the median time of one call (the model's own time, what a lone
request cannot go below) of the exported encoder and decoder at a given batch
size and number of torch threads, under `torch.inference_mode()` as the workers run them, on real
Fashion-MNIST test images (encoder) and their codes (decoder), with the same
allocator setting as the workers (`handlers.device.keep_freed_memory`), so the
ceiling is the model's best in-process speed on this machine. `score` is the
score operation's model work on the same images (`handlers.calibration.run_model`:
encoder, decoder at z_mean, the statistics and each image's PNG length).

    python -m loadtests.compute [--model fashion-vae] [--batch 64] [--seconds 3]

measures only score against encode, 1 thread, at one batch size: the model work
(`ceilings`) and whole requests through the engine (`operations`: a binary v2
request of `batch` UINT8 images, parse -> run -> respond).
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from handlers.calibration import run_model
from handlers.device import keep_freed_memory, placement
from handlers.engine import Engine
from handlers.operations import ModelInfo, load_script
from handlers.options import HandlerOptions
from handlers.readers import RawRequest
from loadtests import payloads
from paths import STORE


def load(model_dir: Path, file: str) -> torch.jit.ScriptModule:
    """An export (`encoder.pt`, `decoder.pt`) as a worker loads it, on the CPU."""
    cpu = placement(None, HandlerOptions(), cuda_available=False)
    return load_script(model_dir, ModelInfo.from_dir(model_dir), file, cpu)


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
    """{"items_per_s"|"p50_ms": {"encoder"|"decoder"|"score": {threads: {batch: value}}}}.

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
    mods = (("encoder", encoder, x_img), ("decoder", decoder, z), ("score", score, x_img))
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


def operations(model_dir: Path, batch: int = 64, seconds: float = 2.0) -> dict:
    """Items/s of whole encode and score requests in-process (1 thread): the engine on a
    binary v2 request of `batch` test images, as a worker handles it."""
    images = payloads.test_images()[:batch]
    head = {
        "inputs": [
            {
                "name": "image",
                "shape": list(images.shape),
                "datatype": "UINT8",
                "parameters": {"binary_data_size": images.nbytes},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    text = json.dumps(head).encode()
    headers = {"explain": "False", "inference-header-content-length": str(len(text))}
    raw = RawRequest(text + images.tobytes(), "application/octet-stream", "v2", headers)
    out, before = {}, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for op in ("encode", "score"):
            engine = Engine.from_dir(model_dir, op, HandlerOptions(cpu_threads=1))
            assert engine.handle([raw])[0][0].status == 200
            out[op] = measure(lambda _, e=engine: e.handle([raw]), images, seconds)[0]
    finally:
        torch.set_num_threads(before)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="score against encode, in-process, 1 thread")
    p.add_argument("--model", default="fashion-vae")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seconds", type=float, default=3.0)
    a = p.parse_args(argv)
    model_dir = STORE / a.model
    model = ceilings(model_dir, (a.batch,), (1,), a.seconds)["items_per_s"]
    whole = operations(model_dir, a.batch, a.seconds)
    enc, score = model["encoder"][1][a.batch], model["score"][1][a.batch]
    print(f"{a.model}, batch {a.batch}, 1 thread (items/s):")
    print(f"  model work: encoder {enc:.0f}, score {score:.0f} ({score / enc:.2f} of encode)")
    print(
        f"  whole v2 requests through the engine: encode {whole['encode']:.0f}, "
        f"score {whole['score']:.0f} ({whole['score'] / whole['encode']:.2f} of encode)"
    )


if __name__ == "__main__":
    main()
