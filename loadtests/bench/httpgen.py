"""A small closed-loop HTTP/1.1 load generator: asyncio streams, keep-alive, no dependency.

`concurrency` connections each send one request, wait for its answer, send the
next (closed loop), for `warmup + duration` seconds; only answers completed in
the measurement window count. Bodies are pre-built bytes, so the generator does
little more than socket I/O: it reports the CPU it used, so a reader can check
that the client was not the bottleneck (see `Point.client_cpu`).

Why not aiohttp or locust here: both parse and build much more per request
(locust's FastHttpUser with gevent takes several times the CPU per request of
this loop on this machine), and on a 2-core box every client cycle is taken
from the server. The protocol subset needed against TorchServe is small:
Content-Length or chunked bodies, keep-alive, `Connection: close`, and the
extra headers a request needs (the v2 binary bodies' Inference-Header-Content-Length),
which each pre-built request carries with its body.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# (status, body, lower-case response headers) -> None, or why the answer is wrong
Check = Callable[[int, bytes, dict[str, str]], str | None]
# a pre-built request: its body and any headers it needs besides Host, Content-Length
NextRequest = Callable[[], tuple[bytes, Mapping[str, str]]]


def ok_200(status: int, body: bytes, headers: dict[str, str]) -> str | None:
    return None if status == 200 else f"HTTP {status}"


class HTTPError(Exception):
    pass


def cpu_seconds_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_seconds_pids(pids: list[int]) -> float:
    """utime + stime of the given processes (those that vanished count 0)."""
    total, tick = 0, os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat)."""
    first = Path("/proc/stat").read_text().split("\n", 1)[0]
    values = [int(v) for v in first.split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Point:
    """One measured load point."""

    label: str
    concurrency: int
    items_per_request: int
    seconds: float
    requests: int
    errors: int
    req_per_s: float
    items_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    client_cpu: float  # cores the generator used (CPU seconds / wall seconds)
    server_cpu: float  # cores the server's processes used
    machine_cpu: float  # cores busy on the whole machine
    error_samples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, dict, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HTTPError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    close = headers.get("connection", "").lower() == "close"
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers from TorchServe
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(chunks)
    else:  # body until close
        body, close = await reader.read(), True
    return status, body, headers, close


def _request(
    host: str, port: int, path: str, body: bytes, headers: Mapping[str, str], content_type: str
) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if "Content-Type" not in headers:
        extra += f"Content-Type: {content_type}\r\n"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def _client(
    host: str,
    port: int,
    path: str,
    next_request: NextRequest,
    content_type: str,
    check: Check,
    window: tuple[float, float],
    stop_at: float,
    out: dict,
    timeout: float,
) -> None:
    reader = writer = None
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), timeout
                )
            payload, extra = next_request()
            writer.write(_request(host, port, path, payload, extra, content_type))
            status, body, headers, close = await asyncio.wait_for(_read_response(reader), timeout)
            reason = check(status, body, headers)
            if close:
                writer.close()
                reader = writer = None
        except (TimeoutError, OSError, asyncio.IncompleteReadError, HTTPError) as err:
            reason = f"{type(err).__name__}: {err}"
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)  # no hot loop against a closed port
        t1 = time.perf_counter()
        if window[0] <= t1 <= window[1]:
            out["lat"].append(t1 - t0)
            if reason is not None:
                out["errors"] += 1
                if len(out["samples"]) < 5:
                    out["samples"].append(reason[:200])
    if writer is not None:
        writer.close()


def run_point(
    url: str,
    path: str,
    next_request: NextRequest,
    concurrency: int,
    duration: float,
    warmup: float = 1.0,
    items_per_request: int = 1,
    check: Check = ok_200,
    content_type: str = "application/json",
    server_pids: list[int] | None = None,
    label: str = "",
    timeout: float = 60.0,
) -> Point:
    """Closed-loop load of `concurrency` connections; statistics over `duration` seconds.

    `next_request` gives each request's body and extra headers (`PayloadPool.next_request`);
    `content_type` is sent when those headers name none.
    """
    host, port = url.removeprefix("http://").split(":")
    port = int(port)
    out: dict = {"lat": [], "errors": 0, "samples": []}
    marks: dict = {}

    async def main() -> None:
        start = time.perf_counter()
        window = (start + warmup, start + warmup + duration)
        stop_at = window[1]
        loop = asyncio.get_running_loop()

        def mark() -> None:  # CPU counters at the window's start
            marks.update(
                t=time.perf_counter(),
                client=cpu_seconds_self(),
                server=cpu_seconds_pids(server_pids or []),
                machine=machine_busy_seconds(),
            )

        loop.call_at(loop.time() + warmup, mark)
        await asyncio.gather(
            *(
                _client(
                    host,
                    port,
                    path,
                    next_request,
                    content_type,
                    check,
                    window,
                    stop_at,
                    out,
                    timeout,
                )  # fmt: skip
                for _ in range(concurrency)
            )
        )

    # CPU counters run from the window's start until the last client stopped (its
    # final request may end a little after the window), divided by that wall time.
    asyncio.run(main())
    wall = max(time.perf_counter() - marks.get("t", time.perf_counter()), 1e-9)
    client = cpu_seconds_self() - marks.get("client", 0.0)
    server = cpu_seconds_pids(server_pids or []) - marks.get("server", 0.0)
    machine = machine_busy_seconds() - marks.get("machine", 0.0)
    lat = np.array(out["lat"]) * 1000.0
    n = len(lat)
    ok = n - out["errors"]
    pct = np.percentile(lat, [50, 95, 99]) if n else [float("nan")] * 3
    return Point(
        label=label,
        concurrency=concurrency,
        items_per_request=items_per_request,
        seconds=duration,
        requests=n,
        errors=out["errors"],
        req_per_s=ok / duration,
        items_per_s=ok * items_per_request / duration,
        p50_ms=float(pct[0]),
        p95_ms=float(pct[1]),
        p99_ms=float(pct[2]),
        mean_ms=float(lat.mean()) if n else float("nan"),
        client_cpu=client / wall,
        server_cpu=server / wall,
        machine_cpu=machine / wall,
        error_samples=out["samples"],
    )
