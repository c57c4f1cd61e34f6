"""The client's request planning stays inside the server's limits.

The client keeps its own copy of the limits it plans by (client/limits.py): it
is installed without the handlers, so it cannot import them. These tests tie
the copy to `handlers.limits.LIMITS` and check what the client actually sends.
"""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from client import LatentClient, limits
from client.api import DEFAULT_BATCH_SIZE
from client.limits import MAX_ABS_LATENT, MAX_ITEMS, MAX_N, MAX_SEED
from handlers.limits import LIMITS
from paths import ROOT
from tests.client.fake import Scripted

SHAPES = [(1, 28, 28), (3, 40, 40), (3, 64, 64), (1, 512, 512), (3, 256, 256), (3, 2048, 2048)]


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
    assert LIMITS.max_values == limits.MAX_VALUES, fix
    assert LIMITS.max_body_bytes == limits.MAX_BODY_BYTES, fix
    assert LIMITS.max_image_bytes == limits.MAX_IMAGE_BYTES, fix
    assert LIMITS.max_image_pixels == limits.MAX_IMAGE_PIXELS, fix
    assert 1 <= DEFAULT_BATCH_SIZE <= MAX_ITEMS
    for shape in SHAPES:  # the server's item limits for a model's image size
        server = LIMITS.for_image(shape)
        assert limits.max_items(shape) == server.max_items, (fix, shape)
        assert limits.max_n(shape) == server.max_n, (fix, shape)
    assert limits.max_items((1, 28, 28)) == MAX_ITEMS and limits.max_items((3, 64, 64)) == 85


def test_the_png_bound_holds_for_noise():
    rng = np.random.default_rng(0)
    for shape in [(1, 28, 28), (3, 40, 40), (3, 64, 64), (3, 300, 200)]:
        c, h, w = shape
        noise = rng.integers(0, 256, (h, w, c) if c == 3 else (h, w), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noise).save(buf, format="PNG", compress_level=1)
        assert len(base64.b64encode(buf.getvalue())) <= limits.png_b64_bytes(shape), shape


def test_batch_size_over_the_limit_is_refused_before_sending():
    with pytest.raises(ValueError, match="batch_size"):
        LatentClient(batch_size=MAX_ITEMS + 1)


@pytest.mark.parametrize("protocol", ["v2", "json"])
@pytest.mark.parametrize("shape", [(3, 64, 64), (3, 160, 120)])
def test_large_colour_images_travel_in_fewer_items_within_the_body_limit(protocol, shape, tmp_path):
    c, h, w = shape
    n = limits.max_items(shape) + 3
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    floats = rng.random((n, h, w, c))
    floats[:, 0, 0, 0] = 1 / 3  # 19 characters in JSON
    big = tmp_path / "big.png"  # a file of noise: larger than its share of a full request
    Image.fromarray(rng.integers(0, 256, (900, 900, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > limits.BODY_BUDGET // limits.max_items(shape)
    with Recording(batch_size=MAX_ITEMS, protocol=protocol, served_shape=shape) as client:
        client.encode(noise)
        client.encode(floats)
        client.encode([big] * n)
        client.decode(np.zeros((n, 16)), as_array=True)
        client.sample(n, seed=0, as_array=True)
        expect = {
            "encode": client.items_per_request("encode", noise),
            "floats": client.items_per_request("encode", floats),
        }
    server = LIMITS.for_image(shape)
    assert all(s.items <= server.max_items for s in client.sent), shape
    assert max(client.body_bytes) <= LIMITS.max_body_bytes
    assert expect["encode"] == server.max_items  # pixels fit the body at the server's count
    if protocol == "json":  # float lists take ~25 bytes a value
        assert expect["floats"] < server.max_items


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
