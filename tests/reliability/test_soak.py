"""Soak: fixed-rate mixed traffic (encode, decode, sample, score) with zero errors and flat memory.

30 seconds here (`LATENTSERVE_SOAK_SECONDS` overrides; `make soak` runs 5
minutes on a server of its own): every answer right, no worker restarted, and
each worker's RSS after the warm-up grows by at most 5 %. Logic and report:
`loadtests/soak.py`.
"""

from __future__ import annotations

import os

from loadtests.soak import run_soak
from tests.support.live import LOAD_MODEL

SECONDS = float(os.environ.get("LATENTSERVE_SOAK_SECONDS", "30"))
RATE = 25.0
MAX_GROWTH = 0.05


def test_soak(load_server):
    report = run_soak(
        load_server.url,
        load_server.management_url,
        LOAD_MODEL,
        SECONDS,
        RATE,
        frontend_pid=load_server.frontend_pid,
    )
    print("\n" + report.summary())
    assert report.errors == 0, report.error_samples
    assert report.ok == report.sent
    assert report.worker_pids_after == report.worker_pids_before, "a worker restarted"
    assert report.rss_growth, "no RSS samples after the warm-up"
    assert report.max_worker_rss_growth <= MAX_GROWTH, report.summary()
