"""The README's curl examples run verbatim against the live test server.

Only the ports are rewritten (8080/8081/8082 -> the test server's), by
`tests/support/curl.py`, which also reports each command's status. A comment
`# 400: <code> at <field>` announces an error example of the JSON API, and its
body must carry that code and field; `# 400 v2: <text>` one of the Open
Inference Protocol, whose `{"error": ...}` must contain the text. The Python
examples run too, and print what their `# ...` comments say.
"""

from __future__ import annotations

import re
import subprocess
import sys

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


def python_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", api_section(), re.S)


def expected(block: str) -> list[tuple[int, str | None, str | None]]:
    """[(status, error code, field)] per curl command, from the comments
    (code "v2" and the text the error must contain, for a v2 error)."""
    out, pending = [], (200, None, None)
    for line in block.splitlines():
        line = line.strip()
        if m := re.match(r"# 400: (\w+) at (\S+)", line):
            pending = (400, m.group(1), m.group(2))
        elif m := re.match(r"# 400 v2: (.+)", line):
            pending = (400, "v2", m.group(1))
        elif line.startswith("curl "):
            out.append(pending)
            pending = (200, None, None)
    return out


def test_readme_has_examples_for_every_operation():
    text = "\n".join(examples())
    for op in ("encode", "decode", "sample", "score"):
        assert f"/predictions/fashion-vae-{op}" in text or f"-{op} " in text
        assert re.search(rf"/v2/models/[\w-]+-{op}/infer", text), f"no v2 example of {op}"
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
    assert errors == [(c, f) for s, c, f in want if s != 200 and c != "v2"]
    v2_errors = re.findall(r'\{"error":"([^"]*)"\}', run.stdout)
    v2_wanted = [f for _, c, f in want if c == "v2"]
    assert len(v2_errors) == len(v2_wanted), run.stdout[-2000:]
    for text, error in zip(v2_wanted, v2_errors, strict=True):
        assert text in error, (text, error)


@pytest.mark.parametrize("index", range(len(python_examples())))
def test_readme_python_example_runs(torchserve, tmp_path, index):
    code = python_examples()[index].replace(
        "127.0.0.1:8080", f"127.0.0.1:{torchserve.process.ports.inference}"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"README Python example {index} failed:\n{proc.stderr}"
    printed = re.findall(r"(?m)^print\(.*\)\s+# (.+)$", code)
    assert printed, "a Python example says what it prints in a # comment"
    assert proc.stdout.splitlines() == printed
