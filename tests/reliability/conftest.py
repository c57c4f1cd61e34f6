"""Fixtures of the reliability tests: the server shared with tests/load."""

from __future__ import annotations

import pytest

from tests.load.server import require_load_tools, shared_server


@pytest.fixture(scope="session")
def load_server(tmp_path_factory, request):
    require_load_tools()
    return shared_server(tmp_path_factory, request)
