from __future__ import annotations

import subprocess
import sys

import pytest

from paths import ROOT
from serving.archive import OPERATIONS
from tests.deploy import tsproc
from tests.support.exports import export_fixture


@pytest.fixture(scope="session")
def deploy_store(tmp_path_factory):
    """The four archives of the test model, built as the image build does."""
    exports = tmp_path_factory.mktemp("exports")
    export_fixture(exports / tsproc.TEST_MODEL, "vae", latent_dim=tsproc.LATENT_DIM)
    out = tmp_path_factory.mktemp("model-store")
    cmd = [sys.executable, "-m", "serving.archive", "--store", str(exports), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"building archives failed:\n{proc.stdout}\n{proc.stderr}")
    mars = sorted(p.name for p in out.glob("*.mar"))
    assert mars == [f"{tsproc.TEST_MODEL}-{op}.mar" for op in sorted(OPERATIONS)]
    return out


@pytest.fixture(scope="session")
def prod_server(deploy_store, tmp_path_factory):
    """One TorchServe with the production config (loopback ports), for the whole session."""
    server = tsproc.start(tmp_path_factory.mktemp("prod"), deploy_store)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
