"""Dynamic batching in a real TorchServe: concurrent requests of different sizes
share one handler call, and each gets exactly its own items back, in order.

To make the frontend put them in one batch reliably, large requests first keep
every worker of the archive busy (one each, further apart than maxBatchDelay);
the mixed requests queue up meanwhile, and when a worker is free TorchServe
hands them over together (batchSize 8 >= 5). (If the last large one is still
within its maxBatchDelay when they arrive, all six share the batch; that is
checked too.) The responses prove the sharing: the same
`X-Latentserve-Batch-Id` and the batch's request and item counts.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import requests
import torch

from handlers.engine import BATCH_ID, BATCH_ITEMS, BATCH_REQUESTS
from loadtests.payloads import slow_png_b64
from tests.support import batching

SIZES = [1, 7, 3, None, 12]  # None: a bad request in the middle of the batch
JSON = {"Content-Type": "application/json"}
BLOCKER_ITEMS = 6


def encode_locally(model_dir, items: np.ndarray) -> np.ndarray:
    enc = torch.jit.load(str(model_dir / "encoder.pt"))
    with torch.inference_mode():
        out = enc(torch.from_numpy(items.astype(np.float32))[:, None])
    return (out[0] if isinstance(out, tuple) else out).numpy()


def send_concurrently(url: str, blocker: dict, payloads: list[dict], workers: int):
    """-> (last blocker's response, [response per payload]).

    Bodies are serialized before the barrier: json.dumps of a dozen pixel arrays
    takes milliseconds, enough to spread the requests past maxBatchDelay."""
    bodies = [json.dumps(p).encode() for p in payloads]
    block_body = json.dumps(blocker).encode()

    def post(body: bytes) -> requests.Response:
        return requests.post(url, data=body, headers=JSON, timeout=120)

    sends = [functools.partial(post, body) for body in bodies]
    results, blocked = batching.one_batch(functools.partial(post, block_body), sends, workers)
    return blocked[-1], results


def test_mixed_sizes_share_a_batch_and_get_their_own_items(torchserve, vae):
    url = f"{torchserve.url}/predictions/{vae.name}-encode"
    rng = np.random.default_rng(42)
    data = [rng.random((k or 1, 28, 28)).round(5) for k in SIZES]
    payloads = [
        {"instances": [{"pixels": im.tolist()} for im in d]}
        if k
        else {"instances": [{"pixels": d[0][:20].tolist()}]}  # 20 rows: wrong shape
        for k, d in zip(SIZES, data, strict=True)
    ]
    # small on the wire, slow to serve: large smooth PNGs to decode and resize (a
    # blocker of 256 pixel arrays is 2 MB of JSON and reached the frontend last)
    blocker = {"instances": [{"image_b64": slow_png_b64(i)} for i in range(BLOCKER_ITEMS)]}
    workers = len(torchserve.worker_pids()[f"{vae.name}-encode"])
    for attempt in range(1, 4):
        first, replies = send_concurrently(url, blocker, payloads, workers)
        if len({r.headers[BATCH_ID] for r in replies}) == 1:
            break
        print(f"attempt {attempt}: requests were split over batches, retrying")
    assert len({r.headers[BATCH_ID] for r in replies}) == 1, "never shared one batch"
    # the blocker usually ran alone first; if it arrived within maxBatchDelay it joined
    joined = first.headers[BATCH_ID] == replies[0].headers[BATCH_ID]
    items = sum(k or 0 for k in SIZES) + (BLOCKER_ITEMS if joined else 0)
    assert {r.headers[BATCH_REQUESTS] for r in replies} == {str(5 + joined)}
    assert {r.headers[BATCH_ITEMS] for r in replies} == {str(items)}
    assert first.status_code == 200 and len(first.json()["predictions"]) == BLOCKER_ITEMS

    assert [r.status_code for r in replies] == [200, 200, 200, 400, 200]
    bad = replies[3].json()["error"]
    assert (bad["code"], bad["field"]) == ("wrong_shape", "instances[0].pixels")
    for k, d, r in zip(SIZES, data, replies, strict=True):
        if k is None:
            continue
        got = np.array([p["z_mean"] for p in r.json()["predictions"]])
        assert got.shape == (k, vae.latent_dim)
        assert np.allclose(got, encode_locally(vae.model_dir, d), atol=1e-4)
    assert torchserve.ping().status_code == 200
