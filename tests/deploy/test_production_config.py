"""deploy/config.production.properties, statically and against a real TorchServe.

The server (fixture `prod_server`) runs the shipped production config with only
addresses, ports and paths rewritten to loopback/temp values, started through the
container entrypoint. The codes asserted here are what TorchServe 0.12.0 really
answers; docs/deploy.md quotes them.
"""

from __future__ import annotations

import re
import time

import pytest

from handlers.limits import LIMITS
from serving.archive import OPERATIONS
from serving.properties import read_properties
from serving.query import metric, scrape
from tests.deploy import tsproc
from tests.deploy.tsproc import get, post

pytestmark = pytest.mark.integration

PROPS = read_properties(tsproc.PROD_CONFIG)


def decode_body(n: int = 1) -> dict:
    return {"instances": [{"z": [0.0] * tsproc.LATENT_DIM} for _ in range(n)]}


def decode_url(server) -> str:
    return f"{server.inference}/predictions/{tsproc.TEST_MODEL}-decode"


# ---- static: the file itself ------------------------------------------------------


def test_every_listener_is_on_loopback():
    """The pod's gateway (deploy/gateway/) is the only listener on the network."""
    assert PROPS["inference_address"] == "http://127.0.0.1:8080"
    assert PROPS["metrics_address"] == "http://127.0.0.1:8082"
    assert PROPS["management_address"] == "http://127.0.0.1:8081"
    assert PROPS["grpc_inference_address"] == "127.0.0.1"
    assert PROPS["grpc_management_address"] == "127.0.0.1"


def test_security_keys():
    # off behind the loopback bind: the gateway checks the keys (the file says why)
    assert PROPS["disable_token_authorization"] == "true"
    assert PROPS["enable_model_api"] == "false"
    assert PROPS["enable_envvars_config"] == "false"
    assert PROPS["install_py_dep_per_model"] == "false"
    for pattern in PROPS["allowed_urls"].split(","):
        assert pattern.startswith("file:///"), f"allowed_urls admits non-file URLs: {pattern}"


def test_size_limits_leave_the_handler_its_own_400():
    # a body within the frontend's limit but above the API's reaches the handler,
    # which answers 400 naming the field; only larger bodies get the frontend's 413
    assert int(PROPS["max_request_size"]) > LIMITS.max_body_bytes
    # the largest legitimate answer: max_n images as float arrays, ~24 characters a value
    worst = max(LIMITS.max_items, LIMITS.max_n) * 28 * 28 * 24
    assert int(PROPS["max_response_size"]) >= 3 * worst


def test_metrics_and_snapshots():
    assert PROPS["metrics_mode"] == "prometheus"
    assert PROPS["metrics_config"].startswith("/")  # workers run in other directories
    assert "model_snapshot" not in PROPS  # snapshots are off (entrypoint passes -ncs)
    assert "-ncs" in tsproc.ENTRYPOINT.read_text()


def test_every_key_is_commented():
    """Each key=value line sits under a comment (its own or its group's)."""
    lines = tsproc.PROD_CONFIG.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip() or line.startswith("#"):
            continue
        j = i - 1
        while j >= 0 and lines[j].strip() and not lines[j].startswith("#"):
            j -= 1  # a group of related keys shares the comment above it
        assert j >= 0 and lines[j].startswith("#"), f"no comment above {line!r}"
        assert i - j <= 5, f"{line!r} is too far from its comment"


# ---- live: a real TorchServe with this config --------------------------------------


def test_listens_on_loopback_and_serves_without_a_token(prod_server):
    log = prod_server.log()
    for api, port in (
        ("Inference", prod_server.ports.inference),
        ("Management", prod_server.ports.management),
        ("Metrics", prod_server.ports.metrics),
    ):
        assert re.search(rf"{api} API bind to: http://127\.0\.0\.1:{port}\b", log), api
    r = post(decode_url(prod_server), json=decode_body(2))
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 2
    r = get(f"{prod_server.inference}/ping")
    assert r.status_code == 200 and r.json()["status"] == "Healthy"


@pytest.mark.parametrize("url", ["https://example.invalid/m.mar", "http://127.0.0.1:9/m.mar"])
def test_registering_from_a_remote_url_is_refused(prod_server, url):
    before = get(f"{prod_server.management}/models")
    # the model API is off: 405 before any URL is looked at
    r = post(
        f"{prod_server.management}/models",
        params={"url": url},
    )
    assert r.status_code == 405, r.text
    assert r.json()["type"] == "MethodNotAllowedException"
    # the workflow API ignores enable_model_api; allowed_urls is what refuses it (404)
    r = post(
        f"{prod_server.management}/workflows",
        params={"url": url.replace(".mar", ".war")},
    )
    assert r.status_code == 404, r.text
    assert "does not match any allowed URL" in r.json()["message"]
    after = get(f"{prod_server.management}/models")
    assert after.json() == before.json()


def test_oversized_body_gets_413_and_server_stays_healthy(prod_server):
    limit = int(PROPS["max_request_size"])
    r = post(decode_url(prod_server), data=b"x" * (limit + 1))
    assert r.status_code == 413, r.text
    r = get(f"{prod_server.inference}/ping")
    assert r.status_code == 200 and r.json()["status"] == "Healthy"
    r = post(decode_url(prod_server), json=decode_body())
    assert r.status_code == 200, r.text
    assert prod_server.probe("ready").returncode == 0


def test_body_between_api_and_frontend_limits_gets_the_handlers_400(prod_server):
    body = b'{"instances": [], "pad": "' + b" " * LIMITS.max_body_bytes + b'"}'
    assert LIMITS.max_body_bytes < len(body) <= int(PROPS["max_request_size"])
    r = post(
        decode_url(prod_server),
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert r.status_code != 413


def test_management_api_is_not_on_the_inference_port(prod_server):
    r = get(f"{prod_server.inference}/models")
    assert r.status_code == 404 and r.json()["type"] == "ResourceNotFoundException"
    r = post(f"{prod_server.inference}/models", params={"url": "x.mar"})
    assert r.status_code in (404, 405), r.text


def test_metrics_port_needs_no_token_and_counts_requests(prod_server):
    """The counters move by exactly this test's request (the server is shared)."""
    archive = f"{tsproc.TEST_MODEL}-decode"
    before = scrape(prod_server.metrics)  # no Authorization header on this port
    items = 3
    resp = post(decode_url(prod_server), json=decode_body(items))
    assert resp.status_code == 200, resp.text
    r = get(f"{prod_server.metrics}/metrics")
    assert r.status_code == 200
    assert f'ts_inference_requests_total{{model_name="{archive}"' in r.text
    # the two series the queue-latency HPA variant reads (components/hpa-queue-latency)
    assert f'ts_queue_latency_microseconds{{model_name="{archive}"' in r.text

    def delta(name: str, **labels: str) -> float:
        return metric(scrape(prod_server.metrics), name, **labels) - metric(before, name, **labels)

    assert delta("ts_inference_requests_total", model_name=archive) == 1
    # the handlers' own metrics arrive through the worker's log, asynchronously
    deadline = time.monotonic() + 20
    while (got := delta("latentserve_items_total", ModelName=archive)) < items:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got == items


def test_writes_only_to_workdir_and_tmp(prod_server):
    """A read-only root filesystem is enough: nothing lands beside the archives or config."""
    assert sorted(p.name for p in prod_server.store.iterdir()) == sorted(
        [".build"] + [f"{tsproc.TEST_MODEL}-{op}.mar" for op in sorted(OPERATIONS)]
    )
    written = sorted(p.name for p in prod_server.workdir.iterdir())
    assert written == ["config.properties"], written  # no logs/, no snapshots, no key file
