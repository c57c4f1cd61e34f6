"""Worker kill: SIGKILL an encode worker while 4 clients keep sending requests.

TorchServe must start a new worker (new pid, READY), only requests in flight at
the kill may fail (500/507 "Worker died.", or rarely never answered within the
client's timeout, see loadtests/chaos.py), every failed request must succeed
when the client retries it, and the service must answer again. The recovery
time (kill -> a probe's first right answer to a request sent after the kill) is
printed; its 10 s target is judged by `make bench` (speed targets live in the
benchmark), this test only bounds it at 60 s so that a worker that never comes
back fails it. Logic: `loadtests/chaos.py`.
"""

from __future__ import annotations

from loadtests import payloads
from loadtests.chaos import kill_worker_under_load
from tests.support.live import LOAD_MODEL, load_model


def check(resp) -> str | None:
    model = load_model()
    try:
        return payloads.check_encode(resp.json(), 1, model.latent_dim, model.kind == "vae")
    except ValueError:
        return "not JSON"


def test_killed_worker_is_replaced_and_only_in_flight_requests_fail(load_server):
    archive = f"{LOAD_MODEL}-encode"
    before = load_server.worker_pids()
    report = kill_worker_under_load(
        load_server.url,
        load_server.management_url,
        archive,
        payloads.encode_pool(1, 32, seed=3).bodies,
        check,
        concurrency=4,
        before=3.0,
        settle=2.0,
        timeout=60.0,
    )
    print(
        f"\nworker kill: pid {report.killed_pid} -> {report.new_pids}; worker READY after "
        f"{report.kill_to_worker_ready_s}s, service answering after {report.recovery_s}s; "
        f"{report.failed}/{report.requests} failed ({report.in_flight_at_kill} in flight at "
        f"the kill, {report.lost} never answered); errors {report.error_samples}"
    )
    assert report.kill_to_worker_ready_s is not None, "no new worker became READY within 60 s"
    assert report.recovery_s is not None, "no request succeeded within 60 s of the kill"
    assert report.new_pids and report.killed_pid not in report.new_pids
    assert report.failed_not_in_flight == 0, report.error_samples
    assert report.failed <= report.in_flight_at_kill
    assert report.retry_failures == 0, "a retried request failed again"
    after = load_server.worker_pids()
    assert after[archive] == report.new_pids
    others = {k: v for k, v in before.items() if k != archive}
    assert {k: after[k] for k in others} == others, "another archive's worker changed"
    assert load_server.ping().status_code == 200
