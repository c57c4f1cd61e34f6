"""A TorchServe of our own on free loopback ports, for `make bench` and `make soak`.

The tests use `tests/integration/server.py` (it fails a test with pytest's
message); these command-line tools use this thin wrapper over the same parts:
`serving.archive.build_archives` builds the archives from the current code into
a private store, `serving.process.TorchServeProcess` renders the config with
free ports, starts TorchServe and waits until every worker is READY.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from serving.archive import WorkerConfig, build_archives
from serving.process import BASE_CONFIG, ROOT, Ports, TorchServeProcess

STORE = ROOT / "model_store"
OPS = ("encode", "decode", "sample")


def shipped_models(store: Path = STORE) -> list[str]:
    return sorted(p.parent.name for p in store.glob("*/manifest.json"))


@dataclass
class ServerSpec:
    models: list[str]  # shipped model dirs in model_store/: three archives each
    extra: list[str] = field(default_factory=list)  # archives already built in the store
    worker: WorkerConfig | None = None  # model-config of the models' archives
    config: Path = BASE_CONFIG
    timeout: float = 600.0


@dataclass
class RunningServer:
    process: TorchServeProcess
    ready_seconds: float  # start() until every worker READY

    @property
    def url(self) -> str:
        return self.process.inference_url

    @property
    def management_url(self) -> str:
        return self.process.management_url

    @property
    def frontend_pid(self) -> int | None:
        return self.process.pid()

    def worker_pids(self) -> dict[str, list[int]]:
        out = {}
        for name in self.process.expected_models():
            info = requests.get(f"{self.management_url}/models/{name}", timeout=10).json()
            out[name] = sorted(int(w["pid"]) for w in info[0]["workers"] if w.get("pid"))
        return out

    def all_pids(self) -> list[int]:
        """The frontend and every worker (for CPU accounting)."""
        pids = [p for ps in self.worker_pids().values() for p in ps]
        return pids + ([self.frontend_pid] if self.frontend_pid else [])


def build_store(store: Path, models: list[str], worker: WorkerConfig | None = None) -> list[str]:
    """Archives of the shipped `models` into `store`; their names."""
    built = build_archives(STORE, store, models=models, worker=worker, log=lambda *_: None)
    return [a.name for a in built]


@contextlib.contextmanager
def running_server(spec: ServerSpec, tmp: Path) -> Iterator[RunningServer]:
    store = Path(tmp) / "store"
    names = build_store(store, spec.models, spec.worker) if spec.models else []
    process = TorchServeProcess(
        run_dir=Path(tmp) / "run",
        model_store=store,
        models=names + list(spec.extra),
        ports=Ports.free(),
        base_config=spec.config,
    )
    started = time.monotonic()
    try:
        process.start()
        process.wait_ready(spec.timeout)
        yield RunningServer(process, time.monotonic() - started)
    finally:
        process.stop()
