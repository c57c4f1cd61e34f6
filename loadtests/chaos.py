"""Kill a TorchServe worker while load runs, and measure how the service recovers.

Used by `tests/reliability/test_worker_kill.py` and by `make bench`. The worker's
pid comes from the management API (`GET /models/<name>`); it is a child of the
TorchServe this project started, and only that pid gets the SIGKILL.

The load is closed-loop: `concurrency` threads, each with its own keep-alive
session, send requests back to back and record (start, end, outcome). After the
kill the loop goes on until a request sent after the kill has succeeded and
`settle` more seconds passed (bounded by `timeout`). Then:

- in flight at the kill: requests with start < kill + grace < end, where
  `grace` (50 ms, beyond the 20 ms maxBatchDelay) covers a request that
  reaches the frontend while it still gathers a batch for the dead worker;
- recovery: kill -> end of the first successful request sent after the kill
  (the service answers again), and kill -> a new worker pid READY;
- every failed request is sent once more (the client's retry) and must succeed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import requests

Check = Callable[[requests.Response], str | None]  # None when the answer is right


def workers(management_url: str, model: str) -> list[dict]:
    resp = requests.get(f"{management_url}/models/{model}", timeout=10)
    resp.raise_for_status()
    return resp.json()[0].get("workers", [])


def worker_pids(management_url: str, model: str) -> list[int]:
    return sorted(int(w["pid"]) for w in workers(management_url, model) if w.get("pid"))


@dataclass
class Outcome:
    start: float
    end: float
    body: int  # index into the bodies
    error: str | None  # None: right answer


@dataclass
class KillReport:
    model: str
    killed_pid: int
    new_pids: list[int]
    requests: int
    failed: int
    in_flight_at_kill: int
    failed_not_in_flight: int  # must be 0
    kill_to_worker_ready_s: float | None
    recovery_s: float | None  # kill -> first right answer to a request sent after it
    retried: int
    retry_failures: int  # must be 0
    error_samples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def kill_worker_under_load(
    url: str,
    management_url: str,
    model: str,
    bodies: list[bytes],
    check: Check,
    concurrency: int = 4,
    before: float = 3.0,
    settle: float = 2.0,
    timeout: float = 60.0,
    content_type: str = "application/json",
    grace: float = 0.05,
) -> KillReport:
    endpoint = f"{url}/predictions/{model}"
    headers = {"Content-Type": content_type}
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    stop = threading.Event()
    counter = iter(range(10**9))

    def send(session: requests.Session, i: int) -> str | None:
        try:
            resp = session.post(endpoint, data=bodies[i], headers=headers, timeout=30)
        except requests.RequestException as err:
            return f"{type(err).__name__}: {err}"
        if resp.status_code != 200:
            return f"HTTP {resp.status_code}: {resp.text[:200]}"
        return check(resp)

    def loop() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                with lock:
                    i = next(counter) % len(bodies)
                t0 = time.monotonic()
                error = send(session, i)
                with lock:
                    outcomes.append(Outcome(t0, time.monotonic(), i, error))

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + before + timeout
    try:
        time.sleep(before)
        (pid,) = worker_pids(management_url, model)[:1]
        kill_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        ready_at = first_ok_at = None
        new_pids: list[int] = []
        while time.monotonic() < deadline:
            if ready_at is None:
                try:
                    ws = workers(management_url, model)
                except (requests.RequestException, ValueError, IndexError):
                    ws = []
                new_pids = sorted(int(w["pid"]) for w in ws if w.get("pid"))
                if ws and all(w["status"] == "READY" for w in ws) and pid not in new_pids:
                    ready_at = time.monotonic()
            if first_ok_at is None:
                with lock:
                    ends = [o.end for o in outcomes if o.start > kill_at and o.error is None]
                first_ok_at = min(ends) if ends else None
            recovered = ready_at is not None and first_ok_at is not None
            if recovered and time.monotonic() > max(ready_at, first_ok_at) + settle:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=40)
    in_flight = [o for o in outcomes if o.start < kill_at + grace and kill_at < o.end]
    failed = [o for o in outcomes if o.error is not None]
    stray = [o for o in failed if o not in in_flight]
    retry_failures = 0
    with requests.Session() as session:
        for o in failed:
            if send(session, o.body) is not None:
                retry_failures += 1
    return KillReport(
        model=model,
        killed_pid=pid,
        new_pids=new_pids,
        requests=len(outcomes),
        failed=len(failed),
        in_flight_at_kill=len(in_flight),
        failed_not_in_flight=len(stray),
        kill_to_worker_ready_s=None if ready_at is None else ready_at - kill_at,
        recovery_s=None if first_ok_at is None else first_ok_at - kill_at,
        retried=len(failed),
        retry_failures=retry_failures,
        error_samples=sorted({o.error for o in failed})[:5],
    )
