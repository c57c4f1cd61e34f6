"""The README's curl examples run verbatim against the live test server.

Only the ports are rewritten (8080/8081/8082 -> the test server's). A `curl`
shell function adds `-w` to report each status on stderr; the block's stdout is
what a user would see. A comment `# 400: <code> at <field>` announces an error
example, and its body must carry that code and field.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from paths import ROOT

STATUS = "HTTP_STATUS"
CURL = "curl() { command curl -w '%{stderr}" + STATUS + ' %{http_code}\\n\' "$@"; }\n'


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
    ports = torchserve.process.ports
    script = block
    for default, port in ((8080, ports.inference), (8081, ports.management), (8082, ports.metrics)):
        script = script.replace(f"127.0.0.1:{default}", f"127.0.0.1:{port}")
    proc = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + CURL + script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"block {index} failed:\n{block}\n{proc.stderr}"
    statuses = [int(s) for s in re.findall(rf"{STATUS} (\d+)", proc.stderr)]
    want = expected(block)
    assert statuses == [s for s, _, _ in want], (block, proc.stdout[-2000:])
    errors = re.findall(r'"code":"(\w+)","field":"([^"]+)"', proc.stdout)
    assert errors == [(c, f) for s, c, f in want if s != 200]
