"""A real TorchServe for tests: archives built from the current code, free ports.

    server = start_live_server(tmp_dir, model_dirs)            # blocks until READY
    server.post("fashion-vae-sample", json={"n": 2, "seed": 0})
    server.stop()

`start_live_server` is `serving.server.start_server` (a private store of the
models' four archives each, `config` rendered with free loopback ports, every
worker READY) that fails the test with TorchServe's log tail when it does not
come up, and returns a `LiveServer`: the running server, the models it serves
and small HTTP helpers. Missing Java or TorchServe fails the test with the fix
(`make setup`); nothing is skipped.

Session fixtures built on it: `torchserve` (tests/integration/conftest.py: every
shipped model) and `load_server` (tests/conftest.py: `LOAD_MODEL` for tests/load
and tests/reliability).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from paths import STORE
from serving.process import ServeError
from serving.properties import BASE_CONFIG, Ports
from serving.query import metric
from serving.server import RunningServer, start_server
from serving.workers import WorkerConfig
from tests.support.tools import require_tools

# The shipped model of the load and reliability tests (a VAE): their server
# serves its four archives with the shipped worker settings.
LOAD_MODEL = "fashion-vae"


@dataclass(frozen=True)
class ServedModel:
    name: str
    model_dir: Path
    manifest: dict
    shipped: bool  # from model_store/ (True) or a test fixture export

    @classmethod
    def of(cls, model_dir: Path) -> ServedModel:
        manifest = json.loads((Path(model_dir) / "manifest.json").read_text())
        shipped = Path(model_dir).resolve().parent == STORE.resolve()
        return cls(Path(model_dir).name, Path(model_dir), manifest, shipped)

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def latent_dim(self) -> int:
        return self.manifest["latent_dim"]

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(channels, height, width) of the images the model reads and writes."""
        return tuple(self.manifest["image_shape"])


@functools.cache
def load_model() -> ServedModel:
    """`LOAD_MODEL` as its manifest describes it (latent size, image shape)."""
    model_dir = STORE / LOAD_MODEL
    if not (model_dir / "manifest.json").exists():
        pytest.fail(f"{model_dir} has no export: it is committed; restore it or `make models`")
    return ServedModel.of(model_dir)


@dataclass
class LiveServer(RunningServer):
    """A started TorchServe plus the models it serves and small HTTP helpers."""

    models: list[ServedModel] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http = requests.Session()

    def model(self, kind: str) -> ServedModel:
        """The preferred served model of a kind: shipped first, then a fixture."""
        return sorted((m for m in self.models if m.kind == kind), key=lambda m: not m.shipped)[0]

    def post(self, endpoint: str, **kwargs) -> requests.Response:
        return self.http.post(f"{self.url}/predictions/{endpoint}", timeout=120, **kwargs)

    def ping(self) -> requests.Response:
        return self.http.get(f"{self.url}/ping", timeout=10)

    def metric(self, name: str, **labels: str) -> float:
        """Now, the sum of the samples called `name` whose labels include `labels`."""
        return metric(self.metrics(), name, **labels)

    def wait_metric(self, name: str, target: float, timeout: float = 20.0, **labels) -> float:
        """Metrics arrive through the worker log asynchronously: poll until `target`."""
        deadline = time.monotonic() + timeout
        while (value := self.metric(name, **labels)) < target and time.monotonic() < deadline:
            time.sleep(0.2)
        return value


def start_live_server(
    tmp_dir: Path,
    model_dirs: list[Path],
    config: Path = BASE_CONFIG,
    ports: Ports | None = None,
    timeout: float = 600.0,
    worker: WorkerConfig | None = None,
) -> LiveServer:
    require_tools()
    try:
        running = start_server(
            tmp_dir, model_dirs, worker=worker, config=config, ports=ports, timeout=timeout
        )
    except ServeError as err:
        pytest.fail(f"TorchServe did not come up: {err}")
    served = [ServedModel.of(d) for d in model_dirs]
    return LiveServer(running.process, running.ready_seconds, served)


def scale_workers(management_url: str, archive: str, workers: int) -> None:
    """Set an archive's workers to exactly `workers` through the management API, and
    wait until TorchServe has done it (`synchronous`)."""
    resp = requests.put(
        f"{management_url}/models/{archive}",
        params={"min_worker": workers, "max_worker": workers, "synchronous": "true"},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
