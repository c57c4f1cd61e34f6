"""The pod's authenticating gateway as it runs: two replicas, one credential.

Each "pod" is a real TorchServe started by the container entrypoint with the
production config (listeners on loopback, its own token off) and a real nginx
running deploy/gateway/ in front of it; a round-robin nginx plays the Service.
Everything listens on loopback ports except where a test needs the host's
other address. One model (decode), one worker per replica.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from handlers.limits import LIMITS
from serving.properties import free_ports, read_properties
from tests.deploy import tsproc
from tests.support import gateway as gw
from tests.support.v2 import binary_body, read_v2

pytestmark = pytest.mark.integration

MODEL = f"{tsproc.TEST_MODEL}-decode"
BODY = {"instances": [{"z": [0.0] * tsproc.LATENT_DIM}]}


def new_key() -> str:
    return secrets.token_urlsafe(24)


def write_keys(path: Path, *keys: str) -> None:
    """Replace the file atomically, as the kubelet updates a mounted Secret."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text("# API keys, one per line\n" + "".join(f"{k}\n" for k in keys))
    tmp.replace(path)


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Pods:
    servers: list[tsproc.Server]
    gateways: list[gw.Gateway]
    balancer: gw.Nginx
    balancer_url: str
    keys_file: Path
    key: str  # the key the fixture starts with; tests that rotate restore it

    def entry(self, request_id: str) -> list[tuple[int, dict]]:
        """(gateway index, log entry) for every entry with this request ID."""
        found = []
        for i, g in enumerate(self.gateways):
            found += [(i, e) for e in g.entries() if e["request_id"] == request_id]
        return found

    def wait_entry(self, request_id: str, timeout: float = 5.0) -> list[tuple[int, dict]]:
        deadline = time.monotonic() + timeout
        while not (found := self.entry(request_id)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return found


@pytest.fixture(scope="module")
def pods(deploy_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pods")
    keys_file = tmp / "keys"
    key = new_key()
    write_keys(keys_file, key)
    servers = [tsproc.start(tmp / f"ts{i}", deploy_store, models=f"{MODEL}.mar") for i in range(2)]
    gateways: list[gw.Gateway] = []
    balancer = None
    try:
        for s in servers:
            s.wait_ready()
        for i, s in enumerate(servers):
            api, health = free_ports(2)
            gateways.append(
                gw.start_gateway(
                    f"127.0.0.1:{s.ports.inference}", keys_file, api, health,
                    tmp / f"gateway{i}.log", metrics_upstream=f"127.0.0.1:{s.ports.metrics}",
                )
            )  # fmt: skip
        port = free_ports(1)[0]
        balancer = gw.start_balancer(
            [f"127.0.0.1:{g.port}" for g in gateways], port, tmp / "balancer.log"
        )
        yield Pods(servers, gateways, balancer, f"http://127.0.0.1:{port}", keys_file, key)
    finally:
        for n in [balancer, *gateways]:
            if n is not None:
                n.stop()
        for s in servers:
            s.stop()


# ---- the file itself ---------------------------------------------------------------


def test_body_limit_agrees_with_torchserve_and_the_api():
    text = gw.NGINX_CONF.read_text()
    (size,) = re.findall(r"client_max_body_size (\d+)m;", text)
    props = read_properties(tsproc.PROD_CONFIG)
    assert int(size) * 1024 * 1024 == int(props["max_request_size"]) > LIMITS.max_body_bytes


# ---- one key, two replicas ------------------------------------------------------------


def test_one_key_gets_200_from_both_replicas(pods):
    ids = [f"both-{i}-{secrets.token_hex(4)}" for i in range(12)]
    with requests.Session() as http:
        for rid in ids:
            r = http.post(
                f"{pods.balancer_url}/predictions/{MODEL}",
                json=BODY,
                headers={**bearer(pods.key), "X-Request-ID": rid},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            assert len(r.json()["predictions"]) == 1
            assert r.headers["X-Request-ID"] == rid
    answered_by = {}
    for rid in ids:
        found = pods.wait_entry(rid)
        assert len(found) == 1, f"{rid}: {found}"  # logged once, by the gateway that served it
        i, entry = found[0]
        assert entry["status"] == 200 and entry["upstream_status"] == "200"
        assert entry["key_id"] != "-" and pods.key not in json.dumps(entry)
        assert re.fullmatch(r"[0-9a-f-]{36}", entry["torchserve_request_id"])  # TorchServe's own
        answered_by[rid] = i
    assert set(answered_by.values()) == {0, 1}, answered_by  # both replicas answered


def test_v2_binary_request_passes_through(pods):
    z = np.zeros((3, tsproc.LATENT_DIM), np.float32)
    body, headers = binary_body("z", z)
    for g in pods.gateways:
        r = requests.post(
            f"{g.url}/v2/models/{MODEL}/infer",
            data=body,
            headers={**headers, **bearer(pods.key)},
            timeout=30,
        )
        _, tensors = read_v2(r)
        assert next(iter(tensors.values())).shape[0] == 3


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key-0123456789abcdef"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-API-Key": "see-key"},  # the right key in the wrong header
    ],
    ids=["missing", "wrong", "empty", "basic", "other-header"],
)
def test_missing_or_wrong_key_gets_401_from_both(pods, headers):
    headers = {k: v.replace("see-key", pods.key) for k, v in headers.items()}
    for g in pods.gateways:
        for path in (f"/predictions/{MODEL}", "/ping", f"/v2/models/{MODEL}/infer"):
            r = requests.post(f"{g.url}{path}", json=BODY, headers=headers, timeout=30)
            assert r.status_code == 401, r.text
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert r.headers["Content-Type"] == "application/json"
            err = r.json()["error"]
            assert err["status"] == 401 and err["code"] == "unauthorized"
            assert err["field"] == "Authorization" and err["message"]
            rid = r.headers["X-Request-ID"]
            assert re.fullmatch(r"[0-9a-f]{32}", rid)
            ((_, entry),) = pods.wait_entry(rid)
            assert entry["status"] == 401 and entry["upstream_status"] == ""  # never forwarded


def test_request_id_passed_through_generated_or_replaced(pods):
    g = pods.gateways[0]
    url = f"{g.url}/predictions/{MODEL}"
    mine = "client-7f3a:retry.2"
    r = requests.post(url, json=BODY, headers={**bearer(pods.key), "X-Request-ID": mine})
    assert r.status_code == 200 and r.headers["X-Request-ID"] == mine
    ((_, entry),) = pods.wait_entry(mine)
    assert entry["uri"] == f"/predictions/{MODEL}" and entry["method"] == "POST"
    r = requests.post(url, json=BODY, headers=bearer(pods.key))
    assert r.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-ID"])
    assert pods.wait_entry(r.headers["X-Request-ID"])
    # an ID that is not a plain token (too long, spaces, quotes) is replaced, not logged
    for bad in ("x" * 129, 'a "quoted" id', "semi;colon"):
        r = requests.post(url, json=BODY, headers={**bearer(pods.key), "X-Request-ID": bad})
        assert r.status_code == 200
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-ID"])


def test_errors_of_the_gateway_are_json_with_the_request_id(pods, tmp_path):
    g = pods.gateways[1]
    too_big = b"x" * (9 * 1024 * 1024 + 1)
    r = requests.post(
        f"{g.url}/predictions/{MODEL}",
        data=too_big,
        headers={**bearer(pods.key), "X-Request-ID": "big-1"},
        timeout=30,
    )
    assert r.status_code == 413 and r.headers["X-Request-ID"] == "big-1"
    assert r.json()["error"]["code"] == "payload_too_large"
    # over the API's 8 MiB but within 9 MiB: the handler's own 400, naming the body
    body = b'{"instances": [], "pad": "' + b" " * LIMITS.max_body_bytes + b'"}'
    r = requests.post(
        f"{g.url}/predictions/{MODEL}",
        data=body,
        headers={**bearer(pods.key), "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "payload_too_large"
    # TorchServe's own answers pass through unchanged (an unknown model: its 404)
    r = requests.post(f"{g.url}/predictions/nope", json=BODY, headers=bearer(pods.key))
    assert r.status_code == 404 and "X-Request-ID" in r.headers
    # a gateway whose TorchServe is down: 502 in the API's shape, with the ID
    dead_port, api, health = free_ports(3)
    with gw.start_gateway(
        f"127.0.0.1:{dead_port}", pods.keys_file, api, health, tmp_path / "dead.log"
    ) as dead:
        r = requests.post(
            f"{dead.url}/predictions/{MODEL}",
            json=BODY,
            headers={**bearer(pods.key), "X-Request-ID": "dead-1"},
        )
        assert r.status_code == 502 and r.headers["X-Request-ID"] == "dead-1"
        assert r.json()["error"]["code"] == "unavailable"
        assert requests.get(f"{dead.health_url}/healthz").status_code == 200
        assert requests.get(f"{dead.health_url}/ready").status_code == 502  # not ready


def test_health_and_metrics_need_no_key_and_only_there(pods):
    for g in pods.gateways:
        r = requests.get(f"{g.health_url}/healthz", timeout=10)
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        r = requests.get(f"{g.health_url}/ready", timeout=10)
        assert r.status_code == 200 and r.json()["status"] == "Healthy"
        assert requests.get(f"{g.health_url}/predictions/{MODEL}").status_code == 404
        # the API port has no keyless path, /ping included
        assert requests.get(f"{g.url}/ping", timeout=10).status_code == 401
        r = requests.get(f"{g.metrics_url}/metrics", timeout=10)
        assert r.status_code == 200 and "ts_inference_requests_total" in r.text
        assert requests.post(f"{g.metrics_url}/metrics", timeout=10).status_code == 403
        assert requests.get(f"{g.metrics_url}/ping", timeout=10).status_code == 404


def test_rotation_under_load_has_zero_failed_requests(pods):
    """Add key 2, switch the clients to it, remove key 1: every request succeeds."""
    old, new = pods.key, new_key()
    current = {"key": old}
    results: list[tuple[int, str]] = []  # (status or -1, key used)
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as http:
            while not stop.is_set():
                key = current["key"]
                try:
                    r = http.post(
                        f"{pods.balancer_url}/predictions/{MODEL}",
                        json=BODY, headers=bearer(key), timeout=30,
                    )  # fmt: skip
                    results.append((r.status_code, key))
                except requests.RequestException:
                    results.append((-1, key))

    def until(n: int) -> None:  # let the load run for n more requests (bounded)
        target, deadline = len(results) + n, time.monotonic() + 60
        while len(results) < target and time.monotonic() < deadline:
            time.sleep(0.02)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        until(40)
        write_keys(pods.keys_file, old, new)  # 1. the Secret gets key 2 beside key 1
        until(40)
        current["key"] = new  # 2. the clients switch
        until(40)
        write_keys(pods.keys_file, new)  # 3. key 1 is removed
        until(40)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        pods.key = new  # later tests use the key that is valid now
    failed = [r for r in results if r[0] != 200]
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"
    assert len(results) >= 160
    assert {k for _, k in results} == {old, new}
    for g in pods.gateways:
        assert requests.get(f"{g.url}/ping", headers=bearer(old)).status_code == 401
        assert requests.get(f"{g.url}/ping", headers=bearer(new)).status_code == 200
    # the log tells which key the clients used, by digest only
    key_ids = {e["key_id"] for g in pods.gateways for e in g.entries()}
    assert len(key_ids - {"-"}) >= 2
    print(f"rotation: {len(results)} requests, {len(failed)} failed")


def _non_loopback_ipv4() -> str:
    """The address this host uses towards other hosts (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only the route is looked up
            addr = s.getsockname()[0]
        except OSError:
            addr = ""
    if not addr or addr.startswith("127."):
        addrs = socket.gethostbyname_ex(socket.gethostname())[2]
        addr = next((a for a in addrs if not a.startswith("127.")), "")
    if not addr:
        pytest.fail("this host has no non-loopback IPv4 address to test the loopback binds against")
    return addr


def test_torchserve_ports_refuse_connections_on_the_host_address(pods):
    addr = _non_loopback_ipv4()
    # control: the address itself accepts connections on a port something listens on
    with socket.create_server(("0.0.0.0", 0)) as listener:
        port = listener.getsockname()[1]
        socket.create_connection((addr, port), timeout=5).close()
    for s in pods.servers:
        for name, port in vars(s.ports).items():
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((addr, port), timeout=5).close()
                pytest.fail(f"TorchServe's {name} port {port} accepts connections on {addr}")
            socket.create_connection(("127.0.0.1", port), timeout=5).close()  # but loopback does
