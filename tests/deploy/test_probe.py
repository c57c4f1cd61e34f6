"""deploy/docker/probe.py against a real TorchServe with the production config.

These are the commands the Kubernetes exec probes and the Docker HEALTHCHECK run.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from serving.properties import free_ports
from tests.deploy import tsproc
from tests.support.live import scale_workers

pytestmark = pytest.mark.integration


def scale(server, model: str, workers: int) -> None:
    scale_workers(server.management, model, workers)


@pytest.mark.parametrize("mode", ["ready", "live", "ping"])
def test_healthy_server_passes(prod_server, mode):
    r = prod_server.probe(mode)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(mode)


def test_ready_fails_when_an_expected_model_is_missing(prod_server):
    r = prod_server.probe("ready", "--models", f"{tsproc.TEST_MODEL}-decode.mar nope=nope.mar")
    assert r.returncode == 1
    assert "nope (not registered)" in r.stdout


def test_ready_fails_while_a_model_has_no_ready_worker(prod_server):
    model = f"{tsproc.TEST_MODEL}-sample"
    scale(prod_server, model, 0)
    try:
        r = prod_server.probe("ready")
        assert r.returncode == 1
        assert f"{model} (no workers)" in r.stdout
        # TorchServe's own /ping still says Healthy here: that is why readiness asks
        # the management API model by model
        assert prod_server.probe("ping").returncode == 0
        assert prod_server.probe("live").returncode == 0
    finally:
        scale(prod_server, model, 1)
    assert prod_server.probe("ready").returncode == 0


def test_no_server_fails():
    port = free_ports(1)[0]
    for mode in ("live", "ready", "ping"):
        cmd = [sys.executable, str(tsproc.PROBE), mode, "--models", "m.mar"]
        cmd += ["--management-url", f"http://127.0.0.1:{port}"]
        cmd += ["--inference-url", f"http://127.0.0.1:{port}"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "refused" in r.stdout.lower(), r.stdout


def test_expected_models_follow_the_entrypoint(tmp_path):
    sys.path.insert(0, str(tsproc.PROBE.parent))
    try:
        import probe
    finally:
        sys.path.pop(0)
    for name in ("b-encode.mar", "a-decode.mar", "notes.txt"):
        (tmp_path / name).write_text("")
    assert probe.expected_models("all", str(tmp_path)) == ["a-decode", "b-encode"]
    assert probe.expected_models("x=a-decode.mar b-encode.mar", str(tmp_path)) == ["b-encode", "x"]
    with pytest.raises(probe.ProbeError):
        probe.expected_models("all", str(tmp_path / "empty"))
