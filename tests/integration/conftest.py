"""One real TorchServe for the whole integration session (fixture `torchserve`).

It serves every shipped model in model_store/ (four archives each) and, when
no shipped VAE or AE exists yet, an untrained fixture export of that kind
(`test-vae` / `test-ae`, latent 32 like the shipped fashion models), so the
suite runs before and after `make models`. See tests/support/live.py to start
a server of your own (other config, other models).
"""

from __future__ import annotations

import pytest
import tritonclient.http as httpclient

from paths import STORE
from serving.archive import model_dirs
from tests.support.exports import export_fixture
from tests.support.live import LiveServer, ServedModel, start_live_server
from tests.support.tools import require_tools


@pytest.fixture(scope="session")
def torchserve(tmp_path_factory) -> LiveServer:
    require_tools()
    root = tmp_path_factory.mktemp("torchserve")
    dirs = model_dirs(STORE)
    kinds = {ServedModel.of(d).kind for d in dirs}
    for kind in ("vae", "ae"):
        if kind not in kinds:
            dirs.append(export_fixture(root / "fixtures" / f"test-{kind}", kind, latent_dim=32))
    server = start_live_server(root, dirs)
    print(f"\nTorchServe READY in {server.ready_seconds:.1f}s: {server.process.expected_models()}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def vae(torchserve) -> ServedModel:
    return torchserve.model("vae")


@pytest.fixture(scope="session")
def ae(torchserve) -> ServedModel:
    return torchserve.model("ae")


@pytest.fixture(scope="module")
def client(torchserve):
    """tritonclient's HTTP client of the session's TorchServe (the Open Inference
    Protocol through a real standard client)."""
    c = httpclient.InferenceServerClient(
        url=torchserve.url.removeprefix("http://"), network_timeout=120.0
    )
    yield c
    c.close()
