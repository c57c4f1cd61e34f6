"""deploy/docker/probe.py against a real TorchServe with token authorization on.

These are the commands the Kubernetes exec probes and the Docker HEALTHCHECK run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import requests

from serving.properties import free_ports
from tests.deploy import tsproc

pytestmark = pytest.mark.integration


def scale(server, model: str, workers: int) -> None:
    r = requests.put(
        f"{server.management}/models/{model}",
        params={"min_worker": workers, "max_worker": workers, "synchronous": "true"},
        headers=server.auth("management"),
        timeout=120,
    )
    assert r.status_code == 200, r.text


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


def test_expired_key_is_rotated_by_the_probe(prod_server):
    """An expired management key must not fail a healthy pod's probes."""
    keys = json.loads(prod_server.key_file.read_text())
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # TorchServe keeps its keys in memory: a key the server no longer accepts, marked
    # expired in the file, is exactly what an expiry looks like to the probe
    keys["management"] = {"key": "expired0", "expiration time": past}
    prod_server.key_file.write_text(json.dumps(keys))
    r = prod_server.probe("ready")
    assert r.returncode == 0, r.stdout
    fresh = json.loads(prod_server.key_file.read_text())["management"]["key"]
    assert fresh != "expired0"
    assert prod_server.probe("live").returncode == 0


def test_wrong_key_that_has_not_expired_fails(prod_server, tmp_path):
    keys = json.loads(prod_server.key_file.read_text())
    keys["management"]["key"] = "wrongkey"
    bad = tmp_path / "key_file.json"
    bad.write_text(json.dumps(keys))
    r = prod_server.probe("live", "--key-file", str(bad))
    assert r.returncode == 1 and "400" in r.stdout


def test_no_server_fails(tmp_path):
    key_file = tmp_path / "key_file.json"
    cmd = [sys.executable, str(tsproc.PROBE), "live", "--key-file", str(key_file)]
    port = free_ports(1)[0]
    cmd += ["--management-url", f"http://127.0.0.1:{port}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "no key file" in r.stdout
    key_file.write_text(json.dumps({"management": {"key": "k", "expiration time": "x"}}))
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
    expiry = probe.parse_expiry("2026-11-25T05:06:39.488023725Z")
    assert expiry == datetime(2026, 11, 25, 5, 6, 39, 488023, tzinfo=UTC)
