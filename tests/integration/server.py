"""A real TorchServe for tests: archives built from the current code, free ports.

Reuse from any test module (deployment, load, client tests)::

    from tests.integration.server import LiveServer, start_live_server

    server = start_live_server(tmp_dir, model_dirs)            # blocks until READY
    server.post("fashion-vae-sample", json={"n": 2, "seed": 0})
    server.stop()

or, inside tests/integration/, take the session fixture `torchserve` (one
server for the whole session, see conftest.py). `start_live_server` builds the
three archives of each model dir with `serving.archive.build_archives` into
`tmp_dir/store`, renders `config` (default `deploy/config.properties`) with free
loopback ports (never 8080-8082, so a running `make serve` does not collide),
starts TorchServe with `serving.process.TorchServeProcess` (run files under
`tmp_dir/run`) and waits until every worker is READY. Missing Java or TorchServe
fails the test with the fix (`make setup`); nothing is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from prometheus_client.parser import text_string_to_metric_families

from serving.archive import build_archives
from serving.process import BASE_CONFIG, ROOT, Ports, ServeError, TorchServeProcess
from training.export import export_model
from training.models import ModelConfig, build_model

__all__ = ["LiveServer", "ServedModel", "TorchServeProcess", "start_live_server"]
STORE = ROOT / "model_store"


def require_tools() -> None:
    if shutil.which("java") is None:
        pytest.fail(
            "java not found: TorchServe needs a Java 11+ runtime. Install it with `make setup` "
            "(apt-get install openjdk-17-jre-headless)."
        )
    for module in ("ts", "model_archiver"):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"Python package {module!r} missing: run `make setup` (the 'serve' extra).")


@dataclass(frozen=True)
class ServedModel:
    name: str
    model_dir: Path
    manifest: dict
    shipped: bool  # from model_store/ (True) or a test fixture export

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def latent_dim(self) -> int:
        return self.manifest["latent_dim"]


def shipped_model_dirs(store: Path = STORE) -> list[Path]:
    return sorted(p.parent for p in store.glob("*/manifest.json"))


def export_fixture(out: Path, kind: str, latent_dim: int = 8, seed: int = 0) -> Path:
    """A randomly initialised model exported through the real export path."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(kind=kind, latent_dim=latent_dim, hidden=64))
    prior = None
    if kind == "ae":
        prior = {"type": "gaussian", "mean": [0.5] * latent_dim, "cov": np.eye(latent_dim).tolist()}
    export_model(
        model,
        out,
        x_check=torch.rand(8, 1, 28, 28),
        dataset={"name": "fashion-mnist", "note": "test fixture, untrained"},
        code_prior=prior,
    )
    return out


class LiveServer:
    """A started TorchServe plus small HTTP helpers for tests."""

    def __init__(self, process: TorchServeProcess, models: list[ServedModel]) -> None:
        self.process, self.models = process, models
        self.http = requests.Session()
        self.startup_seconds = 0.0  # start() to every worker READY

    @property
    def url(self) -> str:
        return self.process.inference_url

    def model(self, kind: str) -> ServedModel:
        """The preferred served model of a kind: shipped first, then a fixture."""
        return sorted((m for m in self.models if m.kind == kind), key=lambda m: not m.shipped)[0]

    def post(self, endpoint: str, **kwargs) -> requests.Response:
        return self.http.post(f"{self.url}/predictions/{endpoint}", timeout=120, **kwargs)

    def ping(self) -> requests.Response:
        return self.http.get(f"{self.url}/ping", timeout=10)

    def worker_pids(self) -> dict[str, list[int]]:
        """{archive: [worker pid, ...]} from the management API."""
        out = {}
        for name in self.process.expected_models():
            info = self.http.get(f"{self.process.management_url}/models/{name}", timeout=10)
            out[name] = sorted(w["pid"] for w in info.json()[0]["workers"])
        return out

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """{(sample name, sorted labels without Hostname): value} from /metrics."""
        text = self.http.get(f"{self.process.metrics_url}/metrics", timeout=10).text
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "Hostname"))
                out[(s.name, labels)] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples called `name` whose labels include `labels` (0 if none).

        prometheus_client's parser names a counter's sample `<name>_total` even
        when the exposition (TorchServe) calls it `<name>`: both are accepted.
        """
        want, names = set(labels.items()), (name, f"{name}_total")
        return sum(v for (n, lab), v in self.metrics().items() if n in names and want <= set(lab))

    def wait_metric(self, name: str, target: float, timeout: float = 20.0, **labels) -> float:
        """Metrics arrive through the worker log asynchronously: poll until `target`."""
        deadline = time.monotonic() + timeout
        while (value := self.metric(name, **labels)) < target and time.monotonic() < deadline:
            time.sleep(0.2)
        return value

    def stop(self) -> None:
        self.process.stop()


def start_live_server(
    tmp_dir: Path,
    model_dirs: list[Path],
    config: Path = BASE_CONFIG,
    ports: Ports | None = None,
    timeout: float = 600.0,
) -> LiveServer:
    require_tools()
    tmp_dir = Path(tmp_dir)
    store = tmp_dir / "store"
    for parent in sorted({d.parent for d in model_dirs}):
        names = [d.name for d in model_dirs if d.parent == parent]
        build_archives(parent, store, models=names, log=lambda *_: None)
    served = [
        ServedModel(
            d.name,
            d,
            json.loads((d / "manifest.json").read_text()),
            d.resolve().parent == STORE.resolve(),
        )
        for d in model_dirs
    ]
    process = TorchServeProcess(
        run_dir=tmp_dir / "run",
        model_store=store,
        models=[f"{m.name}-{op}" for m in served for op in ("encode", "decode", "sample")],
        ports=ports or Ports.free(),
        base_config=config,
    )
    started = time.monotonic()
    try:
        process.start()
        process.wait_ready(timeout)
    except ServeError as err:
        process.stop()
        pytest.fail(f"TorchServe did not come up: {err}")
    server = LiveServer(process, served)
    server.startup_seconds = time.monotonic() - started
    return server
