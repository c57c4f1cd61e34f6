"""Missing tools fail the test with the fix (`make setup`), never skip it."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest


def require_tools(*commands: str) -> None:
    """Java and TorchServe's Python packages, plus any `commands` on PATH."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.fail(
            "java not found: TorchServe needs a Java 11+ runtime. Install it with `make setup` "
            "(apt-get install openjdk-17-jre-headless)."
        )
    for module in ("ts", "model_archiver"):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"Python package {module!r} missing: run `make setup` (the 'serve' extra).")
    for command in commands:
        if shutil.which(command) is None:
            pytest.fail(f"{command} not found on PATH (apt-get install {command}).")


def require_load_tools() -> None:
    """The load smoke test's and the fuzz test's packages (the 'load' extra)."""
    for module in ("locust", "hypothesis"):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"Python package {module!r} missing: run `make setup` (the 'load' extra)")
