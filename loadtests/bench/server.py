"""The bench server's parts for `make bench`: its extra archives, its metrics, the machine.

- `reference_reply`: the exact bytes the real encode handler answers a body
  (run in-process), which the no-op archives answer;
- `build_noop`: a no-op archive (`noop_handler.py`) with the encode archive's
  worker settings: the framework ceiling;
- `build_unbatched`: the model's encode archive with batchSize 1;
- `timing`: per-point queue, inference and handler-stage timings from two
  scrapes (`serving.query.scrape`) of TorchServe's and the handlers' metrics;
- `machine`: what the numbers were measured on.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from handlers.metrics import STAGES
from paths import STORE
from serving.archive import build_archives
from serving.query import Samples, metric
from serving.workers import WorkerConfig

NOOP_HANDLER = Path(__file__).resolve().parent / "noop_handler.py"


# ---- archives ---------------------------------------------------------------------
def reference_reply(model_dir: Path, body: bytes) -> str:
    """The exact answer the real encode handler gives `body` (run in-process, on the CPU)."""
    from handlers.engine import Engine
    from handlers.wire.request import RawRequest

    engine = Engine.from_dir(model_dir, "encode")
    replies, _ = engine.handle([RawRequest(body, "application/json")])
    assert replies[0].status == 200, replies[0].body
    return replies[0].body


def build_noop(store: Path, name: str, reply: str, worker: WorkerConfig) -> str:
    """A no-op archive answering `reply`, with the encode archive's worker settings."""
    stage = store / ".noop" / name
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    (stage / "reply.json").write_text(reply)
    config = worker.model_config("encode")
    config.pop("handler")
    (stage / "model-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    cmd = [
        str(archiver), "--model-name", name, "--version", "1.0",
        "--handler", str(NOOP_HANDLER), "--extra-files", str(stage / "reply.json"),
        "--config-file", str(stage / "model-config.yaml"),
        "--export-path", str(store), "--force",
    ]  # fmt: skip
    env = dict(os.environ, TMPDIR=str(stage))
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return name


def build_unbatched(store: Path, tmp: Path, model: str, worker: WorkerConfig) -> str:
    """The model's encode archive with batchSize 1, as `<model>-b1-encode`."""
    src, dst = STORE / model, tmp / "models" / f"{model}-b1"
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).unlink(missing_ok=True)
            (dst / f.name).symlink_to(f.resolve())
    unbatched = dataclasses.replace(worker, batch_size=1)
    build_archives(dst.parent, store, [dst.name], unbatched, log=lambda *_: None)
    return f"{dst.name}-encode"


# ---- metrics ----------------------------------------------------------------------
def timing(before: Samples, after: Samples, archive: str) -> dict:
    """Per request and per batch timings of one point from TorchServe's and our metrics.

    TorchServe's frontend labels its series `model_name`, the handlers' `ModelName`.
    """

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    reqs = delta("ts_inference_requests_total", model_name=archive)
    batches = delta("latentserve_batch_requests_count", ModelName=archive)
    out = {}
    if reqs > 0:
        queue_us = delta("ts_queue_latency_microseconds", model_name=archive)
        inference_us = delta("ts_inference_latency_microseconds", model_name=archive)
        out["queue_ms_per_request"] = queue_us / reqs / 1000
        out["inference_ms_per_request"] = inference_us / reqs / 1000
    if batches > 0:
        batched = delta("latentserve_batch_requests_sum", ModelName=archive)
        out["requests_per_batch"] = batched / batches
        for stage in STAGES:
            s = delta("latentserve_stage_seconds_sum", ModelName=archive, Stage=stage)
            out[f"{stage}_ms_per_batch"] = s / batches * 1000
    return out


# ---- the machine ------------------------------------------------------------------
def machine() -> dict:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        int(line.split()[1]) // 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    import torch
    from ts.version import __version__ as ts_version

    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_mib": mem,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchserve": ts_version,
        "java": subprocess.run(
            ["java", "-version"], capture_output=True, text=True
        ).stderr.splitlines()[0],
    }
