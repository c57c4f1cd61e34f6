"""Fixed-rate soak: steady mixed traffic for a while, errors and worker memory recorded.

    python -m loadtests.soak --seconds 300          # `make soak` (its own TorchServe)

Open loop: a scheduler sends request i at start + i / rate, whatever the
server does (a slow server therefore shows as latency and lateness, not as a
lower rate). Traffic cycles through single and 16-item encode, single and
16-item decode, 4-image samples and 4-image scores of one model, from the
Fashion-MNIST test split. Every answer is checked. Once a second the resident set size (VmRSS) of
every worker of the model's archives and of the frontend is read from
/proc. Growth is measured after the warm-up: median of the last three samples
against the median of the first three after warm-up.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import requests

from loadtests import payloads
from paths import LOADTEST_RESULTS, STORE
from serving.archive import OPERATIONS
from serving.query import worker_pids
from serving.server import start_server


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class Traffic:
    """(operation, body, check) triples cycled through by the soak."""

    jobs: list[tuple[str, bytes, object]]

    @classmethod
    def build(cls, latents: np.ndarray, latent_dim: int, vae: bool) -> Traffic:
        enc1 = payloads.encode_pool(1, 16, seed=1)
        enc16 = payloads.encode_pool(16, 8, seed=2)
        score4 = payloads.encode_pool(4, 8, seed=5)
        dec1 = payloads.decode_pool(latents, 1, 16, seed=3)
        dec16 = payloads.decode_pool(latents, 16, 8, seed=4)
        jobs = []
        for i in range(16):
            jobs.append(("encode", enc1.bodies[i], ("encode", 1, latent_dim, vae)))
            jobs.append(("decode", dec1.bodies[i], ("images", 1)))
            if i % 2 == 0:
                jobs.append(("encode", enc16.bodies[i // 2], ("encode", 16, latent_dim, vae)))
                jobs.append(("decode", dec16.bodies[i // 2], ("images", 16)))
                jobs.append(("sample", payloads.sample_body(4, i), ("sample", 4, i)))
                jobs.append(("score", score4.bodies[i // 2], ("score", 4)))
        return cls(jobs)


def check_answer(resp: requests.Response, spec: tuple) -> str | None:
    if resp.status_code != 200:
        return f"HTTP {resp.status_code}: {resp.text[:200]}"
    try:
        answer = resp.json()
    except ValueError:
        return "not JSON"
    kind = spec[0]
    if kind == "encode":
        return payloads.check_encode(answer, spec[1], spec[2], spec[3])
    if kind == "images":
        return payloads.check_images(answer, spec[1])
    if kind == "score":
        return payloads.check_score(answer, spec[1])
    return payloads.check_sample(answer, spec[1], spec[2])


@dataclass
class SoakReport:
    model: str
    seconds: float
    warmup_s: float
    rate_per_s: float
    sent: int
    ok: int
    errors: int
    late_sends: int  # sends that started > 100 ms after their slot
    p50_ms: float
    p99_ms: float
    max_ms: float
    worker_pids_before: dict[str, list[int]]
    worker_pids_after: dict[str, list[int]]
    rss_mib_after_warmup: dict[str, float]  # "<archive> <pid>" -> MiB
    rss_mib_end: dict[str, float]
    rss_growth: dict[str, float]  # fraction, per worker
    max_worker_rss_growth: float
    frontend_rss_mib: tuple[float, float] | None
    error_samples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [
            f"soak {self.model}: {self.seconds:.0f}s at {self.rate_per_s:g} req/s "
            f"(warm-up {self.warmup_s:.0f}s): {self.sent} sent, {self.ok} ok, "
            f"{self.errors} errors, {self.late_sends} late; latency p50 {self.p50_ms:.1f} ms, "
            f"p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms",
        ]
        for key, growth in self.rss_growth.items():
            lines.append(
                f"  worker {key}: RSS {self.rss_mib_after_warmup[key]:.1f} -> "
                f"{self.rss_mib_end[key]:.1f} MiB after warm-up ({growth * 100:+.2f}%)"
            )
        if self.frontend_rss_mib:
            a, b = self.frontend_rss_mib
            lines.append(f"  frontend (JVM, not a target): RSS {a:.0f} -> {b:.0f} MiB")
        return "\n".join(lines)


def _median(values: list[int]) -> float:
    return float(np.median(values)) if values else float("nan")


def learn_latents(url: str, model: str) -> tuple[np.ndarray, int, bool]:
    images = payloads.test_images()
    body = payloads.encode_body(images[:128])
    resp = requests.post(
        f"{url}/predictions/{model}-encode",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    resp.raise_for_status()
    preds = resp.json()["predictions"]
    latents = np.array([p["z_mean"] for p in preds])
    return latents, latents.shape[1], preds[0]["z_log_var"] is not None


def run_soak(
    url: str,
    management_url: str,
    model: str,
    seconds: float,
    rate: float = 25.0,
    warmup: float | None = None,
    frontend_pid: int | None = None,
    threads: int = 16,
    log=print,
) -> SoakReport:
    if warmup is None:
        warmup = min(60.0, max(5.0, seconds / 3))
    archives = [f"{model}-{op}" for op in OPERATIONS]
    pids_before = {a: worker_pids(management_url, a) for a in archives}
    latents, dim, vae = learn_latents(url, model)
    jobs = Traffic.build(latents, dim, vae).jobs
    local = threading.local()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    late = 0

    def send(i: int, slot: float) -> None:
        nonlocal late
        op, body, spec = jobs[i % len(jobs)]
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        t0 = time.monotonic()
        try:
            resp = session.post(
                f"{url}/predictions/{model}-{op}",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
            error = check_answer(resp, spec)
        except requests.RequestException as err:
            error = f"{type(err).__name__}: {err}"
        t1 = time.monotonic()
        with lock:
            latencies.append(t1 - t0)
            if t0 - slot > 0.1:
                late += 1
            if error is not None:
                errors.append(f"{op}: {error}")

    rss: dict[str, list[tuple[float, int]]] = {
        f"{a} {pid}": [] for a in archives for pid in pids_before[a]
    }
    frontend: list[tuple[float, int]] = []
    total = int(seconds * rate)
    start = time.monotonic()
    next_sample, next_log = start, start + 30.0
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for i in range(total):
            slot = start + i / rate
            now = time.monotonic()
            while now >= next_sample:  # memory, once a second
                for key in rss:
                    value = rss_bytes(int(key.rsplit(" ", 1)[1]))
                    if value is not None:
                        rss[key].append((now - start, value))
                if frontend_pid and (value := rss_bytes(frontend_pid)) is not None:
                    frontend.append((now - start, value))
                next_sample += 1.0
            if now >= next_log:
                next_log += 30.0
                with lock:
                    log(
                        f"  soak {now - start:5.0f}/{seconds:.0f}s: {len(latencies)} done, "
                        f"{len(errors)} errors"
                    )
            if slot > now:
                time.sleep(slot - now)
            pool.submit(send, i, slot)
    mib = 1024 * 1024
    after, end, growth = {}, {}, {}
    for key, samples in rss.items():
        steady = [v for t, v in samples if t >= warmup]
        if len(steady) < 2:
            continue
        a, b = _median(steady[:3]), _median(steady[-3:])
        after[key], end[key], growth[key] = a / mib, b / mib, (b - a) / a
    steady_fe = [v for t, v in frontend if t >= warmup]
    lat = np.array(latencies) * 1000
    pids_after = {a: worker_pids(management_url, a) for a in archives}
    return SoakReport(
        model=model,
        seconds=seconds,
        warmup_s=warmup,
        rate_per_s=rate,
        sent=total,
        ok=len(latencies) - len(errors),
        errors=len(errors),
        late_sends=late,
        p50_ms=float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        p99_ms=float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        max_ms=float(lat.max()) if len(lat) else float("nan"),
        worker_pids_before=pids_before,
        worker_pids_after=pids_after,
        rss_mib_after_warmup=after,
        rss_mib_end=end,
        rss_growth=growth,
        max_worker_rss_growth=max(growth.values()) if growth else float("nan"),
        frontend_rss_mib=(steady_fe[0] / mib, steady_fe[-1] / mib) if steady_fe else None,
        error_samples=sorted(set(errors))[:5],
    )


def main(argv: list[str] | None = None) -> None:
    """`make soak`: start a TorchServe of its own on free loopback ports, soak it, report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=300.0, help="soak duration (300)")
    p.add_argument("--rate", type=float, default=25.0, help="requests per second (25)")
    p.add_argument("--warmup", type=float, default=None, help="seconds excluded from RSS growth")
    p.add_argument("--model", default="fashion-vae", help="shipped model to serve and soak")
    p.add_argument("--max-growth", type=float, default=0.05, help="worker RSS growth limit")
    p.add_argument("--out", type=Path, default=LOADTEST_RESULTS)
    a = p.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="latentserve-soak-") as tmp,
        start_server(Path(tmp), [STORE / a.model]) as server,
    ):
        print(f"TorchServe READY in {server.ready_seconds:.1f}s at {server.url}")
        report = run_soak(
            server.url,
            server.management_url,
            a.model,
            a.seconds,
            a.rate,
            a.warmup,
            frontend_pid=server.frontend_pid,
        )
    print(report.summary())
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    print(f"wrote {path}")
    problems = []
    if report.errors:
        problems.append(f"{report.errors} errors: {report.error_samples}")
    if report.worker_pids_before != report.worker_pids_after:
        problems.append(f"workers restarted: {report.worker_pids_before} -> "
                        f"{report.worker_pids_after}")  # fmt: skip
    if not report.max_worker_rss_growth <= a.max_growth:
        problems.append(
            f"worker RSS grew {report.max_worker_rss_growth * 100:.2f}% "
            f"(limit {a.max_growth * 100:.0f}%)"
        )
    if problems:
        raise SystemExit("soak FAILED: " + "; ".join(problems))
    print("soak passed: zero errors, no restarts, worker RSS growth within limit")


if __name__ == "__main__":
    main()
