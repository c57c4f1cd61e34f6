"""The bench's answer checks: cheap (keys counted, not parsed), so errors are counted.

Each returns a `loadtests.bench.httpgen.Check` (status, body, headers -> None or what is
wrong); `v2_outputs` names each operation's v2 outputs, which `v2_answer` expects.
Shared by the load points (`points.py`) and the plain-server peer (`peers.py`).
"""

from __future__ import annotations

import json

from loadtests import payloads
from paths import STORE


def counts(key: bytes, items: int):
    def check(status: int, body: bytes, headers: dict) -> str | None:
        if status != 200:
            return f"HTTP {status}: {body[:160]!r}"
        got = body.count(key)
        return None if got == items else f"{got} {key.decode()} in the answer, expected {items}"

    return check


def exact_length(n: int):
    def check(status: int, body: bytes, headers: dict) -> str | None:
        if status != 200:
            return f"HTTP {status}"
        return None if len(body) == n else f"{len(body)} bytes, expected {n}"

    return check


def v2_answer(items: int, outputs: dict[str, str]):
    """The v2 answer check (`payloads.check_v2`) of `items` items with `outputs`."""

    def check(status: int, body: bytes, headers: dict) -> str | None:
        return payloads.check_v2(status, body, headers, items, outputs)

    return check


def v2_outputs(model: str) -> dict[str, dict[str, str]]:
    """Each operation's outputs {name: datatype}, as the v2 contract names them."""
    vae = json.loads((STORE / model / "manifest.json").read_text())["kind"] == "vae"
    encode = {"z_mean": "FP32", "z_log_var": "FP32"} if vae else {"z_mean": "FP32"}
    return {"encode": encode, "decode": {"image": "UINT8"}, "sample": {"image": "UINT8"}}
