"""Device, precision, pinned memory and handler options: every branch, on CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from handlers.device import (
    Placement,
    choose_device,
    choose_dtype,
    keep_freed_memory,
    placement,
    set_cpu_threads,
    use_pinned_memory,
)
from handlers.options import HandlerOptions


@pytest.mark.parametrize(
    ("gpu_id", "cuda", "count", "want"),
    [
        (None, False, 0, "cpu"),  # TorchServe assigned no GPU, none present
        (None, True, 2, "cpu"),  # GPUs present but this worker got none
        (0, False, 0, "cpu"),  # GPU id from a GPU config, but no CUDA here
        (0, True, 1, "cuda:0"),
        (1, True, 2, "cuda:1"),
    ],
)
def test_choose_device(gpu_id, cuda, count, want):
    assert choose_device(gpu_id, cuda, count) == want


@pytest.mark.parametrize("gpu_id", [2, -1])
def test_choose_device_rejects_a_gpu_that_is_not_there(gpu_id):
    with pytest.raises(ValueError, match="CUDA device"):
        choose_device(gpu_id, True, 2)


@pytest.mark.parametrize(
    ("device", "half", "want"),
    [
        ("cpu", False, torch.float32),
        ("cpu", True, torch.float32),  # half is ignored on CPU
        ("cuda:0", False, torch.float32),
        ("cuda:0", True, torch.float16),
    ],
)
def test_choose_dtype(device, half, want):
    assert choose_dtype(device, half) is want


@pytest.mark.parametrize(
    ("device", "pin", "want"),
    [("cpu", False, False), ("cpu", True, False), ("cuda:0", False, False), ("cuda:0", True, True)],
)
def test_use_pinned_memory(device, pin, want):
    assert use_pinned_memory(device, pin) is want


def test_placement_on_this_machine_is_cpu_float32():
    p = placement(0, HandlerOptions(half=True, pin_memory=True), cuda_available=False)
    assert p == Placement("cpu", torch.float32, False)


def test_placement_for_a_gpu_worker_without_touching_cuda():
    opts = HandlerOptions(half=True, pin_memory=True)
    p = placement(1, opts, cuda_available=True, cuda_count=2)
    assert p == Placement("cuda:1", torch.float16, True)


def test_placement_moves_and_casts_inputs():
    x = torch.rand(3, 4)
    y = Placement("cpu", torch.float16, False).to_input(x)
    assert y.dtype is torch.float16 and y.device.type == "cpu"
    back = Placement("cpu", torch.float16, False).to_output(y)
    assert back.dtype is torch.float32
    assert torch.allclose(back, x, atol=1e-3)


def test_cpu_threads():
    before = torch.get_num_threads()
    try:
        set_cpu_threads(1)
        assert torch.get_num_threads() == 1
        set_cpu_threads(2)  # a second call must not raise (inter-op already fixed)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# What a conv model's forward pass does to the heap: a few multi-MB activations
# alive at once, then all freed. Run in a fresh process; prints minor page faults
# per round after two warm-up rounds.
FAULTS = """
import ctypes, ctypes.util, resource, sys
from handlers.device import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
n = 8 * 1024 * 1024

def forward():
    blocks = [libc.malloc(n) for _ in range(4)]
    for b in blocks:
        ctypes.memset(b, 1, n)
    for b in blocks:
        libc.free(b)

forward(); forward()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    forward()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 5)
"""


def test_keep_freed_memory_stops_page_faults_between_model_calls():
    root = Path(__file__).resolve().parents[2]

    def faults(mode: str) -> float:
        cmd = [sys.executable, "-c", FAULTS, mode]
        out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return float(out.stdout.split()[-1])

    default, kept = faults("default"), faults("keep")
    # glibc's defaults trim the 32 MB back to the OS after every round: 8,160 faults
    # each time here (the conv encoder in a worker: ~15 faults per item, 1.7x slower)
    assert default >= 1000, f"glibc no longer trims here ({default} faults): is the option needed?"
    assert kept < 50, f"{kept} page faults per round with keep_freed_memory"


def test_keep_freed_memory_without_glibc_is_a_no_op():
    assert keep_freed_memory("no-such-libc.so.6") is False


def test_handler_options_from_config():
    assert HandlerOptions.from_config(None) == HandlerOptions()
    assert HandlerOptions.from_config({"minWorkers": 1}) == HandlerOptions()
    opts = HandlerOptions.from_config({"handler": {"chunk_size": 8, "cpu_threads": 2}})
    assert (opts.chunk_size, opts.cpu_threads, opts.half) == (8, 2, False)


@pytest.mark.parametrize(
    "section",
    [
        {"chunk": 8},  # unknown key
        {"chunk_size": 0},
        {"cpu_threads": 0},
        {"chunk_size": "8"},
        {"half": "yes"},
        {"chunk_size": True},
    ],
)
def test_handler_options_reject_bad_config(section):
    with pytest.raises(ValueError, match="handler option"):
        HandlerOptions.from_config({"handler": section})
