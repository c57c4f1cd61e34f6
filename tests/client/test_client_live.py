"""LatentClient and its CLI against a real TorchServe (fixture `server`, conftest.py)."""

from __future__ import annotations

import contextlib
import math
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from client import LatentClient, LatentServeError, RetryPolicy
from client.inputs import read_idx
from paths import ROOT
from serving.properties import free_ports
from tests.client.conftest import EXPLORER_MODEL


@pytest.fixture(scope="module")
def images(fashion_test_path) -> np.ndarray:
    return np.ascontiguousarray(read_idx(fashion_test_path)[:512])


@pytest.fixture(scope="module")
def exported(server):
    """The served model's own TorchScript files, run in-process: the reference answer."""
    model_dir = server.models[0].model_dir
    enc = torch.jit.load(str(model_dir / "encoder.pt")).eval()
    dec = torch.jit.load(str(model_dir / "decoder.pt")).eval()
    return enc, dec, server.models[0].manifest


def client_for(server, **kwargs) -> LatentClient:
    return LatentClient(server.url, model=EXPLORER_MODEL, **kwargs)


def test_round_trip_matches_the_exported_model_in_order(server, images, exported):
    enc, dec, manifest = exported
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    with torch.inference_mode():
        want_mean, want_log_var = (t.numpy() for t in enc(x))
    with client_for(server, batch_size=64, concurrency=4) as client:
        got = client.encode(images)
        assert client.stats.requests == 8 and client.stats.retries == 0
        np.testing.assert_allclose(got.z_mean, want_mean, atol=1e-4)
        np.testing.assert_allclose(got.z_log_var, want_log_var, atol=1e-4)
        recon = client.decode(got.z_mean, as_array=True)
        pngs = client.decode(got.z_mean[:8])
    with torch.inference_mode():
        want_recon = dec(torch.from_numpy(got.z_mean)).numpy()[:, 0]
    assert recon.shape == (512, 28, 28)
    np.testing.assert_allclose(recon, want_recon, atol=1e-5)
    # PNGs are the same pixels, 8-bit
    as8 = np.stack([np.asarray(im, dtype=np.float32) for im in pngs]) / 255.0
    np.testing.assert_allclose(as8, recon[:8], atol=1 / 255 + 1e-6)
    # a reconstruction, not noise: within 1.5x the test MSE the model recorded at training
    mse = float(np.mean((recon - images / 255.0) ** 2))
    recorded = manifest.get("metrics", {}).get("mse_per_pixel")
    assert mse < 1.5 * recorded if recorded else mse < 0.1, (mse, recorded)


def test_splitting_and_ordering_across_many_concurrent_requests(server, images):
    sub = images[:300]
    with client_for(server, batch_size=256, concurrency=1) as one:
        reference = one.encode(sub).z_mean
    with client_for(server, batch_size=7, concurrency=6) as many:
        done = []
        split = many.encode(sub, progress=done.append)
        assert many.stats.requests == math.ceil(300 / 7)
    assert sum(done) == 300
    np.testing.assert_allclose(split.z_mean, reference, atol=1e-5)
    # shuffling the input shuffles the answer the same way
    order = np.random.default_rng(0).permutation(300)
    with client_for(server, batch_size=13, concurrency=4) as client:
        shuffled = client.encode(sub[order]).z_mean
    np.testing.assert_allclose(shuffled, reference[order], atol=1e-5)


def test_every_input_kind_encodes_to_the_same_code(server, images, tmp_path):
    img = images[3]
    path = tmp_path / "img.png"
    Image.fromarray(img, "L").save(path)
    kinds = [img, img.astype(np.float32) / 255.0, Image.fromarray(img, "L"), path, str(path)]
    with client_for(server) as client:
        codes = client.encode(kinds).z_mean
        np.testing.assert_allclose(codes, np.repeat(codes[:1], len(kinds), axis=0), atol=1e-5)
        # a 56x56 RGB upload is converted by the server (grayscale, resized)
        rgb = Image.fromarray(np.stack([img] * 3, axis=-1), "RGB").resize((56, 56))
        assert client.encode(rgb).z_mean.shape == (1, 2)


def test_sample_is_deterministic_by_seed_and_splits_past_256(server):
    with client_for(server) as client:
        a = client.sample(12, seed=7, as_array=True)
        b = client.sample(12, seed=7, as_array=True)
        c = client.sample(12, seed=8, as_array=True)
        assert a.shape == (12, 28, 28) and np.array_equal(a, b) and not np.array_equal(a, c)
        before = client.stats.requests
        many = client.sample(300, seed=7, temperature=0.5)
        assert len(many) == 300 and client.stats.requests - before == 2
        z1 = client.encode(np.zeros((28, 28), np.uint8), sample=True, seed=3)
        z2 = client.encode(np.zeros((28, 28), np.uint8), sample=True, seed=3)
        assert z1.seed == 3 and np.array_equal(z1.z, z2.z)


def test_4xx_raise_one_error_type_with_the_servers_message_and_no_retry(server):
    with client_for(server) as client:
        with pytest.raises(LatentServeError) as info:
            client.decode([[0.0, 0.0, 0.0]])
        err = info.value
        assert (err.status, err.code, err.field) == (400, "wrong_latent_dim", "instances[0].z")
        assert "expected 2 values" in err.message and err.attempts == 1

        bad = np.full((28, 28), 0.5)
        bad[4, 5] = 1.5
        with pytest.raises(LatentServeError) as info:
            client.encode([np.zeros((28, 28)), bad])
        err = info.value
        assert (err.status, err.code) == (400, "out_of_range")
        assert err.field == "instances[1].pixels[4][5]" and "1.5" in err.message

        with pytest.raises(LatentServeError, match=r"at temperature: .*less than or equal to 5"):
            client.sample(2, seed=1, temperature=9.0)
        assert client.stats.retries == 0
    with LatentClient(server.url, model="nope") as client, pytest.raises(LatentServeError) as info:
        client.decode([[0.0, 0.0]])
    assert info.value.status == 404 and info.value.code == "ModelNotFoundException"


def _scale(server, archive: str, workers: int) -> None:
    resp = requests.put(
        f"{server.process.management_url}/models/{archive}",
        params={"min_worker": workers, "max_worker": workers, "synchronous": "true"},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text


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
    """30 requests, 3 in flight: 3 TCP connections, reused across calls."""
    forwarder = LateForwarder(server.process.ports.inference)
    forwarder.open()
    try:
        url = f"http://127.0.0.1:{forwarder.port}"
        with LatentClient(url, model=EXPLORER_MODEL, batch_size=10, concurrency=3) as client:
            client.encode(images[:300])
            client.encode(images[:300])
            assert client.stats.requests == 60
        assert forwarder.connections == 3
    finally:
        forwarder.close()


def _write_idx(path, arr: np.ndarray) -> None:
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(head + arr.astype(np.uint8).tobytes())


def test_cli_embed_sample_decode(server, images, tmp_path):
    _write_idx(tmp_path / "part-images-idx3-ubyte", images[:300])
    _write_idx(tmp_path / "part-labels-idx1-ubyte", np.arange(300) % 10)
    common = ["--url", server.url, "--model", EXPLORER_MODEL]

    def run(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "client", *args, *common],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    out = run(
        "embed",
        str(tmp_path / "part-images-idx3-ubyte"),
        "--out",
        str(tmp_path / "emb.npy"),
        "--labels-out",
        str(tmp_path / "labels.npy"),
        "--batch-size",
        "50",
    )
    assert "embedded 300 images" in out and "items/s" in out and "6 requests" in out
    assert np.load(tmp_path / "emb.npy").shape == (300, 2)
    assert np.load(tmp_path / "labels.npy").tolist() == (np.arange(300) % 10).tolist()

    run("sample", "--n", "6", "--seed", "1", "--out", str(tmp_path / "grid.png"))
    assert Image.open(tmp_path / "grid.png").size == (3 * 28, 2 * 28)
    run("decode", "--z", "0.5,0.5", "--z", "-1,1", "--out", str(tmp_path / "img.png"))
    assert Image.open(tmp_path / "img.png").size == (2 * 28, 28)

    bad = subprocess.run(
        [sys.executable, "-m", "client", "decode", "--z", "1,2,3", "--out", str(tmp_path / "x.png")]
        + common,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "HTTP 400 wrong_latent_dim" in bad.stderr
