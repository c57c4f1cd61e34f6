"""The authenticating gateway (deploy/gateway/, nginx + njs) as a real process.

    with start_gateway("127.0.0.1:8080", keys_file, port, health_port, log) as gw:
        requests.post(f"{gw.url}/predictions/m-decode", headers={"Authorization": f"Bearer {key}"})
        gw.entries()  # the access log, one dict per request

The config is `deploy/gateway/nginx.conf` byte for byte except the listen
ports, the upstream addresses and the keys file path (`render_config`), so
the tests run the file Kubernetes mounts. `start_balancer` starts a plain
round-robin nginx in front of several gateways (what a Service does).
Missing nginx fails the test with the fix (`make setup`), never skips it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from paths import DEPLOY
from serving.properties import free_ports

GATEWAY_DIR = DEPLOY / "gateway"
NGINX_CONF = GATEWAY_DIR / "nginx.conf"
AUTH_JS = GATEWAY_DIR / "auth.js"
# What the production file names, and therefore what a test rewrites.
PROD_API_PORT, PROD_HEALTH_PORT, PROD_METRICS_PORT = 9080, 9081, 9082
PROD_UPSTREAM, PROD_METRICS_UPSTREAM = "127.0.0.1:8080", "127.0.0.1:8082"
PROD_KEYS_FILE = "/etc/latentserve-gateway/keys/keys"


def require_nginx() -> str:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    module = Path("/usr/lib/nginx/modules/ngx_http_js_module.so")
    if nginx is None or not module.exists():
        pytest.fail(
            "nginx with the njs module not found: run `make setup` "
            "(apt-get install nginx-light libnginx-mod-http-js)"
        )
    return nginx


def _sub(text: str, old: str, new: str) -> str:
    n = text.count(old)
    assert n == 1, f"{NGINX_CONF.name} must contain {old!r} exactly once (found {n})"
    return text.replace(old, new)


def render_config(
    dst_dir: Path,
    upstream: str,
    keys_file: Path,
    port: int,
    health_port: int,
    metrics_port: int,
    metrics_upstream: str,
    host: str = "127.0.0.1",
) -> Path:
    """deploy/gateway/ into `dst_dir` with only ports, upstreams and the keys path changed."""
    text = NGINX_CONF.read_text()
    text = _sub(text, f"listen {PROD_API_PORT};", f"listen {host}:{port};")
    text = _sub(text, f"listen {PROD_HEALTH_PORT};", f"listen {host}:{health_port};")
    text = _sub(text, f"listen {PROD_METRICS_PORT};", f"listen {host}:{metrics_port};")
    text = _sub(text, f"server {PROD_UPSTREAM};", f"server {upstream};")
    text = _sub(text, f"server {PROD_METRICS_UPSTREAM};", f"server {metrics_upstream};")
    text = _sub(text, PROD_KEYS_FILE, str(Path(keys_file).resolve()))
    dst_dir.mkdir(parents=True, exist_ok=True)
    (dst_dir / "nginx.conf").write_text(as_this_user(text))
    shutil.copyfile(AUTH_JS, dst_dir / "auth.js")
    return dst_dir / "nginx.conf"


def as_this_user(text: str) -> str:
    # In the pod nginx runs as uid 10001 and its workers keep that uid. Started
    # as root (a CI container), nginx would switch its workers to `nobody`, who
    # cannot read pytest's 0700 temp dirs: keep them root there.
    if os.geteuid() == 0:
        text = text.replace("\nevents {", "\nuser root;\n\nevents {", 1)
    return text


@dataclass
class Nginx:
    """A running nginx master (foreground, own process group) and its logs."""

    proc: subprocess.Popen
    run_dir: Path
    log: Path  # stdout: the access log (JSON lines for a gateway)
    stderr_log: Path

    def entries(self) -> list[dict]:
        """The access log's JSON lines (lines that are not JSON are skipped)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def errors(self) -> str:
        return self.stderr_log.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGQUIT: nginx's graceful stop (finish in-flight requests); then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_nginx(conf: Path, run_dir: Path, log: Path, ready_url: str, timeout: float) -> Nginx:
    nginx = require_nginx()
    log.parent.mkdir(parents=True, exist_ok=True)
    stderr_log = log.with_name(log.name + ".stderr")
    cmd = [nginx, "-p", f"{run_dir}/", "-e", "stderr", "-c", str(conf)]
    with open(log, "ab") as out, open(stderr_log, "ab") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, start_new_session=True)
    server = Nginx(proc, run_dir, log, stderr_log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"nginx exited with {proc.returncode}:\n{server.errors()[-3000:]}")
        try:
            if requests.get(ready_url, timeout=2).status_code < 500:
                return server
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    server.stop()
    pytest.fail(f"nginx did not answer {ready_url} within {timeout}s:\n{server.errors()[-3000:]}")


@dataclass
class Gateway(Nginx):
    port: int = 0
    health_port: int = 0
    metrics_port: int = 0
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def health_url(self) -> str:
        return f"http://{self.host}:{self.health_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}"

    def __enter__(self) -> Gateway:
        return self


def start_gateway(
    upstream: str,
    keys_file: Path,
    port: int,
    health_port: int,
    log: Path,
    *,
    metrics_upstream: str | None = None,
    metrics_port: int | None = None,
    host: str = "127.0.0.1",
    run_dir: Path | None = None,
    timeout: float = 20.0,
) -> Gateway:
    """The gateway on `host`:`port` (API), `health_port` and `metrics_port` (free if
    None), forwarding to `upstream` ("127.0.0.1:8080", TorchServe's inference port)
    and `metrics_upstream` (its metrics port; `upstream` if None). Returns once
    /healthz answers; the access log goes to `log`, nginx's own messages beside it
    (`<log>.stderr`). Use as a context manager, or call `stop()`."""
    metrics_port = metrics_port or free_ports(1, avoid=frozenset({port, health_port}))[0]
    run_dir = Path(run_dir or log.with_name(log.stem + "-nginx"))
    conf = render_config(
        run_dir, upstream, keys_file, port, health_port, metrics_port,
        metrics_upstream or upstream, host,
    )  # fmt: skip
    base = start_nginx(conf, run_dir, log, f"http://{host}:{health_port}/healthz", timeout)
    return Gateway(**vars(base), port=port, health_port=health_port, metrics_port=metrics_port,
                   host=host)  # fmt: skip


def start_balancer(upstreams: list[str], port: int, log: Path, timeout: float = 20.0) -> Nginx:
    """A round-robin nginx on 127.0.0.1:`port` in front of `upstreams` (what a
    Kubernetes Service does across pods); it passes every header through."""
    run_dir = log.with_name(log.stem + "-nginx")
    run_dir.mkdir(parents=True, exist_ok=True)
    servers = "".join(f"        server {u};\n" for u in upstreams)
    conf = run_dir / "nginx.conf"
    conf.write_text(
        as_this_user(
            "daemon off;\nworker_processes 1;\npid nginx.pid;\nerror_log stderr warn;\n"
            "events {\n    worker_connections 1024;\n}\n"
            "http {\n"
            "    client_body_temp_path body;\n    proxy_temp_path proxy;\n"
            "    fastcgi_temp_path fastcgi;\n    uwsgi_temp_path uwsgi;\n    scgi_temp_path scgi;\n"
            '    log_format lb escape=json \'{"upstream":"$upstream_addr","status":$status}\';\n'
            "    access_log /dev/stdout lb;\n"
            "    client_max_body_size 0;\n"
            f"    upstream replicas {{\n{servers}        keepalive 16;\n    }}\n"
            f"    server {{\n        listen 127.0.0.1:{port};\n"
            "        location = /lb-health {\n            return 204;\n        }\n"
            "        location / {\n            proxy_pass http://replicas;\n"
            "            proxy_http_version 1.1;\n"
            '            proxy_set_header Connection "";\n'
            "        }\n    }\n}\n"
        )
    )
    return start_nginx(conf, run_dir, log, f"http://127.0.0.1:{port}/lb-health", timeout)
