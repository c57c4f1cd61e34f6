"""Where and how a worker runs its model: device, precision, pinned memory, threads.

Pure functions of their inputs (TorchServe's `gpu_id`, CUDA availability and
the handler options), so every branch is unit-tested on a CPU-only machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
from dataclasses import dataclass

import torch

from handlers.options import HandlerOptions

log = logging.getLogger(__name__)


def choose_device(gpu_id: int | None, cuda_available: bool, cuda_count: int) -> str:
    """`cuda:<gpu_id>` when TorchServe assigned a GPU and CUDA is present, else `cpu`."""
    if gpu_id is None or not cuda_available:
        return "cpu"
    if not 0 <= gpu_id < cuda_count:
        raise ValueError(f"gpu_id {gpu_id} given but only {cuda_count} CUDA device(s) visible")
    return f"cuda:{gpu_id}"


def choose_dtype(device: str, half: bool) -> torch.dtype:
    """float16 only when asked for and on CUDA; CPU half kernels are slow or missing."""
    return torch.float16 if half and device.startswith("cuda") else torch.float32


def use_pinned_memory(device: str, pin_memory: bool) -> bool:
    """Pinned host memory only helps (and only works) with a CUDA device."""
    return pin_memory and device.startswith("cuda")


@dataclass(frozen=True)
class Placement:
    device: str
    dtype: torch.dtype
    pin_memory: bool

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """A float32 CPU batch -> the model's device and dtype."""
        if self.pin_memory:
            x = x.pin_memory()
        return x.to(self.device, self.dtype, non_blocking=self.pin_memory)

    def to_output(self, y: torch.Tensor) -> torch.Tensor:
        return y.to("cpu", torch.float32)


def placement(
    gpu_id: int | None,
    options: HandlerOptions,
    cuda_available: bool | None = None,
    cuda_count: int | None = None,
) -> Placement:
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if cuda_count is None:
        cuda_count = torch.cuda.device_count() if cuda_available else 0
    device = choose_device(gpu_id, cuda_available, cuda_count)
    if options.half and not device.startswith("cuda"):
        log.info("handler option half=true ignored on %s", device)
    return Placement(
        device=device,
        dtype=choose_dtype(device, options.half),
        pin_memory=use_pinned_memory(device, options.pin_memory),
    )


def set_cpu_threads(n: int) -> None:
    """Intra-op threads for this worker process; inter-op once, if still allowed."""
    torch.set_num_threads(n)
    # raises if already set, or once parallel work ran in this process
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # allocations below this come from the heap ...
TRIM_THRESHOLD = 128 * 1024 * 1024  # ... and up to this much freed heap stays mapped


def keep_freed_memory(libc_name: str | None = None) -> bool:
    """Make glibc keep freed memory in the process instead of returning it to the OS.

    A conv model's activations for a chunk of items are several MB. With
    glibc's defaults, its dynamic mmap and trim thresholds decide from the
    allocation history whether those blocks are unmapped (or the heap trimmed)
    after every call and faulted in again on the next: in the workers measured
    that meant page faults on every call and an encoder markedly slower per
    item than in a warm benchmark (docs/performance.md). With the mmap
    threshold at 32 MiB and the trim threshold at 128 MiB the working set stays
    mapped (a worker keeps at most 128 MiB of free heap). Returns False where
    mallopt is not available (not glibc); then nothing changes.
    """
    try:
        libc = ctypes.CDLL(libc_name or ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
