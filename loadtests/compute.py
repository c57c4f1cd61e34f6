"""The compute ceiling: in-process TorchScript throughput, no server, no HTTP.

Items/s of the exported encoder and decoder at a given batch size and number of
torch threads, under `torch.inference_mode()` as the workers run them, on real
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


def items_per_second(module, x: torch.Tensor, seconds: float = 2.0, min_calls: int = 5) -> float:
    """Repeated calls on the same batch for at least `seconds`; items / second."""
    with torch.inference_mode():
        for _ in range(3):  # TorchScript profiles and optimises on its first calls
            module(x)
        calls, start = 0, time.perf_counter()
        while calls < min_calls or time.perf_counter() - start < seconds:
            module(x)
            calls += 1
        elapsed = time.perf_counter() - start
    return calls * len(x) / elapsed


def ceilings(
    model_dir: Path,
    batches: tuple[int, ...] = (1, 64),
    threads: tuple[int, ...] = (1,),
    seconds: float = 2.0,
) -> dict:
    """{"encoder"|"decoder": {threads: {batch: items/s}}}; restores torch's thread count."""
    keep_freed_memory()
    images = payloads.test_images()[:256].astype(np.float32) / 255.0
    x_img = torch.from_numpy(images)[:, None]
    encoder, decoder = load(model_dir, "encoder.pt"), load(model_dir, "decoder.pt")
    with torch.inference_mode():
        out = encoder(x_img)
    z = (out[0] if isinstance(out, tuple) else out).contiguous()
    before = torch.get_num_threads()
    result: dict = {"encoder": {}, "decoder": {}}
    try:
        for t in threads:
            torch.set_num_threads(t)
            for name, module, x in (("encoder", encoder, x_img), ("decoder", decoder, z)):
                result[name][t] = {
                    b: items_per_second(module, x[:b].contiguous(), seconds) for b in batches
                }
    finally:
        torch.set_num_threads(before)
    return result
