"""Run a documented block of curl commands as a user would, against a test server.

Used for the README's API examples and for the examples `make serve` prints.
The block runs under `bash -euo pipefail` with a `curl` shell function that
adds `-w` so that each command reports its HTTP status on stderr; stdout is
what the user would see. Only the ports change: the defaults of `make serve`
(127.0.0.1:8080/8081/8082) become the test server's.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from serving.properties import Ports

STATUS = "HTTP_STATUS"
CURL = "curl() { command curl -w '%{stderr}" + STATUS + ' %{http_code}\\n\' "$@"; }\n'


@dataclass(frozen=True)
class CurlRun:
    returncode: int
    stdout: str
    stderr: str
    statuses: list[int]  # one per curl command run, in order


def curl_commands(block: str) -> int:
    """How many curl commands the block runs (lines that start with `curl `)."""
    return sum(line.strip().startswith("curl ") for line in block.splitlines())


def run_curl_block(block: str, ports: Ports, cwd: Path, timeout: float = 300) -> CurlRun:
    script = block
    defaults = Ports()
    for key in ("inference", "management", "metrics"):
        default, port = getattr(defaults, key), getattr(ports, key)
        script = script.replace(f"127.0.0.1:{default}", f"127.0.0.1:{port}")
    proc = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + CURL + script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    statuses = [int(s) for s in re.findall(rf"{STATUS} (\d+)", proc.stderr)]
    return CurlRun(proc.returncode, proc.stdout, proc.stderr, statuses)
