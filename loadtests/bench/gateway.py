"""Latency the authenticating gateway adds per request: TorchServe direct vs through it.

One TorchServe (the shipped `fashion-vae` archives, free loopback ports) and one
gateway (deploy/gateway/ via tests/support/gateway.py, a key in a keys file) in
front of it; the same lone-latent decode request, with the same Authorization
header, sent by `loadtests.bench.httpgen` at 1 and 32 concurrent connections, directly
and through the gateway, alternating (direct, gateway, direct, gateway, ...) so
that drift on a shared machine hits both alike. Reports the median over rounds of
each point's p50 and mean, the difference (the gateway's cost) and the CPU the
gateway's nginx used. Writes loadtests/results/gateway-latency[-static].{json,md}.

`--backend static` puts a plain nginx answering a fixed 200 where TorchServe
was: the gateway's own cost without the model server's variance (on a shared
machine TorchServe's latency varies more between rounds than the gateway adds).

    make bench-gateway
    .venv/bin/python -m loadtests.bench.gateway [--backend static] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

from loadtests.bench.httpgen import cpu_seconds_pids, run_point
from paths import LOADTEST_RESULTS, STORE
from serving.properties import free_ports
from serving.server import start_server
from tests.support.gateway import as_this_user, start_gateway, start_nginx

MODEL = "fashion-vae"


STATIC_CONF = """daemon off;
worker_processes 1;
pid nginx.pid;
error_log stderr warn;
events {
    worker_connections 1024;
}
http {
    access_log off;
    client_body_temp_path body;
    proxy_temp_path proxy;
    fastcgi_temp_path fastcgi;
    uwsgi_temp_path uwsgi;
    scgi_temp_path scgi;
    server {
        listen 127.0.0.1:PORT;
        default_type application/json;
        location / {
            return 200 '{"predictions": [[0.0]]}';
        }
    }
}
"""


@contextmanager
def static_backend(tmp: Path):
    """A plain nginx answering every request 200 at once: (url, pids)."""
    port = free_ports(1)[0]
    run = tmp / "static"
    run.mkdir()
    (run / "nginx.conf").write_text(as_this_user(STATIC_CONF.replace("PORT", str(port))))
    url = f"http://127.0.0.1:{port}"
    with start_nginx(run / "nginx.conf", run, tmp / "static.log", url + "/", 20) as server:
        yield url, [server.proc.pid]


@contextmanager
def torchserve_backend(tmp: Path):
    with start_server(tmp / "ts", [STORE / MODEL]) as server:
        yield server.url, server.all_pids()


def measure(rounds: int, seconds: float, concurrencies: list[int], backend: str) -> dict:
    latent_dim = json.loads((STORE / MODEL / "manifest.json").read_text())["latent_dim"]
    body = json.dumps({"instances": [{"z": [0.1] * latent_dim}]}).encode()
    key = secrets.token_urlsafe(24)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    path = f"/predictions/{MODEL}-decode"
    rows: dict[tuple[str, int], list] = {}
    with tempfile.TemporaryDirectory(prefix="gateway-latency-") as tmp:
        tmp = Path(tmp)
        (tmp / "keys").write_text(key + "\n")
        start = static_backend if backend == "static" else torchserve_backend
        with start(tmp) as (backend_url, backend_pids):
            port, health = free_ports(2)
            upstream = backend_url.removeprefix("http://")
            with start_gateway(upstream, tmp / "keys", port, health, tmp / "gw.log") as gw:
                nginx = [gw.proc.pid] + [p.pid for p in psutil.Process(gw.proc.pid).children()]
                targets = {"direct": backend_url, "gateway": gw.url}
                for r in range(rounds):
                    for c in concurrencies:
                        for name, url in targets.items():
                            cpu0, t0 = cpu_seconds_pids(nginx), time.perf_counter()
                            point = run_point(
                                url, path, lambda: (body, headers), c, seconds,
                                warmup=2.0, label=f"{name} c={c} round {r}",
                                server_pids=backend_pids,
                            )  # fmt: skip
                            nginx_cpu = (cpu_seconds_pids(nginx) - cpu0) / (
                                time.perf_counter() - t0
                            )
                            rows.setdefault((name, c), []).append((point, nginx_cpu))
                            print(
                                f"{point.label}: p50 {point.p50_ms:.2f} ms, mean "
                                f"{point.mean_ms:.2f} ms, {point.req_per_s:.0f} req/s, "
                                f"errors {point.errors}, nginx {nginx_cpu:.2f} cores",
                                flush=True,
                            )
    model = f"{MODEL}-decode" if backend == "torchserve" else "static 200 (nginx)"
    out = {"model": model, "backend": backend, "rounds": rounds, "seconds": seconds}
    out["points"] = []
    for c in concurrencies:
        row = {"concurrency": c}
        for name in ("direct", "gateway"):
            points = rows[(name, c)]
            row[name] = {
                "p50_ms": statistics.median(p.p50_ms for p, _ in points),
                "mean_ms": statistics.median(p.mean_ms for p, _ in points),
                "p99_ms": statistics.median(p.p99_ms for p, _ in points),
                "req_per_s": statistics.median(p.req_per_s for p, _ in points),
                "errors": sum(p.errors for p, _ in points),
                "nginx_cores": statistics.median(n for _, n in points),
            }
        row["added_p50_ms"] = row["gateway"]["p50_ms"] - row["direct"]["p50_ms"]
        row["added_mean_ms"] = row["gateway"]["mean_ms"] - row["direct"]["mean_ms"]
        g = row["gateway"]
        row["nginx_cpu_ms_per_request"] = 1000 * g["nginx_cores"] / max(g["req_per_s"], 1e-9)
        out["points"].append(row)
    return out


def markdown(result: dict) -> str:
    lines = [
        f"Gateway latency: backend `{result['model']}`, one latent per request, median of "
        f"{result['rounds']} alternating rounds of {result['seconds']:.0f} s each.",
        "",
        "| clients | direct p50 | gateway p50 | added p50 | direct mean | gateway mean "
        "| added mean | req/s direct / gateway | nginx CPU per request | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["points"]:
        d, g = row["direct"], row["gateway"]
        lines.append(
            f"| {row['concurrency']} | {d['p50_ms']:.2f} ms | {g['p50_ms']:.2f} ms "
            f"| {row['added_p50_ms']:+.2f} ms | {d['mean_ms']:.2f} ms | {g['mean_ms']:.2f} ms "
            f"| {row['added_mean_ms']:+.2f} ms | {d['req_per_s']:.0f} / {g['req_per_s']:.0f} "
            f"| {row['nginx_cpu_ms_per_request']:.3f} ms | {d['errors'] + g['errors']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    p.add_argument("--backend", choices=["torchserve", "static"], default="torchserve")
    args = p.parse_args()
    result = measure(args.rounds, args.seconds, args.concurrency, args.backend)
    LOADTEST_RESULTS.mkdir(parents=True, exist_ok=True)
    name = "gateway-latency" + ("-static" if args.backend == "static" else "")
    (LOADTEST_RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (LOADTEST_RESULTS / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
