"""The bench's plain-server peer, started for real: it must answer exactly what our
engine answers (otherwise the peer ratio would compare different work), on both wires,
and reject bad input the same way."""

from __future__ import annotations

import pytest
import requests

from loadtests import payloads
from loadtests.bench import peers
from loadtests.bench.checks import v2_answer, v2_outputs
from loadtests.bench.server import reference_reply
from paths import STORE

MODEL = "fashion-vae"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def peer_url():
    port = peers.free_ports(1)[0]
    url = f"http://127.0.0.1:{port}"
    proc = peers.start_peer(STORE / MODEL, port, workers=1)
    try:
        peers.wait_ready(proc, url + "/predictions/encode", payloads.encode_pool(1, 1).bodies[0])
        yield url
    finally:
        peers.stop_peer(proc)


def test_the_peer_answers_the_bytes_our_engine_answers(peer_url):
    body = payloads.encode_pool(4, 2, seed=3).bodies[0]
    r = requests.post(peer_url + "/predictions/encode", data=body, headers=JSON)
    assert r.status_code == 200 and r.text == reference_reply(STORE / MODEL, body)


def test_the_peer_answers_binary_v2_as_the_bench_checks_it(peer_url):
    body, headers = payloads.v2_encode_pool(64, 2, seed=5).next_request()
    r = requests.post(peer_url + "/v2/models/encode/infer", data=body, headers=headers)
    check = v2_answer(64, v2_outputs(MODEL)["encode"])
    assert check(r.status_code, r.content, {k.lower(): v for k, v in r.headers.items()}) is None


def test_the_peer_rejects_bad_input_as_our_server_does(peer_url):
    bad = requests.post(peer_url + "/predictions/encode", data=b"{", headers=JSON)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_json"
