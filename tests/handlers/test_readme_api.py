"""The README's API section quotes the limits, error codes and metrics of the code."""

from __future__ import annotations

import re
from dataclasses import asdict

from handlers.errors import CODES
from handlers.limits import LIMITS
from handlers.metrics import SPECS
from handlers.options import HandlerOptions
from paths import ROOT
from serving.workers import WorkerConfig


def api_section() -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(r"<!-- api:start -->(.*?)<!-- api:end -->", text, re.S).group(1)


def shown(value) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_limits_table_matches_handlers_limits():
    api = api_section()
    for name, value in asdict(LIMITS).items():
        row = rf"\|\s*`{name}`\s*\|\s*{re.escape(shown(value))}[\s(|]"
        assert re.search(row, api), f"README limits table: `{name}` should read {shown(value)}"


def test_error_codes_and_metrics_are_documented():
    api = api_section()
    for code in CODES:
        assert f"`{code}`" in api, code
    for name, spec in SPECS.items():
        assert re.search(rf"\|\s*`{name}`\s*\|\s*{spec.kind}\s*\|", api), name


def test_batching_numbers_match_the_archive_defaults():
    api = api_section()
    w = WorkerConfig()
    assert f"`batchSize` {w.batch_size}" in api
    assert f"`maxBatchDelay` {w.max_batch_delay_ms} ms" in api
    assert f"in chunks of at most {HandlerOptions().chunk_size} items" in api.replace("\n", " ")
