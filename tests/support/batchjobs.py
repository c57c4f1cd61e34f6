"""Batch jobs (`batch/`) for tests: a real local Ray cluster, inputs, the CLI as users run it.

    cluster = start_cluster(num_cpus=2)       # ray.cluster_utils.Cluster, its own processes
    proc = run_batch(["encode", "--model", "fashion-vae", "--input", str(folder),
                      "--output", str(out)], cluster.address)
    rows = read_output(out)                   # every part, as one table sorted by id

Every job runs as a subprocess (`python -m batch ...`) against a cluster started
once (`ray_cluster`, tests/conftest.py: 2 CPUs), so a test pays a job's start-up
(its actors import torch and load the model, about 6 s here), not a Ray start.
The inputs are real Fashion-MNIST test images, read offline from Debian's package.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from paths import FASHION_DIR, ROOT

TEST_IMAGES = FASHION_DIR / "t10k-images-idx3-ubyte.gz"
ACTOR_TITLE = "BlockActor"  # in a batch actor process's title (ray::MapWorker(...))


def start_cluster(num_cpus: int = 2, nodes: int = 1, head_cpus: int | None = None):
    """A local Ray cluster of `nodes` nodes of `num_cpus` CPUs each (the head: `head_cpus`
    if given), not connected here: jobs connect with --address."""
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no telemetry actor, as the CLI's
    node = {"num_cpus": num_cpus, "object_store_memory": 256 * 2**20}
    head = node | {"include_dashboard": False}
    if head_cpus is not None:
        head["num_cpus"] = head_cpus
    cluster = Cluster(initialize_head=True, head_node_args=head)
    for _ in range(nodes - 1):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    return cluster


def fashion(n: int) -> np.ndarray:
    """The first n Fashion-MNIST test images, uint8 (n, 28, 28)."""
    with gzip.open(TEST_IMAGES) as f:
        data = f.read(16 + n * 28 * 28)
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, 28, 28).copy()


def png_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def image_folder(root: Path, images: np.ndarray) -> tuple[Path, dict[str, str]]:
    """PNG files in two levels of folders plus one of each bad file, and the error code
    the service gives each bad one: -> (folder, {relative path: expected error_code})."""
    root.mkdir(parents=True)
    (root / "shirts" / "new").mkdir(parents=True)
    for i, a in enumerate(images):
        sub = ("", "shirts", "shirts/new")[i % 3]
        (root / sub / f"{i:04d}.png").write_bytes(png_bytes(a))
    good = png_bytes(images[0])
    bad = {
        "broken/corrupt.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        "broken/truncated.png": good[: len(good) // 2],
        "broken/empty.png": b"",
        "broken/notes.jpg": b"these are not the pixels you are looking for\n" * 3,
        # over the service's max_image_bytes (1 MiB): not even read
        "broken/huge.png": b"\0" * (1024 * 1024 + 1),
    }
    (root / "broken").mkdir()
    for name, data in bad.items():
        (root / name).write_bytes(data)
    codes = {name: "bad_image" for name in bad} | {"broken/huge.png": "payload_too_large"}
    # another size and mode: converted as the service converts an upload
    rgb = np.stack([images[1]] * 3, axis=-1)
    Image.fromarray(rgb).resize((56, 40)).save(root / "colour.jpg", quality=95)
    (root / "notes.txt").write_text("not an image: never listed\n")
    return root, codes


def run_batch(
    args: list[str], address: str | None, timeout: float = 180, **kwargs
) -> subprocess.CompletedProcess:
    """`python -m batch <args> [--address ...]` as a user runs it, from the repository."""
    cmd = [sys.executable, "-m", "batch", *args] + (["--address", address] if address else [])
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs)


def start_batch(args: list[str], address: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "batch", *args, "--address", address, "--quiet"]
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def parts(out: Path) -> list[Path]:
    return sorted(out.glob("part-*.parquet"))


def wait_for_parts(out: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> int:
    """Wait until the job has written at least n parts (fails if it ends first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(parts(out)) >= n:
            return len(parts(out))
        if proc.poll() is not None:
            raise AssertionError(
                f"the job ended ({proc.returncode}) before {n} parts: {proc.stderr.read()[-2000:]}"
            )
        time.sleep(0.05)
    raise AssertionError(f"no {n} parts in {out} after {timeout} s")


def read_output(out: Path) -> pa.Table:
    """Every part of a job's output as one table, sorted by id."""
    tables = [pq.read_table(p) for p in parts(out)]
    table = pa.concat_tables(tables)
    return table.sort_by("id")


def manifest(out: Path) -> dict:
    return json.loads((out / "_manifest.json").read_text())


def actor_processes() -> list[psutil.Process]:
    """The batch actors now alive on this machine (Ray titles them by their class)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::") and ACTOR_TITLE in cmd:
            found.append(p)
    return found


def kill(proc: psutil.Process | subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
