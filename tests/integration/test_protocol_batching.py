"""Open Inference Protocol requests in one dynamic batch with a bad neighbour.

Good v2 requests (binary and JSON tensors) and a good JSON API request to the
same archive share a batch with one malformed v2 request: the bad one gets its
own 400 and the good answers are byte-identical to those of the same batch
without it (compared with the batch, not with each request alone: the conv
models' CPU kernels change with the batch size, see
tests/reliability/test_isolation.py).

How they share a batch: slow but valid JSON API requests (large PNGs to decode)
keep every encode worker busy, sent further apart than maxBatchDelay so each
runs alone; the test's requests, released together by a barrier, queue
meanwhile, and the first worker free takes them as one batch. The
`X-Latentserve-Batch-*` headers prove it; a batch split or joined by the
scheduler is tried again.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import requests

from handlers.engine import BATCH_ID, BATCH_ITEMS, BATCH_REQUESTS
from loadtests import payloads
from tests.support import batching
from tests.support.v2 import binary_input, infer_url, json_input, v2_body

SIZES = [1, 3, 2, 4]  # items of the good requests, in order
JSON = {"Content-Type": "application/json"}


def good_requests(server, endpoint: str) -> list[tuple[str, bytes, dict]]:
    """(url, body, headers): binary v2, JSON-tensor v2, the JSON API, binary v2 [N,1,28,28]."""
    images = payloads.test_images()
    parts = [images[i * 10 : i * 10 + k] for i, k in enumerate(SIZES)]
    v2 = infer_url(server, endpoint)
    fp32 = (parts[1] / np.float32(255)).astype(np.float32)
    four = parts[3][:, None]
    return [
        (v2, *v2_body({"inputs": [binary_input("image", parts[0])]}, parts[0].tobytes())),
        (v2, *v2_body({"inputs": [json_input("image", fp32)]})),
        (f"{server.url}/predictions/{endpoint}", payloads.encode_body(parts[2]), JSON),
        (
            v2,
            *v2_body(
                {
                    "inputs": [binary_input("image", four)],
                    "outputs": [{"name": "z_mean", "parameters": {"binary_data": True}}],
                },
                four.tobytes(),
            ),
        ),
    ]


def bad_request(server, endpoint: str) -> tuple[str, bytes, dict]:
    """Five valid images whose binary buffer is one row short."""
    images = payloads.test_images()[100:105]
    body, headers = v2_body({"inputs": [binary_input("image", images)]}, images.tobytes()[:-28])
    return infer_url(server, endpoint), body, headers


def one_batch(block_url: str, block: bytes, reqs: list, workers: int) -> list:
    """`reqs` (url, body, headers) as one dynamic batch (tests/support/batching.py)."""

    def post(url: str, body: bytes, headers: dict) -> requests.Response:
        return requests.post(url, data=body, headers=headers, timeout=120)

    sends = [functools.partial(post, *r) for r in reqs]
    return batching.one_batch(functools.partial(post, block_url, block, JSON), sends, workers)[0]


def clean(replies) -> bool:
    """One batch of exactly these requests (no blocker joined it; bad items never count)."""
    return (
        len({r.headers.get(BATCH_ID) for r in replies}) == 1
        and replies[0].headers.get(BATCH_ITEMS) == str(sum(SIZES))
        and replies[0].headers.get(BATCH_REQUESTS) == str(len(replies))
    )


@pytest.mark.parametrize("position", [0, 2, 4])
def test_a_bad_v2_request_fails_alone_in_its_batch(torchserve, vae, position):
    endpoint = f"{vae.name}-encode"
    block_url = f"{torchserve.url}/predictions/{endpoint}"
    block = json.dumps({"instances": [{"image_b64": payloads.slow_png_b64(i)} for i in range(10)]})
    goods = good_requests(torchserve, endpoint)
    with_bad = goods[:position] + [bad_request(torchserve, endpoint)] + goods[position:]
    workers = len(torchserve.worker_pids()[endpoint])
    for _attempt in range(batching.ATTEMPTS):
        mixed = one_batch(block_url, block.encode(), with_bad, workers)
        alone = one_batch(block_url, block.encode(), goods, workers)
        if clean(mixed) and clean(alone):
            break
    else:
        pytest.fail("the requests never had one batch to themselves")
    bad = mixed.pop(position)
    assert bad.status_code == 400, bad.text[:300]
    assert "image" in bad.json()["error"], bad.text
    for i, (m, a) in enumerate(zip(mixed, alone, strict=True)):
        assert m.status_code == a.status_code == 200, (i, m.text[:300], a.text[:300])
        assert m.headers.get("content-type") == a.headers.get("content-type")
        assert m.content == a.content, f"good request {i} changed next to a bad one"
    assert torchserve.ping().status_code == 200
