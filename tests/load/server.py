"""One TorchServe shared by the load smoke test and the reliability tests.

Both `tests/load/conftest.py` and `tests/reliability/conftest.py` offer the
session fixture `load_server`; it calls `shared_server`, which starts the server
once per pytest session (module-level cache) with the integration helper
`start_live_server` and stops it when the first fixture that started it is torn
down, at the session's end. A separate server from the integration session's
because these tests kill workers, flood queues and watch memory, which must
not disturb (or be disturbed by) the integration tests' exact metric counts.

It serves the shipped `fashion-vae` (VAE, latent 32): three archives with the
shipped worker settings (serving/archive.py WorkerConfig), the plain local
config on free loopback ports.
"""

from __future__ import annotations

import importlib.util

import pytest

from serving.process import ROOT
from tests.integration.server import LiveServer, start_live_server

MODEL = "fashion-vae"
MODEL_DIR = ROOT / "model_store" / MODEL
_CACHE: dict[str, LiveServer] = {}


def require_load_tools() -> None:
    for module, extra in (("locust", "load"), ("hypothesis", "load")):
        if importlib.util.find_spec(module) is None:
            pytest.fail(
                f"Python package {module!r} missing: run `make setup` (the {extra!r} extra)"
            )


def shared_server(tmp_path_factory, request) -> LiveServer:
    if "server" not in _CACHE:
        if not (MODEL_DIR / "manifest.json").exists():
            pytest.fail(f"{MODEL_DIR} has no export: it is committed; restore it or `make models`")
        server = start_live_server(tmp_path_factory.mktemp("load-server"), [MODEL_DIR])
        print(f"\nload/reliability TorchServe READY in {server.startup_seconds:.1f}s")
        _CACHE["server"] = server

        def stop() -> None:
            _CACHE.pop("server").stop()

        request.addfinalizer(stop)
    return _CACHE["server"]
