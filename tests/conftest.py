"""Fixtures shared by every test folder (helpers: tests/support/, tests/handlers/tiny.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.handlers.tiny import export_tiny
from tests.support.batchjobs import start_cluster
from tests.support.exports import packaged_copy
from tests.support.live import LiveServer, load_model, start_live_server
from tests.support.tools import require_load_tools


@pytest.fixture(scope="session")
def vae_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised VAE exported through the real export path."""
    return export_tiny(tmp_path_factory.mktemp("models") / "tiny-vae", "vae")


@pytest.fixture(scope="session")
def ae_dir(tmp_path_factory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("models") / "tiny-ae", "ae")


@pytest.fixture(scope="session")
def vae_pt2_dir(vae_dir, tmp_path_factory) -> Path:
    """`vae_dir` with its AOTInductor packages (`tiny-vae-pt2`): compiled on the first
    run (about a minute), then from the packages' cache (serving/packages.py)."""
    return packaged_copy(vae_dir, tmp_path_factory.mktemp("packaged") / "tiny-vae-pt2")


@pytest.fixture(scope="session")
def load_server(tmp_path_factory) -> LiveServer:
    """One TorchServe of the shipped `LOAD_MODEL` for tests/load and tests/reliability.

    Apart from the integration session's server: these tests kill workers, flood
    queues and watch memory, which must not disturb (or be disturbed by) the
    integration tests' exact metric counts. Its four archives have the shipped
    worker settings, on the plain local config with free loopback ports.
    """
    require_load_tools()
    model = load_model()
    server = start_live_server(tmp_path_factory.mktemp("load-server"), [model.model_dir])
    print(f"\nload/reliability TorchServe READY in {server.ready_seconds:.1f}s")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster (2 CPUs) for the batch jobs of one module (tests/batch,
    tests/integration/test_batch_parity.py): jobs connect with --address. Per module,
    so that its idle processes do not share the CPUs with the rest of the session."""
    cluster = start_cluster(num_cpus=2)
    yield cluster
    cluster.shutdown()
