"""The README's curl examples run verbatim against the live test server.

Only the ports are rewritten (8080/8081/8082 -> the test server's), by
`tests/support/curl.py`, which also reports each command's status. A comment
`# 400: <code> at <field>` announces an error example, and its body must carry
that code and field.
"""

from __future__ import annotations

import re

import pytest

from paths import ROOT
from tests.support.curl import run_curl_block


def api_section() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- api:start -->(.*?)<!-- api:end -->", text, re.S)
    assert match, "README.md lacks the <!-- api:start --> ... <!-- api:end --> section"
    return match.group(1)


def examples() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", api_section(), re.S)


def expected(block: str) -> list[tuple[int, str | None, str | None]]:
    """[(status, error code, field)] per curl command, from the comments."""
    out, pending = [], (200, None, None)
    for line in block.splitlines():
        line = line.strip()
        if m := re.match(r"# 400: (\w+) at (\S+)", line):
            pending = (400, m.group(1), m.group(2))
        elif line.startswith("curl "):
            out.append(pending)
            pending = (200, None, None)
    return out


def test_readme_has_examples_for_every_operation():
    text = "\n".join(examples())
    for op in ("encode", "decode", "sample"):
        assert f"/predictions/fashion-vae-{op}" in text or f"-{op} " in text
    assert sum(len(expected(b)) for b in examples()) >= 10


@pytest.mark.parametrize("index", range(len(examples())))
def test_readme_example_block_runs(torchserve, tmp_path, index):
    block = examples()[index]
    served = {m.name for m in torchserve.models}
    for model in sorted(
        set(re.findall(r"/(?:predictions|models)/([\w-]+)-(?:encode|decode|sample)", block))
    ):
        if model not in served:
            pytest.fail(
                f"README example uses the shipped model {model!r}, which is not in model_store/: "
                "train and export the shipped models with `make models`"
            )
    run = run_curl_block(block, torchserve.process.ports, tmp_path)
    assert run.returncode == 0, f"block {index} failed:\n{block}\n{run.stderr}"
    want = expected(block)
    assert run.statuses == [s for s, _, _ in want], (block, run.stdout[-2000:])
    errors = re.findall(r'"code":"(\w+)","field":"([^"]+)"', run.stdout)
    assert errors == [(c, f) for s, c, f in want if s != 200]
