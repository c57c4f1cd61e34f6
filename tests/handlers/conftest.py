"""Fixtures of the handler unit tests (helpers in tests/handlers/tiny.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.handlers.tiny import export_tiny


@pytest.fixture(scope="session")
def vae_dir(tmp_path_factory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("models") / "tiny-vae", "vae")


@pytest.fixture(scope="session")
def ae_dir(tmp_path_factory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("models") / "tiny-ae", "ae")
