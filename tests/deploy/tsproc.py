"""Start the production TorchServe setup the way the container does: through
`deploy/docker/entrypoint.sh`, with `deploy/config.production.properties`
copied to a temp dir and only its ports and paths rewritten to free ports
and temp paths (see `production_config`). No Docker: the entrypoint runs
directly, with java and the project's venv from this machine. (Every other
test starts TorchServe through `serving/`; this one tests the entrypoint, so it
starts it the container's way, and reuses only the ports and properties pieces.)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from paths import AGENT_JAR, DEPLOY, IMAGE_AGENT_JAR
from serving.properties import Ports, read_properties
from tests.support.tools import require_tools

PROD_CONFIG = DEPLOY / "config.production.properties"
ENTRYPOINT = DEPLOY / "docker" / "entrypoint.sh"
PROBE = DEPLOY / "docker" / "probe.py"
LOG_CONFIG = DEPLOY / "docker" / "log4j2.xml"
METRICS_CONFIG = DEPLOY / "metrics.yaml"
VENV_BIN = Path(sys.executable).parent

# The deploy tests serve one small VAE exported through the real export path
# (randomly initialised: they test the deployment, not the model) and archived
# by serving/archive.py exactly as the image build archives the shipped ones.
TEST_MODEL = "deploy-vae"
LATENT_DIM = 2


def production_config(dst: Path, ports: Ports, store: Path) -> Path:
    """Copy the production config, rewriting only ports and paths.

    Every other line (the loopback hosts, token auth off, allowed_urls, size
    limits, queue, timeouts, metrics mode) is the shipped file's, byte for byte.
    """
    text = PROD_CONFIG.read_text()
    shipped = read_properties(PROD_CONFIG)
    rewrites = (
        {  # the file's own host, a free port
            key: re.sub(r":\d+$", value[value.rindex(":") :], shipped[key])
            if "address" in key
            else value
            for key, value in ports.properties().items()
        }
        | {
            "model_store": str(store),
            "metrics_config": str(METRICS_CONFIG),
            # the image's agent path, as built on this host
            "vmargs": shipped["vmargs"].replace(IMAGE_AGENT_JAR, str(AGENT_JAR)),
        }
    )
    for key, value in rewrites.items():
        text, n = re.subn(rf"(?m)^{key}=.*$", f"{key}={value}", text)
        assert n == 1, f"{PROD_CONFIG.name} must set {key} exactly once (found {n})"
    dst.write_text(text)
    return dst


@dataclass
class Server:
    """A TorchServe started by entrypoint.sh (loopback only, no token: the gateway's job)."""

    proc: subprocess.Popen
    ports: Ports
    workdir: Path
    store: Path
    models: str
    log_path: Path
    env: dict = field(default_factory=dict)

    @property
    def inference(self) -> str:
        return f"http://127.0.0.1:{self.ports.inference}"

    @property
    def management(self) -> str:
        return f"http://127.0.0.1:{self.ports.management}"

    @property
    def metrics(self) -> str:
        return f"http://127.0.0.1:{self.ports.metrics}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def probe(self, mode: str, *extra: str) -> subprocess.CompletedProcess:
        cmd = [
            sys.executable, str(PROBE), mode,
            "--management-url", self.management,
            "--inference-url", self.inference,
            "--model-store", str(self.store),
            "--models", self.models,
            *extra,
        ]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    def wait_ready(self, timeout: float = 240.0) -> None:
        """Until the readiness probe passes (every model has a READY worker)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"entrypoint exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            last = self.probe("ready")
            if last.returncode == 0:
                return
            time.sleep(1.0)
        self.stop()
        pytest.fail(f"not ready after {timeout}s: {last and last.stdout}\n{self.log()[-4000:]}")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)


def start(
    tmp: Path,
    store: Path,
    models: str = "all",
    extra_env: dict | None = None,
    config: Path | None = None,
) -> Server:
    """Run entrypoint.sh in its own process group, like a container's PID 1."""
    require_tools("bash")  # the entrypoint is a bash script
    ports = Ports.free()
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "tmp").mkdir(exist_ok=True)
    config = config or production_config(tmp / "config.properties", ports, store)
    workdir = tmp / "work"
    env = dict(
        os.environ,
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        TMPDIR=str(tmp / "tmp"),  # worker sockets and unpacked archives: apart from other servers
        TS_CONFIG_FILE=str(config),
        TS_MODEL_STORE=str(store),
        TS_MODELS=models,
        TS_WORKDIR=str(workdir),
        TS_LOG_CONFIG=str(LOG_CONFIG),
        TS_PYTHON=sys.executable,
        TS_STOP_TIMEOUT="20",
    )
    env.update(extra_env or {})
    log_path = tmp / "entrypoint.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["bash", str(ENTRYPOINT)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(proc, ports, workdir, store, models, log_path, env)


def get(url: str, **kw) -> requests.Response:
    return requests.get(url, timeout=30, **kw)


def post(url: str, **kw) -> requests.Response:
    return requests.post(url, timeout=30, **kw)
