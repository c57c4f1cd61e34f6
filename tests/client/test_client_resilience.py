"""LatentClient's resilience against a real TorchServe (fixture `server`, conftest.py):
retries while the workers are scaled to zero (503) and while the port refuses
connections, the give-up after the cap, and bounded keep-alive connections. The
client's default protocol (the Open Inference Protocol) throughout: retries do
not depend on the wire format."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import numpy as np
import pytest

from client import LatentClient, LatentServeError, RetryPolicy
from serving.properties import free_ports
from tests.client.conftest import EXPLORER_MODEL, client_for
from tests.support.live import scale_workers


def _scale(server, archive: str, workers: int) -> None:
    scale_workers(server.process.management_url, archive, workers)


def test_retries_while_the_workers_are_gone_then_succeeds(server):
    """Take the decode worker away (503 from TorchServe), give it back after ~1.5 s:
    the client's retries bridge the gap."""
    archive = f"{EXPLORER_MODEL}-decode"
    _scale(server, archive, 0)
    try:
        direct = server.post(archive, json={"instances": [{"z": [0.0, 0.0]}]})
        assert direct.status_code == 503, direct.text
        restorer = threading.Timer(1.5, _scale, (server, archive, 1))
        restorer.start()
        policy = RetryPolicy(retries=12, base_delay=0.2, max_delay=1.0)
        with client_for(server, retry=policy) as client:
            start = time.monotonic()
            images = client.decode([[0.0, 0.0], [1.0, -1.0]])
            waited = time.monotonic() - start
        restorer.join()
        assert len(images) == 2 and client.stats.retries >= 2 and waited > 1.0
    finally:
        _scale(server, archive, 1)


def test_gives_up_after_the_retry_cap_with_the_503_message(server):
    archive = f"{EXPLORER_MODEL}-sample"
    _scale(server, archive, 0)
    try:
        policy = RetryPolicy(retries=2, base_delay=0.05, max_delay=0.1)
        with client_for(server, retry=policy) as client, pytest.raises(LatentServeError) as info:
            client.sample(1, seed=0)
        err = info.value
        assert err.status == 503 and err.attempts == 3 and "has no worker" in err.message
    finally:
        _scale(server, archive, 1)


class LateForwarder:
    """A loopback port that refuses connections until `open()`, then forwards each
    connection to the real TorchServe: the server 'comes back' mid-call."""

    def __init__(self, target_port: int) -> None:
        (self.port,) = free_ports(1)
        self.target = target_port
        self.listener: socket.socket | None = None
        self.threads: list[threading.Thread] = []
        self.connections = 0

    def open(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()


def test_retries_connection_refused_until_the_server_listens(server, images):
    forwarder = LateForwarder(server.process.ports.inference)
    opener = threading.Timer(1.0, forwarder.open)
    opener.start()
    try:
        policy = RetryPolicy(retries=12, base_delay=0.2, max_delay=0.5)
        url = f"http://127.0.0.1:{forwarder.port}"
        with LatentClient(url, model=EXPLORER_MODEL, retry=policy) as client:
            got = client.encode(images[:5]).z_mean
            assert client.stats.retries >= 1
        with client_for(server) as direct:
            np.testing.assert_allclose(got, direct.encode(images[:5]).z_mean, atol=1e-6)
    finally:
        opener.join()
        forwarder.close()


def test_connections_are_kept_alive_and_bounded(server, images):
    """30 requests, 3 in flight: 3 TCP connections, reused across calls, plus the one the
    model's metadata was fetched on (once, on the calling thread)."""
    forwarder = LateForwarder(server.process.ports.inference)
    forwarder.open()
    try:
        url = f"http://127.0.0.1:{forwarder.port}"
        with LatentClient(url, model=EXPLORER_MODEL, batch_size=10, concurrency=3) as client:
            client.encode(images[:300])
            client.encode(images[:300])
            assert client.stats.requests == 60 and client.stats.metadata == 1
        assert forwarder.connections == 3 + 1
    finally:
        forwarder.close()
