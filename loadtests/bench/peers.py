"""`make bench` against the peers: plain FastAPI measured in the same run, the rest quoted.

The issue that set the targets measured plain FastAPI, Triton, LitServe and
Ray Serve with the same encoder and payloads, on a machine about twice as fast
as the one `make bench` runs on now (its "latentserve before" figures are about
twice ours for the same code). Ratios against figures from another machine say
little, so `make bench` runs the plain-server peer itself, on this machine, in
the same run (`loadtests/bench/peer_fastapi.py`: FastAPI + uvicorn with 2 workers,
our own engine, no batching), and uses its figures for the JSON target
wherever it measured them. Triton (pytriton), LitServe and Ray Serve are not
dependencies of the project; their figures stay quoted, with their source, and
the report says which figures are which. The targets (`targets.py`): on
the JSON payload, at least the best JSON peer at every row; on binary tensors,
at least Triton's binary figures.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadtests import payloads
from loadtests.bench.checks import counts, v2_answer
from loadtests.bench.httpgen import run_point
from loadtests.bench.peer_fastapi import READY_ENV
from serving.properties import free_ports

# Issue 11's table, measured side by side in one run on a 2-core machine (about twice as
# fast as the one make bench runs on now): the same
# TorchScript encoder, the same JSON body of base64 PNGs (Triton: binary tensors), 2 workers
# with 1 torch thread each, 10 s per point. Images/s (= req/s for 1 image) as (low, high)
# of the quoted range; a single quoted figure is (x, x).
PEERS_SOURCE = (
    "issue 11 (plain FastAPI + uvicorn with 2 workers, Triton via pytriton 0.7 with binary "
    "tensors, LitServe 0.2.19, Ray Serve 2.60)"
)
TRITON = "Triton (binary)"
FASTAPI_LABEL, FASTAPI_LABEL_V2 = "fastapi encode", "fastapi v2 encode"  # measured rows
PEER_NAMES = ("FastAPI", TRITON, "LitServe", "Ray Serve")
_QUOTED = {  # (images per request, clients): one (low, high) per PEER_NAMES
    (1, 1): ((1002, 1064), (117, 117), (164, 168), (68, 68)),
    (1, 8): ((1952, 2091), (1613, 1637), (706, 844), (213, 213)),
    (1, 32): ((1120, 2003), (2257, 2306), (681, 1193), (252, 252)),
    (64, 1): ((9139, 9139), (5050, 5107), (3283, 4704), (2477, 2477)),
    (64, 4): ((18080, 18080), (10368, 10470), (6925, 7392), (5549, 5549)),
    (64, 16): ((12659, 17638), (21882, 25325), (8211, 11853), (6790, 6790)),
}
PEERS = {row: dict(zip(PEER_NAMES, figures, strict=True)) for row, figures in _QUOTED.items()}
# latentserve's own figures in the same table, before issue 11 (context, not a target)
BEFORE = {
    (1, 1): (115, 124), (1, 8): (2091, 2227), (1, 32): (3950, 4277),
    (64, 1): (4531, 4634), (64, 4): (7782, 7834), (64, 16): (17402, 18752),
}  # fmt: skip


def _one(rows: list[dict], label: str, c: int) -> dict | None:
    return next((r for r in rows if r["label"] == label and r["concurrency"] == c), None)


def against_peers(rows: list[dict]) -> tuple[dict, dict]:
    """Ours next to the best peer at each row of issue 11's table (JSON, then binary).

    FastAPI's figure is the one measured in this run (`fastapi encode x<k>`) where
    there is one; the quoted one otherwise."""
    table = []
    for (k, c), peers in PEERS.items():
        json_peers = {name: hi for name, (_, hi) in peers.items() if name != TRITON}
        measured = _one(rows, f"{FASTAPI_LABEL} x{k}", c)
        if measured:
            json_peers["FastAPI"] = measured["items_per_s"]
        best = max(json_peers, key=json_peers.get)
        ours = _one(rows, f"encode x{k}", c)
        ours_v2 = _one(rows, f"v2 encode x{k}", c)
        table.append(
            {
                "images": k,
                "clients": c,
                "json": ours["items_per_s"] if ours else None,
                "best_peer": best,
                "best_peer_figure": json_peers[best],
                "v2": ours_v2["items_per_s"] if ours_v2 else None,
                "triton": peers[TRITON][1],
                "before": BEFORE[(k, c)],
                "fastapi_measured": measured["items_per_s"] if measured else None,
                "fastapi_v2_measured": _figure(_one(rows, f"{FASTAPI_LABEL_V2} x{k}", c)),
            }
        )

    def lowest(key: str, figure: str) -> float | None:  # None unless every row was measured
        if any(r[key] is None for r in table):
            return None
        return min(r[key] / r[figure] for r in table)

    return (
        {"value": lowest("json", "best_peer_figure"), "rows": table},
        {"value": lowest("v2", "triton"), "rows": table},
    )


def peers_markdown(table: list[dict]) -> list[str]:
    """The report's section: each row of issue 11's table with ours from this run."""
    lines = [
        "## Against the peers (issue 11's table)",
        "",
        "Ours and `FastAPI (here)` from this run, on this machine (encode of Fashion-MNIST "
        "test images: `JSON` the base64 PNG JSON API, `v2` binary UINT8 tensors; FastAPI: "
        "`loadtests/bench/peer_fastapi.py`, 2 uvicorn workers running our engine without "
        f"batching). The other figures as quoted by {PEERS_SOURCE}, the high end of each "
        "quoted range, measured on a machine about twice as fast. Images/s (= req/s for 1 "
        "image).",
        "",
        "| images x clients | ours JSON | FastAPI (here) JSON | best JSON peer | JSON ratio | "
        "ours v2 binary | FastAPI (here) v2 | Triton binary (quoted) | v2 ratio | "
        "latentserve before (quoted) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table:
        ours, v2 = r["json"], r["v2"]
        lines.append(
            f"| {r['images']} x {r['clients']} | {_cell(ours)} | "
            f"{_cell(r.get('fastapi_measured'))} | {r['best_peer_figure']:.0f} "
            f"({r['best_peer']}) | {_ratio(ours, r['best_peer_figure'])} | {_cell(v2)} | "
            f"{_cell(r.get('fastapi_v2_measured'))} | "
            f"{r['triton']:.0f} | {_ratio(v2, r['triton'])} | "
            f"{r['before'][0]:.0f}-{r['before'][1]:.0f} |"
        )
    return lines


def _figure(row: dict | None) -> float | None:
    return row["items_per_s"] if row else None


def _cell(v: float | None) -> str:
    return "not measured" if v is None else f"{v:.0f}"


def _ratio(ours: float | None, theirs: float) -> str:
    return "-" if ours is None else f"{ours / theirs:.2f}"


# ---- the plain-server peer, measured in the run ------------------------------------
def fastapi_points(model_dir: Path, plan, outputs: dict[str, str], log) -> list[dict]:
    """FastAPI + uvicorn (2 workers, `loadtests/bench/peer_fastapi.py`) at each row of issue 11's
    table, JSON and binary v2, as `fastapi encode x<k>` / `fastapi v2 encode x<k>` rows."""
    port = free_ports(1)[0]
    url = f"http://127.0.0.1:{port}"
    log(f"peer: FastAPI + uvicorn, 2 workers, on {url}")
    proc = start_peer(model_dir, port)
    try:
        pools = {k: payloads.encode_pool(k, 32, seed=k) for k in (1, plan.big)}
        v2_pools = {k: payloads.v2_encode_pool(k, 32, seed=k) for k in (1, plan.big)}
        routes = {
            FASTAPI_LABEL: ("/predictions/encode", pools, lambda k: counts(b'"z_mean"', k)),
            FASTAPI_LABEL_V2: (
                "/v2/models/encode/infer",
                v2_pools,
                lambda k: v2_answer(k, outputs),
            ),
        }
        wait_ready(proc, url + routes[FASTAPI_LABEL][0], pools[1].bodies[0])
        rows = []
        for label, (path, by_k, check) in routes.items():
            run_point(url, path, by_k[1].next_request, 32, 2.0, 0.0, 1, check(1))  # warm-up
            for k, c in PEERS:
                k = plan.big if k > 1 else 1
                point = run_point(
                    url, path, by_k[k].next_request, c, plan.duration, plan.warmup,
                    items_per_request=k, check=check(k), label=f"{label} x{k}",
                )  # fmt: skip
                rows.append(point.to_dict() | {"archive": "fastapi", "path": path})
                log(
                    f"peer {label} x{k} c={c}: {point.items_per_s:9.1f} items/s "
                    f"p50 {point.p50_ms:6.2f} ms err {point.errors}"
                )
        return rows
    finally:
        stop_peer(proc)


def start_peer(model_dir: Path, port: int, workers: int = 2) -> subprocess.Popen:
    """The peer in its own process group; `proc.ready_dir` gets one file per worker
    that can answer (`wait_ready` waits for all of them)."""
    cmd = [sys.executable, "-m", "loadtests.bench.peer_fastapi", "--model-dir", str(model_dir)]
    cmd += ["--port", str(port), "--workers", str(workers)]
    ready_dir = Path(tempfile.mkdtemp(prefix="latentserve-peer-"))
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ, **{READY_ENV: str(ready_dir)}),
        start_new_session=True,  # its own process group: the workers it forks stop with it
    )
    proc.ready_dir, proc.workers = ready_dir, workers
    return proc


def stop_peer(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()
    shutil.rmtree(proc.ready_dir, ignore_errors=True)


def wait_ready(proc: subprocess.Popen, url: str, body: bytes, timeout: float = 120.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the FastAPI peer exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            all_up = len(list(proc.ready_dir.iterdir())) >= proc.workers
            r = requests.post(url, data=body, headers={"content-type": "application/json"})
            if all_up and r.status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the FastAPI peer did not answer {url} within {timeout:.0f} s")
