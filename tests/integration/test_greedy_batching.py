"""Greedy batching (the frontend agent, deploy/agent/): a lone request does not wait for
companions, concurrent ones still share batches, and `-Dlatentserve.batching=timed`
brings TorchServe's own wait back.

Both servers run the archives with `maxBatchDelay` 200 ms, far above a request's own
time (a lone decode of the 2-D model takes a few milliseconds), so the difference is
unmistakable on a loaded machine: greedy answers far below the delay, timed waits it.
"""

from __future__ import annotations

import functools
import statistics
import time

import pytest
import requests

from handlers.engine import BATCH_ID, BATCH_REQUESTS
from loadtests.payloads import slow_png_b64
from paths import STORE
from serving.properties import BASE_CONFIG, read_properties
from serving.workers import WorkerConfig
from tests.support import batching
from tests.support.live import start_live_server

DELAY_MS = 200
MODEL = "fashion-vae-2d"


def config_with(tmp, mode: str):
    """deploy/config.properties with the agent's batching mode set to `mode`."""
    vmargs = read_properties(BASE_CONFIG)["vmargs"]
    assert "-Dlatentserve.batching=greedy" in vmargs  # the shipped default
    text = BASE_CONFIG.read_text().replace(
        "-Dlatentserve.batching=greedy", f"-Dlatentserve.batching={mode}"
    )
    path = tmp / "config.properties"
    path.write_text(text)
    return path


@pytest.fixture(scope="module", params=["greedy", "timed"])
def server(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"batching-{request.param}")
    worker = WorkerConfig(max_batch_delay_ms=DELAY_MS)
    live = start_live_server(
        root, [STORE / MODEL], config=config_with(root, request.param), worker=worker
    )
    yield request.param, live
    live.stop()


def lone_ms(url: str, body: dict, n: int = 7) -> float:
    """The median time of `n` requests sent one after another (each alone in the queue)."""
    with requests.Session() as s:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = s.post(url, json=body, timeout=60)
            times.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text
    return statistics.median(times)


def test_a_lone_request_waits_the_delay_only_when_timed(server):
    mode, live = server
    took = lone_ms(f"{live.url}/predictions/{MODEL}-decode", {"instances": [{"z": [0.0, 0.0]}]})
    if mode == "greedy":
        assert took < DELAY_MS / 2, f"greedy: a lone request took {took:.0f} ms"
    else:
        assert took >= DELAY_MS * 0.95, f"timed: a lone request took only {took:.0f} ms"


def test_concurrent_requests_still_share_a_batch(server):
    """A slow request keeps each encode worker busy; five requests sent meanwhile queue,
    and the first worker free takes them as one batch (what greedy batching keeps)."""
    mode, live = server
    url = f"{live.url}/predictions/{MODEL}-encode"
    workers = len(live.worker_pids()[f"{MODEL}-encode"])
    blocker = {"instances": [{"image_b64": slow_png_b64(i)} for i in range(6)]}
    small = {"instances": [{"pixels": [[0.5] * 28] * 28}]}

    def post(body: dict) -> requests.Response:
        return requests.post(url, json=body, timeout=120)

    for _ in range(batching.ATTEMPTS):
        sends = [functools.partial(post, small) for _ in range(5)]
        replies, _ = batching.one_batch(functools.partial(post, blocker), sends, workers)
        assert all(r.status_code == 200 for r in replies)
        if len({r.headers[BATCH_ID] for r in replies}) == 1:
            break
    assert len({r.headers[BATCH_ID] for r in replies}) == 1, "five queued requests never shared"
    (size,) = {int(r.headers[BATCH_REQUESTS]) for r in replies}
    # timed: the blockers' 200 ms windows may take them in too (up to 7 requests)
    assert 5 <= size <= (6 if mode == "greedy" else 7), size
