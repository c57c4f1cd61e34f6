"""deploy/docker/entrypoint.sh, run directly (no Docker engine here): it serves,
drains and stops cleanly on SIGTERM within the grace period, and refuses bad
configuration before starting anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import psutil
import pytest
import requests

from tests.deploy import tsproc

pytestmark = pytest.mark.integration

GRACE_SECONDS = 30  # the base Deployment's terminationGracePeriodSeconds
DRAIN_SECONDS = 3


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def _children(pid: int) -> list[int]:
    return [p.pid for p in psutil.Process(pid).children()]


def test_serves_then_drains_and_stops_cleanly_on_sigterm(deploy_store, tmp_path):
    decode = f"{tsproc.TEST_MODEL}-decode"
    server = tsproc.start(
        tmp_path,
        deploy_store,
        models=f"{decode}.mar",
        extra_env={
            "TS_DRAIN_SECONDS": str(DRAIN_SECONDS),
            # the mechanism the GPU overlay uses (number_of_gpu=1): prove overrides apply
            "TS_CONFIG_OVERRIDES": "job_queue_size=7",
        },
    )
    try:
        server.wait_ready()
        url = f"{server.inference}/predictions/{decode}"
        desc = requests.get(f"{server.management}/models/{decode}", timeout=30).json()[0]
        assert desc["jobQueueStatus"]["remainingCapacity"] == 7
        body = {"instances": [{"z": [0.0] * tsproc.LATENT_DIM}]}
        assert requests.post(url, json=body, timeout=30).status_code == 200

        java = _children(server.proc.pid)
        assert len(java) == 1, "TorchServe's JVM should be the entrypoint's only child"

        started = time.monotonic()
        server.signal(signal.SIGTERM)
        # during the drain window the server keeps answering
        time.sleep(DRAIN_SECONDS / 3)
        results = []
        t = threading.Thread(
            target=lambda: results.append(requests.post(url, json=body, timeout=30))
        )
        t.start()
        t.join(30)
        assert results and results[0].status_code == 200, "request during the drain failed"

        rc = server.proc.wait(GRACE_SECONDS)
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    log = server.log()
    assert rc == 0, log[-3000:]
    assert DRAIN_SECONDS <= elapsed < GRACE_SECONDS, elapsed
    assert "stopped cleanly" in log
    for pid in java:
        assert not os.path.exists(f"/proc/{pid}"), "the JVM outlived the entrypoint"
    assert server.probe("live").returncode == 1  # a stopped server fails its probes


def test_hung_server_is_killed_after_the_stop_timeout(deploy_store, tmp_path):
    server = tsproc.start(
        tmp_path,
        deploy_store,
        models=f"{tsproc.TEST_MODEL}-decode.mar",
        extra_env={"TS_STOP_TIMEOUT": "2"},
    )
    try:
        _wait_for(lambda: server.probe("live").returncode == 0, 60, "TorchServe to answer")
        (java,) = _children(server.proc.pid)
        os.kill(java, signal.SIGSTOP)  # a JVM that cannot react to SIGTERM
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        rc = server.proc.wait(30)
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert rc == 128 + signal.SIGKILL, server.log()[-2000:]
    assert 2 <= elapsed < 10
    assert "SIGKILL" in server.log()
    _wait_for(lambda: not os.path.exists(f"/proc/{java}"), 10, "the JVM to disappear")


def _run_entrypoint(tmp_path, **env) -> subprocess.CompletedProcess:
    base = {
        **os.environ,
        "TS_CONFIG_FILE": str(tsproc.PROD_CONFIG),
        "TS_MODEL_STORE": str(tmp_path),
        "TS_WORKDIR": str(tmp_path / "work"),
        "TS_PYTHON": str(tsproc.VENV_BIN / "python"),
        "TS_LOG_CONFIG": str(tsproc.LOG_CONFIG),
    }
    base.update(env)
    return subprocess.run(
        ["bash", str(tsproc.ENTRYPOINT)], env=base, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no .mar archives"),
        ({"TS_MODELS": "missing.mar"}, "missing.mar, which is not in"),
        ({"TS_CONFIG_FILE": "/nonexistent.properties"}, "config file /nonexistent.properties"),
        ({"TS_CONFIG_OVERRIDES": "disable_token_authorization=true"}, "may not set"),
        ({"TS_CONFIG_OVERRIDES": "number_of_gpu=1;enable_model_api = true"}, "may not set"),
        # TorchServe has no token of its own: it must not leave loopback
        ({"TS_CONFIG_OVERRIDES": "inference_address=http://0.0.0.0:8080"}, "may not set"),
        ({"TS_CONFIG_OVERRIDES": "metrics_address=http://0.0.0.0:8082"}, "may not set"),
        ({"TS_CONFIG_OVERRIDES": r"\u0064isable_token_authorization=true"}, "backslash"),
        ({"TS_CONFIG_OVERRIDES": "allowed_urls: https://.*"}, "not key=value"),
        ({"JAVA_HOME": "/nonexistent"}, "java not found"),
        ({"TS_STOP_TIMEOUT": "soon"}, "whole number"),
    ],
)
def test_refuses_bad_configuration(tmp_path, env, message):
    if env.get("TS_MODELS") is None and "no .mar" not in message:
        (tmp_path / "m.mar").write_text("")  # get past the empty-store check
    r = _run_entrypoint(tmp_path, **env)
    assert r.returncode == 64, r.stderr
    assert message in r.stderr
