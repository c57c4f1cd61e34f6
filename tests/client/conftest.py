"""A real TorchServe for the client and explorer tests, and the page's static server.

The session server of tests/integration serves every model on the plain local
config. These tests need two things it does not have: CORS for the explorer
page's origin (the page's port is chosen here, then TorchServe is configured for
exactly that origin), and freedom to take workers away (the retry test). So they
start their own small server with `tests/support/live.py`'s `start_live_server`:
the shipped `fashion-vae-2d` (the model the explorer shows), three workers.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from client import LatentClient
from client.inputs import read_idx
from paths import EXPLORER, FASHION_TEST_IMAGES, STORE
from serving.properties import BASE_CONFIG, free_ports, read_properties
from tests.support.live import LiveServer, start_live_server

EXPLORER_MODEL = "fashion-vae-2d"


def cors_config(base: Path, origin: str, out: Path) -> Path:
    """`base` with the CORS keys set for `origin` (a later key wins in Java properties)."""
    props = read_properties(base)
    props.update(
        cors_allowed_origin=origin,
        cors_allowed_methods=props.get("cors_allowed_methods", "GET, POST, OPTIONS"),
        cors_allowed_headers=props.get("cors_allowed_headers", "Content-Type"),
    )
    out.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return out


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass


@pytest.fixture(scope="session")
def page_origin():
    """The explorer's static files on a free loopback port (what `make explorer` serves)."""
    (port,) = free_ports(1)
    handler = functools.partial(QuietHandler, directory=str(EXPLORER))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def fashion_test_path() -> Path:
    if not FASHION_TEST_IMAGES.exists():
        pytest.fail(
            f"{FASHION_TEST_IMAGES} missing: run `make setup` "
            "(apt-get install dataset-fashion-mnist)"
        )
    return FASHION_TEST_IMAGES


@pytest.fixture(scope="session")
def server(tmp_path_factory, page_origin) -> LiveServer:
    model_dir = STORE / EXPLORER_MODEL
    if not (model_dir / "manifest.json").exists():
        pytest.fail(
            f"{model_dir}/manifest.json missing: the explorer and client tests need the shipped "
            f"{EXPLORER_MODEL} export (`make models`, or check out the committed model_store/)"
        )
    root = tmp_path_factory.mktemp("client-torchserve")
    config = cors_config(BASE_CONFIG, page_origin, root / "cors.properties")
    live = start_live_server(root, [model_dir], config=config)
    print(f"\nclient tests: TorchServe READY in {live.ready_seconds:.1f}s at {live.url}")
    yield live
    live.stop()


@pytest.fixture(scope="session")
def images(fashion_test_path) -> np.ndarray:
    """The first 512 Fashion-MNIST test images, uint8 (512, 28, 28)."""
    return np.ascontiguousarray(read_idx(fashion_test_path)[:512])


def client_for(server: LiveServer, **kwargs) -> LatentClient:
    """A client of the served model (the default protocol unless `protocol=` says)."""
    return LatentClient(server.url, model=EXPLORER_MODEL, **kwargs)
