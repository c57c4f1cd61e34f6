from __future__ import annotations

import subprocess
import sys

import pytest

from tests.deploy import tsproc


@pytest.fixture(scope="session")
def deploy_store(tmp_path_factory):
    """The three archives of the test model, built as the image build does."""
    export = tsproc.TEST_STORE / tsproc.TEST_MODEL / "manifest.json"
    if not export.exists():
        pytest.fail(
            f"{export} not found: the deploy tests serve the shipped model "
            f"{tsproc.TEST_MODEL!r}. Train and export it with `make models` "
            "(or point LATENTSERVE_DEPLOY_STORE/LATENTSERVE_DEPLOY_MODEL at another export)."
        )
    out = tmp_path_factory.mktemp("model-store")
    cmd = [
        sys.executable, "-m", "training.archive",
        "--store", str(tsproc.TEST_STORE),
        "--models", tsproc.TEST_MODEL,
        "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tsproc.ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"building archives failed:\n{proc.stdout}\n{proc.stderr}")
    mars = sorted(p.name for p in out.glob("*.mar"))
    assert mars == [f"{tsproc.TEST_MODEL}-{op}.mar" for op in ("decode", "encode", "sample")]
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
