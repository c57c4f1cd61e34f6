"""Fixtures shared by every test folder (helpers live in the folders' own modules)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.handlers.tiny import export_tiny


@pytest.fixture(scope="session")
def vae_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised VAE exported through the real export path."""
    return export_tiny(tmp_path_factory.mktemp("models") / "tiny-vae", "vae")


@pytest.fixture(scope="session")
def ae_dir(tmp_path_factory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("models") / "tiny-ae", "ae")
