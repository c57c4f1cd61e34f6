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
INVALID_KEY = "InvalidKeyException"


def decode_body(n: int = 1) -> dict:
    return {"instances": [{"z": [0.0] * tsproc.LATENT_DIM} for _ in range(n)]}


def decode_url(server) -> str:
    return f"{server.inference}/predictions/{tsproc.TEST_MODEL}-decode"


# ---- static: the file itself ------------------------------------------------------


def test_listeners_inference_and_metrics_public_management_loopback():
    assert PROPS["inference_address"] == "http://0.0.0.0:8080"
    assert PROPS["metrics_address"] == "http://0.0.0.0:8082"
    assert PROPS["management_address"] == "http://127.0.0.1:8081"
    assert PROPS["grpc_inference_address"] == "127.0.0.1"
    assert PROPS["grpc_management_address"] == "127.0.0.1"


def test_security_keys():
    assert PROPS["disable_token_authorization"] == "false"
    assert PROPS["enable_model_api"] == "false"
    assert PROPS["enable_envvars_config"] == "false"
    assert PROPS["install_py_dep_per_model"] == "false"
    assert int(PROPS["token_expiration_min"]) > 0
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


def test_request_without_token_is_refused(prod_server):
    for headers in ({}, {"Authorization": "Bearer not-the-key"}):
        r = post(decode_url(prod_server), json=decode_body(), headers=headers)
        assert r.status_code == 400, r.text  # TorchServe 0.12: 400, not 401
        assert r.json()["type"] == INVALID_KEY
        r = get(f"{prod_server.inference}/ping", headers=headers)
        assert r.status_code == 400 and r.json()["type"] == INVALID_KEY


def test_management_key_does_not_open_inference(prod_server):
    r = post(decode_url(prod_server), json=decode_body(), headers=prod_server.auth("management"))
    assert r.status_code == 400 and r.json()["type"] == INVALID_KEY


def test_request_with_token_succeeds(prod_server):
    r = post(decode_url(prod_server), json=decode_body(2), headers=prod_server.auth())
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 2
    r = get(f"{prod_server.inference}/ping", headers=prod_server.auth())
    assert r.status_code == 200 and r.json()["status"] == "Healthy"


@pytest.mark.parametrize("url", ["https://example.invalid/m.mar", "http://127.0.0.1:9/m.mar"])
def test_registering_from_a_remote_url_is_refused(prod_server, url):
    before = get(f"{prod_server.management}/models", headers=prod_server.auth("management"))
    # the model API is off: 405 before any URL is looked at
    r = post(
        f"{prod_server.management}/models",
        params={"url": url},
        headers=prod_server.auth("management"),
    )
    assert r.status_code == 405, r.text
    assert r.json()["type"] == "MethodNotAllowedException"
    # the workflow API ignores enable_model_api; allowed_urls is what refuses it (404)
    r = post(
        f"{prod_server.management}/workflows",
        params={"url": url.replace(".mar", ".war")},
        headers=prod_server.auth("management"),
    )
    assert r.status_code == 404, r.text
    assert "does not match any allowed URL" in r.json()["message"]
    after = get(f"{prod_server.management}/models", headers=prod_server.auth("management"))
    assert after.json() == before.json()


def test_oversized_body_gets_413_and_server_stays_healthy(prod_server):
    limit = int(PROPS["max_request_size"])
    r = post(decode_url(prod_server), data=b"x" * (limit + 1), headers=prod_server.auth())
    assert r.status_code == 413, r.text
    r = get(f"{prod_server.inference}/ping", headers=prod_server.auth())
    assert r.status_code == 200 and r.json()["status"] == "Healthy"
    r = post(decode_url(prod_server), json=decode_body(), headers=prod_server.auth())
    assert r.status_code == 200, r.text
    assert prod_server.probe("ready").returncode == 0


def test_body_between_api_and_frontend_limits_gets_the_handlers_400(prod_server):
    body = b'{"instances": [], "pad": "' + b" " * LIMITS.max_body_bytes + b'"}'
    assert LIMITS.max_body_bytes < len(body) <= int(PROPS["max_request_size"])
    r = post(
        decode_url(prod_server),
        data=body,
        headers={**prod_server.auth(), "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert r.status_code != 413


def test_management_api_is_not_on_the_inference_port(prod_server):
    for kind in ("inference", "management"):
        headers = prod_server.auth(kind)
        r = get(f"{prod_server.inference}/models", headers=headers)
        assert r.status_code in (400, 404), r.text
        r = post(f"{prod_server.inference}/models", params={"url": "x.mar"}, headers=headers)
        assert r.status_code in (400, 404, 405), r.text
        assert r.status_code != 200
    # with the inference key the path is simply unknown there
    r = get(f"{prod_server.inference}/models", headers=prod_server.auth())
    assert r.status_code == 404 and r.json()["type"] == "ResourceNotFoundException"
    # and the management listener is bound to loopback only
    log = prod_server.log()
    assert re.search(
        rf"Management API bind to: http://127\.0\.0\.1:{prod_server.ports.management}", log
    )


def test_metrics_port_needs_no_token_and_counts_requests(prod_server):
    """The counters move by exactly this test's request (the server is shared)."""
    archive = f"{tsproc.TEST_MODEL}-decode"
    before = scrape(prod_server.metrics)  # no Authorization header on this port
    items = 3
    resp = post(decode_url(prod_server), json=decode_body(items), headers=prod_server.auth())
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


def test_token_rotation(prod_server):
    old = prod_server.key("inference")
    r = post(
        f"{prod_server.management}/token",
        params={"type": "inference"},
        headers=prod_server.auth("API"),
    )
    assert r.status_code == 200, r.text
    new = prod_server.key("inference")
    assert new != old
    r = get(f"{prod_server.inference}/ping", headers={"Authorization": f"Bearer {old}"})
    assert r.status_code == 400
    r = get(f"{prod_server.inference}/ping", headers={"Authorization": f"Bearer {new}"})
    assert r.status_code == 200
    # the token API lives on the management port only
    r = post(
        f"{prod_server.inference}/token",
        params={"type": "inference"},
        headers=prod_server.auth("API"),
    )
    assert r.status_code == 400


def test_writes_only_to_workdir_and_tmp(prod_server):
    """A read-only root filesystem is enough: nothing lands beside the archives or config."""
    assert sorted(p.name for p in prod_server.store.iterdir()) == sorted(
        [".build"] + [f"{tsproc.TEST_MODEL}-{op}.mar" for op in sorted(OPERATIONS)]
    )
    written = sorted(p.name for p in prod_server.workdir.iterdir())
    assert written == ["config.properties", "key_file.json"], written  # no logs/, no snapshots
    assert oct(prod_server.key_file.stat().st_mode & 0o777) == "0o600"
