"""The CPU image as it runs in a pod: built by `make image` (podman, offline),
started the way the base Deployment starts it, and used through the gateway.

`make test-image` builds the image and runs this file (`make test` runs it
first). The container gets what deploy/k8s/base/deployment.yaml gives the
torchserve container: its user, a read-only root filesystem, no capabilities,
no privilege escalation, emptyDirs (tmpfs) for /tmp and the working directory,
the production config mounted where the ConfigMap goes, the manifest's env and
memory limit, and the exec probe for readiness. One difference, because
podman runs with --network host here (a pod has its own network namespace;
this host has none to give): the mounted config moves TorchServe's loopback
listeners to free ports, so that they cannot collide with other servers on the
host. The gateway (deploy/gateway/, real nginx) runs on the host in front of it
with an API key, as the pod's sidecar does. A missing podman or image fails the
tests with the fix; nothing is skipped.

Measured figures (image size, start to ready, SIGTERM to exit) go to
logs/image-test.json; `make test-image` prints them.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import yaml
from PIL import Image

from paths import DEPLOY, FASHION_TEST_IMAGES, LOGS, STORE
from serving.properties import Ports, free_ports
from tests.deploy import tsproc
from tests.support import gateway as gw
from training.sources import parse_idx

pytestmark = pytest.mark.integration

IMAGE = os.environ.get("LATENTSERVE_IMAGE") or "localhost/latentserve:0.1.0-cpu"
CONTAINERS_CONF = os.environ.get("CONTAINERS_CONF") or str(DEPLOY / "docker" / "containers.conf")
DEPLOYMENT = DEPLOY / "k8s" / "base" / "deployment.yaml"
MODEL = "fashion-vae"  # a shipped VAE: its in-process TorchScript is the reference
RESULTS = LOGS / "image-test.json"


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONTAINERS_CONF=CONTAINERS_CONF)
    r = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        pytest.fail(f"podman {' '.join(args[:3])} ... exited {r.returncode}:\n{r.stderr[-3000:]}")
    return r


@dataclass(frozen=True)
class PodSpec:
    """What the base Deployment gives the torchserve container (the fields used here)."""

    grace_s: int
    pre_stop_s: int
    env: dict[str, str]
    memory: str
    config_dir: str  # where the ConfigMap is mounted
    emptydirs: dict[str, str]  # mount path -> sizeLimit

    @classmethod
    def read(cls) -> PodSpec:
        pod = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]
        (c,) = [c for c in pod["containers"] if c["name"] == "torchserve"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
        sleep = c["lifecycle"]["preStop"]["exec"]["command"]
        assert sleep[0] == "sleep", sleep
        return cls(
            grace_s=pod["terminationGracePeriodSeconds"],
            pre_stop_s=int(sleep[1]),
            env={e["name"]: e["value"] for e in c["env"]},
            memory=c["resources"]["limits"]["memory"],
            config_dir=next(p for p, v in mounts.items() if "configMap" in v),
            emptydirs={p: v["emptyDir"]["sizeLimit"] for p, v in mounts.items() if "emptyDir" in v},
        )


@dataclass
class Pod:
    name: str
    ports: Ports
    gateway: gw.Gateway
    key: str
    figures: dict = field(default_factory=dict)

    def post(self, path: str, key: str | None = "", **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key or self.key}"
        return requests.post(f"{self.gateway.url}{path}", headers=headers, timeout=60, **kw)

    def logs(self) -> str:
        r = podman("logs", self.name, check=False)
        return (r.stdout + r.stderr)[-4000:]


def size_option(limit: str) -> str:
    """A Kubernetes quantity (16Mi, 512Mi, 5Gi) as podman's size (16m, 512m, 5g)."""
    number, unit = re.fullmatch(r"(\d+)([KMG]i)", limit).groups()
    return number + unit[0].lower()


def container_config(dst: Path, ports: Ports) -> Path:
    """The production config, with only its (loopback) listener ports moved."""
    text = tsproc.PROD_CONFIG.read_text()
    for key, value in ports.properties("127.0.0.1").items():
        text, n = re.subn(rf"(?m)^{key}=.*$", f"{key}={value}", text)
        assert n == 1, f"{tsproc.PROD_CONFIG.name} must set {key} exactly once"
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.properties").write_text(text)
    dst.chmod(0o755)
    (dst / "config.properties").chmod(0o644)  # the container's user reads it
    return dst


def run_command(name: str, spec: PodSpec, ports: Ports, config_dir: Path) -> list[str]:
    cmd = [
        "run", "--detach", "--name", name,
        "--network", "host",
        "--user", "10001:10001",  # runAsUser / runAsGroup
        "--read-only", "--read-only-tmpfs=false",  # readOnlyRootFilesystem, nothing extra
        "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",  # allowPrivilegeEscalation: false
        "--memory", size_option(spec.memory),
        # Kubernetes ignores HEALTHCHECK (it runs the probes below); podman 4.3 would
        # still ask systemd, absent here, for a timer unless the interval is off too
        "--health-cmd", "none", "--health-interval", "disable",
        "--volume", f"{config_dir}:{spec.config_dir}:ro",
        "--env", f"TS_MANAGEMENT_URL=http://127.0.0.1:{ports.management}",
        "--env", f"TS_INFERENCE_URL=http://127.0.0.1:{ports.inference}",
    ]  # fmt: skip
    for path, limit in spec.emptydirs.items():
        # U: owned by the container's user, as fsGroup makes an emptyDir writable
        cmd += ["--tmpfs", f"{path}:rw,U,size={size_option(limit)}"]
    for key, value in spec.env.items():
        cmd += ["--env", f"{key}={value}"]
    return [*cmd, IMAGE]


def wait_ready(pod_name: str, timeout: float) -> float:
    """Seconds until the startup/readiness exec probe passes (from now)."""
    started = time.monotonic()
    last = None
    while time.monotonic() - started < timeout:
        state = podman("inspect", "--format", "{{.State.Running}}", pod_name).stdout.strip()
        if state != "true":
            logs = podman("logs", pod_name, check=False)
            pytest.fail(f"the container exited before it was ready:\n{logs.stderr[-4000:]}")
        last = podman("exec", pod_name, "latentserve-probe", "ready", check=False)
        if last.returncode == 0:
            return time.monotonic() - started
        time.sleep(1.0)
    pytest.fail(f"not ready after {timeout:.0f}s: {last and last.stdout}")


@pytest.fixture(scope="module")
def pod(tmp_path_factory):
    if shutil.which("podman") is None:
        pytest.fail("podman not found: `make test-image` installs it and builds the image")
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} not found: build it with `make image` (or `make test-image`)")
    tmp = tmp_path_factory.mktemp("image")
    spec = PodSpec.read()
    ports = Ports.free()
    name = f"latentserve-test-{os.getpid()}"
    podman("rm", "--force", "--time", "0", name, check=False)
    cmd = run_command(name, spec, ports, container_config(tmp / "config", ports))
    figures = {"image": IMAGE}
    figures["image_bytes"] = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    gateway = None
    try:
        started = time.monotonic()
        podman(*cmd)
        wait_ready(name, timeout=300)  # the startupProbe's budget (60 x 5 s)
        figures["start_to_ready_s"] = round(time.monotonic() - started, 1)
        key = "image-test-key-" + os.urandom(8).hex()
        (tmp / "keys").write_text(f"# API keys\n{key}\n")
        api, health, metrics = free_ports(3)
        gateway = gw.start_gateway(
            f"127.0.0.1:{ports.inference}", tmp / "keys", api, health, tmp / "gateway.log",
            metrics_upstream=f"127.0.0.1:{ports.metrics}", metrics_port=metrics,
        )  # fmt: skip
        yield Pod(name, ports, gateway, key, figures)
    finally:
        if gateway is not None:
            gateway.stop()
        podman("rm", "--force", "--time", "0", name, check=False)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(figures, indent=2) + "\n")


# ---- the reference: the shipped model in this process --------------------------------------


def fashion_images(n: int = 8) -> np.ndarray:
    """The first `n` Fashion-MNIST test images (Debian's dataset-fashion-mnist)."""
    return parse_idx(gzip.decompress(FASHION_TEST_IMAGES.read_bytes()))[:n]


def reference(file: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript's deprecation
        return torch.jit.load(str(STORE / MODEL / file)).eval()


def png_b64(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


# ---- the tests (in this order: the last one stops the container) ----------------------------


def test_runs_as_the_pod_runs_it(pod):
    assert podman("image", "inspect", "--format", "{{.Config.User}}", IMAGE).stdout.strip() == (
        "10001:10001"
    )
    users = podman("top", pod.name, "user", "comm").stdout.split("\n")[1:]
    procs = [line.split() for line in users if line.strip()]
    assert {p[1] for p in procs} >= {"bash", "java", "python"}, procs  # entrypoint, JVM, workers
    assert {p[0] for p in procs} == {"model-server"}, procs
    rootfs = podman("exec", pod.name, "touch", "/opt/venv/x", check=False)
    assert rootfs.returncode != 0 and "Read-only file system" in rootfs.stderr
    # TorchServe's effective config went to the working directory (a tmpfs)
    work = podman("exec", pod.name, "ls", "/home/model-server/work").stdout.split()
    assert "config.properties" in work


def test_encode_decode_sample_through_the_gateway(pod):
    images = fashion_images()
    encoded = pod.post(
        f"/predictions/{MODEL}-encode",
        json={"instances": [{"image_b64": png_b64(im)} for im in images]},
        headers={"X-Request-ID": "image-test-encode"},
    )
    assert encoded.status_code == 200, encoded.text
    assert encoded.headers["X-Request-ID"] == "image-test-encode"
    z_mean = np.array([p["z_mean"] for p in encoded.json()["predictions"]])
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    with torch.inference_mode():
        want_z = reference("encoder.pt")(x)[0].numpy()
    np.testing.assert_allclose(z_mean, want_z, atol=1e-4)

    decoded = pod.post(
        f"/predictions/{MODEL}-decode",
        json={"instances": [{"z": z.tolist()} for z in z_mean], "format": "array"},
    )
    assert decoded.status_code == 200, decoded.text
    pixels = np.array([p["pixels"] for p in decoded.json()["predictions"]])
    with torch.inference_mode():
        want_x = reference("decoder.pt")(torch.from_numpy(z_mean).float()).numpy()
    np.testing.assert_allclose(pixels, want_x.reshape(pixels.shape), atol=1e-4)

    body = {"n": 3, "seed": 7, "format": "array"}
    first, again = (pod.post(f"/predictions/{MODEL}-sample", json=body) for _ in range(2))
    assert first.status_code == again.status_code == 200, first.text
    samples = np.array([p["pixels"] for p in first.json()["predictions"]])
    assert samples.shape == (3, 28, 28) and 0.0 <= samples.min() <= samples.max() <= 1.0
    assert first.json() == again.json(), "the same seed must give the same samples"


def test_model_metadata_through_the_gateway(pod):
    """The image's frontend agent answers the Open Inference Protocol's metadata."""
    headers = {"Authorization": f"Bearer {pod.key}"}
    r = requests.get(f"{pod.gateway.url}/v2/models/{MODEL}-encode", headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    meta = r.json()
    assert meta["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, 28, 28]}]
    assert meta["parameters"]["image_shape"] == [1, 28, 28]
    url = f"{pod.gateway.url}/v2/models/{MODEL}-decode/ready"
    ready = requests.get(url, headers=headers, timeout=60)
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_the_gateway_refuses_requests_without_a_valid_key(pod):
    body = {"instances": [{"z": [0.0] * 32}]}
    for key in (None, "not-a-key"):
        r = pod.post(f"/predictions/{MODEL}-decode", key=key, json=body)
        assert r.status_code == 401, r.text
        assert "X-Request-ID" in r.headers


def test_metrics_come_through_the_gateway(pod):
    body = {"instances": [{"z": [0.0] * 32}]}
    assert pod.post(f"/predictions/{MODEL}-decode", json=body).status_code == 200
    r = requests.get(f"{pod.gateway.metrics_url}/metrics", timeout=30)
    assert r.status_code == 200, r.text[:500]
    assert f'model_name="{MODEL}-decode"' in r.text


def test_sigterm_stops_it_cleanly_within_the_grace_period(pod):
    spec = PodSpec.read()
    budget = spec.grace_s - spec.pre_stop_s  # the kubelet sends SIGTERM after preStop
    started = time.monotonic()
    podman("kill", "--signal", "TERM", pod.name)
    podman("wait", pod.name, timeout=budget + 30)
    elapsed = time.monotonic() - started
    pod.figures["sigterm_to_exit_s"] = round(elapsed, 1)
    code = podman("inspect", "--format", "{{.State.ExitCode}}", pod.name).stdout.strip()
    logs = pod.logs()
    assert code == "0", logs
    assert "TorchServe stopped cleanly" in logs
    assert elapsed < budget, f"stopped after {elapsed:.1f}s, the pod allows {budget}s"
