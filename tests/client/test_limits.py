"""The client's request planning stays inside the server's limits.

The client keeps its own copy of the limits it plans by (client/limits.py): it
is installed without the handlers, so it cannot import them. These tests tie
the copy to `handlers.limits.LIMITS` and check what the client actually sends.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from client import LatentClient
from client.api import DEFAULT_BATCH_SIZE
from client.limits import MAX_ITEMS, MAX_N, MAX_SEED
from handlers.limits import LIMITS
from paths import ROOT


class Recording(LatentClient):
    """Answers every request with as many items as it asked for; keeps the bodies."""

    def __init__(self, **kwargs):
        super().__init__("http://127.0.0.1:9", model="m", **kwargs)
        self.bodies: list[dict] = []

    def _post_once(self, url, body):
        payload = json.loads(body)
        self.bodies.append(payload)  # list.append is atomic: safe from the client's threads
        n = len(payload["instances"]) if "instances" in payload else payload["n"]
        if url.endswith("-encode"):
            pred = {"z_mean": [0.0], "z_log_var": [0.0], "z": [0.0]}
        else:
            pred = {"pixels": [[0.0]]}
        return 200, {}, json.dumps({"predictions": [pred] * n}).encode()


def test_client_copies_agree_with_handlers_limits():
    fix = "client/limits.py disagrees with handlers/limits.py"
    assert LIMITS.max_items >= MAX_ITEMS, fix
    assert LIMITS.max_n >= MAX_N, fix
    assert LIMITS.max_seed == MAX_SEED, fix
    assert 1 <= DEFAULT_BATCH_SIZE <= MAX_ITEMS


def test_batch_size_over_the_limit_is_refused_before_sending():
    with pytest.raises(ValueError, match="batch_size"):
        LatentClient(batch_size=MAX_ITEMS + 1)


def test_requests_never_carry_more_items_than_the_server_takes():
    with Recording(batch_size=MAX_ITEMS) as client:
        client.encode(np.zeros((2 * MAX_ITEMS + 1, 28, 28), np.uint8))
        client.decode(np.zeros((2 * MAX_ITEMS + 1, 2)), as_array=True)
        client.sample(2 * MAX_N + 1, seed=0, as_array=True)
    items = [len(b["instances"]) for b in client.bodies if "instances" in b]
    ns = [b["n"] for b in client.bodies if "n" in b]
    assert max(items) == MAX_ITEMS <= LIMITS.max_items and len(items) == 6
    assert max(ns) == MAX_N <= LIMITS.max_n and len(ns) == 3


def test_consecutive_seeds_wrap_inside_the_servers_range():
    with Recording(batch_size=MAX_ITEMS) as client:
        client.sample(MAX_N + 1, seed=LIMITS.max_seed, as_array=True)
        client.encode(
            np.zeros((MAX_ITEMS + 1, 28, 28), np.uint8), sample=True, seed=LIMITS.max_seed
        )
    seeds = sorted(b["seed"] for b in client.bodies)  # threads answer in any order
    assert seeds == [0, 0, LIMITS.max_seed, LIMITS.max_seed]
    assert all(0 <= s <= LIMITS.max_seed for s in seeds)


def test_client_runs_without_the_server_side_packages():
    code = (
        "import sys, client, client.cli\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'handlers', 'serving', 'training', 'paths', 'torch'})\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
