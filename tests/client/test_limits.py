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
from client.limits import IMAGE_HW, MAX_ABS_LATENT, MAX_ITEMS, MAX_N, MAX_SEED
from handlers.limits import LIMITS
from paths import ROOT, SHIPPED_MODELS, STORE
from tests.client.fake import Scripted


class Recording(Scripted):
    """The fake server of fake.py, keeping every request's size in bytes too."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.body_bytes: list[int] = []

    def _post_once(self, url, body, headers):
        self.body_bytes.append(len(body))  # list.append is atomic: safe from the threads
        return super()._post_once(url, body, headers)


def test_client_copies_agree_with_handlers_limits():
    fix = "client/limits.py disagrees with handlers/limits.py"
    assert LIMITS.max_items >= MAX_ITEMS, fix
    assert LIMITS.max_n >= MAX_N, fix
    assert LIMITS.max_seed == MAX_SEED, fix
    assert LIMITS.max_abs_latent == MAX_ABS_LATENT, fix
    assert 1 <= DEFAULT_BATCH_SIZE <= MAX_ITEMS
    for name in SHIPPED_MODELS:  # the protocol's image tensor is every model's image
        manifest = json.loads((STORE / name / "manifest.json").read_text())
        assert tuple(manifest["image_shape"][-2:]) == IMAGE_HW, name


def test_batch_size_over_the_limit_is_refused_before_sending():
    with pytest.raises(ValueError, match="batch_size"):
        LatentClient(batch_size=MAX_ITEMS + 1)


@pytest.mark.parametrize("protocol", ["v2", "json"])
def test_requests_never_carry_more_items_or_bytes_than_the_server_takes(protocol):
    # the largest requests: float64 pixels (v2 sends them as FP64 when out of [0, 1])
    floats = np.full((2 * MAX_ITEMS + 1, 28, 28), 1.0 / 3.0)
    floats[:, 0, 0] = 2.0
    with Recording(batch_size=MAX_ITEMS, protocol=protocol) as client:
        client.encode(np.zeros((2 * MAX_ITEMS + 1, 28, 28), np.uint8))
        client.encode(floats)
        client.decode(np.full((2 * MAX_ITEMS + 1, 512), -1 / 3), as_array=True)
        client.sample(2 * MAX_N + 1, seed=0, as_array=True)
    items = [s.items for s in client.sent if s.operation != "sample"]
    ns = [s.items for s in client.sent if s.operation == "sample"]
    assert max(items) == MAX_ITEMS <= LIMITS.max_items and len(items) == 9
    assert max(ns) == MAX_N <= LIMITS.max_n and len(ns) == 3
    assert max(client.body_bytes) <= LIMITS.max_body_bytes


@pytest.mark.parametrize("protocol", ["v2", "json"])
def test_consecutive_seeds_wrap_inside_the_servers_range(protocol):
    with Recording(batch_size=MAX_ITEMS, protocol=protocol) as client:
        client.sample(MAX_N + 1, seed=LIMITS.max_seed, as_array=True)
        client.encode(
            np.zeros((MAX_ITEMS + 1, 28, 28), np.uint8), sample=True, seed=LIMITS.max_seed
        )
    seeds = sorted(s.params["seed"] for s in client.sent)  # threads answer in any order
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
