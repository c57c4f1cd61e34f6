"""A TorchServe of our own: the chosen models' archives in a private store, free ports.

What the benchmark, the soak and the tests start (`make serve` instead serves
model_store/ on the config's ports, see `serving/cli.py`). `start_server`
builds the four archives of each chosen model directory from the current code
(`serving.archive.build_archives`) into `<tmp>/store`, adds archives already
built there (`extra`), renders the config with free loopback ports (never
those of `make serve`, so the two never collide), starts TorchServe
(`serving.process.TorchServeProcess`, run files under `<tmp>/run`) and waits
until every worker is READY::

    with start_server(tmp, [STORE / "fashion-vae"]) as server:
        server.url, server.worker_pids(), server.metrics()
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from serving.archive import build_archives
from serving.process import TorchServeProcess
from serving.properties import BASE_CONFIG, Ports
from serving.query import Samples, scrape, worker_pids
from serving.workers import WorkerConfig


@dataclass
class RunningServer:
    """A started TorchServe whose workers were all READY after `ready_seconds`."""

    process: TorchServeProcess
    ready_seconds: float  # start() until every worker READY

    @property
    def url(self) -> str:
        return self.process.inference_url

    @property
    def management_url(self) -> str:
        return self.process.management_url

    @property
    def metrics_url(self) -> str:
        return self.process.metrics_url

    @property
    def frontend_pid(self) -> int | None:
        return self.process.pid()

    def worker_pids(self) -> dict[str, list[int]]:
        """{archive: [worker pid, ...]} of every archive it serves."""
        return {a: worker_pids(self.management_url, a) for a in self.process.expected_models()}

    def all_pids(self) -> list[int]:
        """The frontend and every worker (for CPU accounting)."""
        pids = [p for ps in self.worker_pids().values() for p in ps]
        return pids + ([self.frontend_pid] if self.frontend_pid else [])

    def metrics(self) -> Samples:
        return scrape(self.metrics_url)

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def build_store(
    store: Path, model_dirs: Iterable[Path], worker: WorkerConfig | None = None
) -> list[str]:
    """The four archives of each model directory (any parents) into `store`; their names."""
    model_dirs = [Path(d) for d in model_dirs]
    names = []
    for parent in sorted({d.parent for d in model_dirs}):
        chosen = [d.name for d in model_dirs if d.parent == parent]
        built = build_archives(parent, store, models=chosen, worker=worker, log=lambda *_: None)
        names += [a.name for a in built]
    return names


def start_server(
    tmp: Path,
    model_dirs: Iterable[Path],
    extra: Iterable[str] = (),
    worker: WorkerConfig | None = None,
    config: Path = BASE_CONFIG,
    ports: Ports | None = None,
    timeout: float = 600.0,
) -> RunningServer:
    """Start TorchServe on the archives of `model_dirs` (plus `extra`, already in
    `<tmp>/store`) and wait until every worker is READY. On failure it stops what
    it started and raises ServeError (with the logs' tail)."""
    store = Path(tmp) / "store"
    names = build_store(store, model_dirs, worker)
    process = TorchServeProcess(
        run_dir=Path(tmp) / "run",
        model_store=store,
        models=names + list(extra),
        ports=ports or Ports.free(),
        base_config=config,
    )
    started = time.monotonic()
    try:
        process.start()
        process.wait_ready(timeout)
    except BaseException:
        process.stop()
        raise
    return RunningServer(process, time.monotonic() - started)
