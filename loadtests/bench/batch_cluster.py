"""The batch benchmark's parts (`loadtests.bench.batch`): inputs, the driver as a
subprocess with its peak memory, and a local two-node Ray cluster.

- `npy_input` / `png_folder`: the Fashion-MNIST training set as one uint8 .npy
  (repeated to the size asked for) and as a folder of PNG files;
- `run_job`: `python -m batch ...` as a subprocess, exactly as a user runs it,
  through a wrapper that records, at the driver's exit, its own `VmHWM` (the
  RSS high-water mark, /proc/self/status) and CPU seconds; the job's manifest
  (`_manifest.json`) and the wall time seen from outside;
- `breakdown`: the stages of one in-process `BlockWorker`, seconds per block;
- `scaling`: one local Ray cluster (`ray.cluster_utils.Cluster`, its own ports
  and session folder), 1 CPU per node: the job with `--actors 1` on the head
  alone, then a second node added and the job with `--actors 2`.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from paths import FASHION_DIR, ROOT, STORE

TRAIN_IMAGES = FASHION_DIR / "train-images-idx3-ubyte.gz"
PEAK_ENV = "LATENTSERVE_BENCH_PEAK"  # DRIVER writes its record there

# `python -m batch` with a record of the driver's own peak RSS and CPU time at exit
DRIVER = """
import atexit, json, os, runpy, sys
def _record():
    lines = open("/proc/self/status").read().splitlines()
    hwm = next(int(v.split()[1]) for v in lines if v.startswith("VmHWM"))
    t = os.times()
    with open(os.environ["LATENTSERVE_BENCH_PEAK"], "w") as f:
        json.dump({"vmhwm_kib": hwm, "cpu_s": t.user + t.system}, f)
atexit.register(_record)
sys.argv = ["python -m batch", *sys.argv[1:]]
runpy.run_module("batch", run_name="__main__", alter_sys=True)
"""


def train_images() -> np.ndarray:
    with gzip.open(TRAIN_IMAGES) as f:
        data = f.read()
    n, h, w = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, h, w)


def npy_input(tmp: Path, images: np.ndarray, repeat: int) -> Path:
    path = tmp / f"train-x{repeat}.npy"
    if not path.exists():
        np.save(path, np.tile(images, (repeat, 1, 1)) if repeat > 1 else images)
    return path


def png_folder(tmp: Path, images: np.ndarray) -> Path:
    from PIL import Image

    folder = tmp / f"png-{len(images)}"
    folder.mkdir(exist_ok=True)
    for i, a in enumerate(images):
        Image.fromarray(a, mode="L").save(folder / f"{i:05d}.png")
    return folder


def run_job(args: list[str], output: Path, log=print) -> dict:
    """`python -m batch <args> --output <output> --quiet`, a fresh output: the manifest,
    the outside wall time and the driver's peak RSS (MiB) and CPU seconds."""
    with tempfile.NamedTemporaryFile(suffix=".json") as peak:
        cmd = [sys.executable, "-c", DRIVER, *args, "--output", str(output), "--quiet"]
        log("  $ python -m batch " + " ".join(args) + f" --output {output} --quiet")
        t0 = time.perf_counter()
        proc = subprocess.run(
            cmd, cwd=ROOT, env=os.environ | {PEAK_ENV: peak.name}, capture_output=True
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"batch job failed ({proc.returncode}): {proc.stderr[-3000:]!r}")
        driver = json.loads(Path(peak.name).read_text())
    manifest = json.loads((output / "_manifest.json").read_text())
    got = {
        "wall_s": wall,
        "driver_peak_mib": driver["vmhwm_kib"] / 1024,
        "driver_cpu_s": driver["cpu_s"],
    }
    keys = ("rows", "errors", "blocks", "wall_seconds", "startup_seconds", "items_per_second")
    got |= {k: manifest[k] for k in keys} | {"actors": manifest["ray"]["actors"]}
    got["nodes"] = manifest["ray"]["nodes"]
    log(
        f"  {got['rows']} rows in {wall:.1f} s ({got['startup_seconds']:.1f} s start-up), "
        f"{got['items_per_second']:,.0f} items/s steady, driver peak {got['driver_peak_mib']:.0f}"
        f" MiB, {got['driver_cpu_s']:.1f} CPU s"
    )
    return got


def breakdown(model: str, npy: Path, tmp: Path, blocks: int) -> dict:
    """Seconds per block of each stage of `BlockWorker.process`, one actor in-process
    (1 thread): where a job's time goes besides the model. A subprocess: its torch
    threads and imports stay out of the benchmark's own process."""
    code = f"""
import io, json, time, pyarrow.parquet as pq
from batch import columns
from batch.convert import array_images_fast
from batch.reading import read_block
from batch.sources import IMAGES, plan
from batch.spec import JobSpec, check
from batch.storage import locate, write_atomic
from batch.output import part_name
from batch.worker import BlockWorker
spec = JobSpec("encode", {model!r}, {str(STORE / model)!r}, output={str(tmp / "bd")!r},
               input={str(npy)!r})
check(spec)
locate(spec.output).fs.create_dir(spec.output, recursive=True)
w = BlockWorker(spec.to_dict())
stages = dict.fromkeys(("read", "convert", "model", "columns", "parquet", "write"), 0.0)
full = [b for b in plan(spec.input, IMAGES, spec.block_items).blocks if b.rows == spec.block_items]
todo = full[: {blocks} + 1]  # whole blocks only; the first warms up
for i, b in enumerate(todo):
    t = [time.perf_counter()]
    items = read_block(b, w.op.limits.max_image_bytes); t.append(time.perf_counter())
    inputs = array_images_fast(w.info, items); t.append(time.perf_counter())
    out = w._run(inputs); t.append(time.perf_counter())
    table = columns.table(items.ids, inputs,
                          columns.encode_columns(len(items), inputs, out, True))
    t.append(time.perf_counter())
    buf = io.BytesIO(); pq.write_table(table, buf); t.append(time.perf_counter())
    write_atomic(w.out.join(part_name(b)), buf.getvalue()); t.append(time.perf_counter())
    if i:  # the first block warms up
        for k, name in enumerate(stages):
            stages[name] += (t[k + 1] - t[k]) / (len(todo) - 1)
print(json.dumps({{"items": b.rows, "s_per_block": stages}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode()[-3000:])
    got = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    total = sum(got["s_per_block"].values())
    got["items_per_s_one_actor"] = got["items"] / total
    got["model_share"] = got["s_per_block"]["model"] / total
    return got


@contextlib.contextmanager
def running_cluster(num_cpus: int):
    """A local Ray of one node started beforehand (`ray start --head`, as a user runs
    one): its address."""
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # as the job's own Ray
    node = {"num_cpus": num_cpus, "object_store_memory": 512 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args=node | {"include_dashboard": False})
    try:
        yield cluster.address
    finally:
        cluster.shutdown()


def scaling(tmp: Path, job: list[str], log=print) -> dict:
    """The job (`job`: operation and options, no --output) on 1 node x 1 CPU with
    --actors 1, then on 2 nodes x 1 CPU with --actors 2, one local cluster."""
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # as the job's own Ray
    node = {"num_cpus": 1, "object_store_memory": 512 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args=node | {"include_dashboard": False})
    try:
        address = cluster.address
        log(f"local cluster at {address}: 1 node x 1 CPU")
        one = run_job([*job, "--address", address, "--actors", "1"], tmp / "scale-1", log)
        cluster.add_node(**node)
        cluster.wait_for_nodes()
        log("second node added: 2 nodes x 1 CPU")
        two = run_job([*job, "--address", address, "--actors", "2"], tmp / "scale-2", log)
    finally:
        cluster.shutdown()
    return {"one_node": one, "two_nodes": two}
