"""Kill a TorchServe worker while load runs, and measure how the service recovers.

Used by `tests/reliability/test_worker_kill.py` and by `make bench`. The worker's
pid comes from the management API (`GET /models/<name>`); it is a child of the
TorchServe this project started, and only that pid gets the SIGKILL.

The load is closed-loop: `concurrency` threads, each with its own keep-alive
session, send requests back to back and record (start, end, outcome), each
with a client timeout (`request_timeout`, as any real client has). From the
kill on, a probe sends one fresh request at a time until one is answered
right; the run ends `settle` seconds after that and after a new worker is
READY (bounded by `timeout`). Then:

- in flight at the kill: requests with start < kill + grace < end, where
  `grace` (50 ms, beyond the maxBatchDelay) covers a request that reaches
  the frontend while it still gathers a batch for the dead worker;
- recovery: kill -> end of the probe's first right answer (the service
  answers again), and kill -> a new worker pid READY;
- lost: failures that are timeouts. TorchServe 0.12 answers requests in
  flight at a worker's death with 507 or 500 "Worker died.", but in one of
  about ten kills (1 worker, maxBatchDelay 20 ms) it never answered 4 of them:
  only the clients' timeout (then 30 s) ended them. The probe measures
  recovery because the load's clients may all be stuck on such requests;
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

from serving.query import pids_of, worker_pids, workers

Check = Callable[[requests.Response], str | None]  # None when the answer is right


@dataclass
class Outcome:
    start: float
    end: float
    body: int  # index into the bodies
    error: str | None  # None: right answer
    timed_out: bool = False  # no answer within the client's timeout


@dataclass
class KillReport:
    model: str
    killed_pid: int
    new_pids: list[int]
    requests: int
    failed: int
    in_flight_at_kill: int
    failed_not_in_flight: int  # must be 0
    lost: int  # failures that were client timeouts (never answered by TorchServe)
    request_timeout_s: float
    kill_to_worker_ready_s: float | None
    recovery_s: float | None  # kill -> the probe's first right answer (sent after the kill)
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
    request_timeout: float = 5.0,
) -> KillReport:
    endpoint = f"{url}/predictions/{model}"
    headers = {"Content-Type": content_type}
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    stop = threading.Event()
    counter = iter(range(10**9))

    def send(session: requests.Session, i: int) -> tuple[str | None, bool]:
        """(None or why the answer is wrong, whether it timed out)."""
        try:
            resp = session.post(endpoint, data=bodies[i], headers=headers, timeout=request_timeout)
        except requests.Timeout as err:
            return f"{type(err).__name__}: no answer within {request_timeout} s", True
        except requests.RequestException as err:
            return f"{type(err).__name__}: {err}", False
        if resp.status_code != 200:
            return f"HTTP {resp.status_code}: {' '.join(resp.text.split())[:200]}", False
        return check(resp), False

    def loop() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                with lock:
                    i = next(counter) % len(bodies)
                t0 = time.monotonic()
                error, timed_out = send(session, i)
                with lock:
                    outcomes.append(Outcome(t0, time.monotonic(), i, error, timed_out))

    probe_ok: list[float] = []

    def probe(after: float) -> None:
        """Fresh requests, one at a time, until one is answered right."""
        with requests.Session() as session:
            while not stop.is_set() and not probe_ok:
                t0 = time.monotonic()
                error, _ = send(session, 0)
                if error is None and t0 > after:
                    probe_ok.append(time.monotonic())
                elif error is not None:
                    time.sleep(0.02)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + before + timeout
    try:
        time.sleep(before)
        (pid,) = worker_pids(management_url, model)[:1]
        kill_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        prober = threading.Thread(target=probe, args=(kill_at,), daemon=True)
        prober.start()
        threads.append(prober)
        ready_at = None
        new_pids: list[int] = []
        while time.monotonic() < deadline:
            if ready_at is None:
                try:
                    ws = workers(management_url, model)
                except (OSError, ValueError, IndexError):
                    ws = []
                new_pids = pids_of(ws)
                if ws and all(w["status"] == "READY" for w in ws) and pid not in new_pids:
                    ready_at = time.monotonic()
            first_ok_at = probe_ok[0] if probe_ok else None
            recovered = ready_at is not None and first_ok_at is not None
            if recovered and time.monotonic() > max(ready_at, first_ok_at) + settle:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=request_timeout + 10)
    first_ok_at = probe_ok[0] if probe_ok else None
    in_flight = [o for o in outcomes if o.start < kill_at + grace and kill_at < o.end]
    failed = [o for o in outcomes if o.error is not None]
    stray = [o for o in failed if o not in in_flight]
    retry_failures = 0
    with requests.Session() as session:
        for o in failed:
            if send(session, o.body)[0] is not None:
                retry_failures += 1
    return KillReport(
        model=model,
        killed_pid=pid,
        new_pids=new_pids,
        requests=len(outcomes),
        failed=len(failed),
        in_flight_at_kill=len(in_flight),
        failed_not_in_flight=len(stray),
        lost=sum(o.timed_out for o in failed),
        request_timeout_s=request_timeout,
        kill_to_worker_ready_s=None if ready_at is None else ready_at - kill_at,
        recovery_s=None if first_ok_at is None else first_ok_at - kill_at,
        retried=len(failed),
        retry_failures=retry_failures,
        error_samples=sorted({o.error for o in failed})[:5],
    )
