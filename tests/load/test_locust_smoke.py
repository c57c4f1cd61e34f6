"""A short locust run (the real locustfile, headless) against a real TorchServe.

Ten users (6 encode, 3 decode, 1 sample: the class weights) for six seconds;
every answer is checked by the locustfile, so one wrong answer or one failed
request fails this test (locust's exit code and the CSV's failure count are
both checked).
"""

from __future__ import annotations

import csv
import subprocess
import sys

from paths import ROOT
from serving.archive import OPERATIONS
from tests.support.live import LOAD_MODEL

LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"


def test_locust_smoke(load_server, tmp_path):
    prefix = tmp_path / "smoke"
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--users", "10", "--spawn-rate", "10", "--run-time", "6s", "--stop-timeout", "10",
        "--host", load_server.url, "--models", LOAD_MODEL, "--batch-sizes", "4,16",
        "--think-time", "0.05", "--csv", str(prefix), "--only-summary",
        "--exit-code-on-error", "1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    output = f"{proc.stdout}\n{proc.stderr}"[-6000:]
    stats_file = prefix.with_name("smoke_stats.csv")
    assert stats_file.exists(), f"locust wrote no stats (exit {proc.returncode}):\n{output}"
    rows = list(csv.DictReader(stats_file.open()))
    total = next(r for r in rows if r["Name"] == "Aggregated")
    print(f"\nlocust smoke: {total['Request Count']} requests, {total['Failure Count']} failures")
    failures = prefix.with_name("smoke_failures.csv").read_text()
    assert int(total["Failure Count"]) == 0, f"failed requests:\n{failures}\n{output}"
    assert proc.returncode == 0, f"locust exited {proc.returncode}:\n{output}"
    assert int(total["Request Count"]) >= 20, f"too few requests ran:\n{output}"
    names = {r["Name"] for r in rows}
    for op in OPERATIONS:
        ran = any(f"{LOAD_MODEL}-{op}" in n for n in names)
        assert ran, f"no {op} request ran: {sorted(names)}"
