"""The compute ceiling: in-process TorchScript throughput and latency, no server, no HTTP.

Items/s and the median time of one call (the model's own time, what a lone
request cannot go below) of the exported encoder and decoder at a given batch
size and number of torch threads, under `torch.inference_mode()` as the workers run them, on real
Fashion-MNIST test images (encoder) and their codes (decoder), with the same
allocator setting as the workers (`handlers.device.keep_freed_memory`), so the
ceiling is the model's best in-process speed on this machine.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from handlers.device import keep_freed_memory, placement
from handlers.operations import ModelInfo, load_script
from handlers.options import HandlerOptions
from loadtests import payloads


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
    """{"items_per_s"|"p50_ms": {"encoder"|"decoder": {threads: {batch: value}}}}.

    Restores torch's thread count.
    """
    keep_freed_memory()
    images = payloads.test_images()[:256].astype(np.float32) / 255.0
    x_img = torch.from_numpy(images)[:, None]
    encoder, decoder = load(model_dir, "encoder.pt"), load(model_dir, "decoder.pt")
    with torch.inference_mode():
        out = encoder(x_img)
    z = (out[0] if isinstance(out, tuple) else out).contiguous()
    before = torch.get_num_threads()
    result: dict = {k: {"encoder": {}, "decoder": {}} for k in ("items_per_s", "p50_ms")}
    try:
        for t in threads:
            torch.set_num_threads(t)
            for name, module, x in (("encoder", encoder, x_img), ("decoder", decoder, z)):
                got = {b: measure(module, x[:b].contiguous(), seconds) for b in batches}
                result["items_per_s"][name][t] = {b: v[0] for b, v in got.items()}
                result["p50_ms"][name][t] = {b: v[1] for b, v in got.items()}
    finally:
        torch.set_num_threads(before)
    return result
