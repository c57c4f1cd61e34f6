"""The tree's layering (DESIGN.md): no import circles, the wire apart from the operations,
`ts` only in the adapter, nothing on the request path importing training/ or serving/.

The static checks read every module's imports with `ast` (function-level imports
included: a lazy import hides a circle, it does not remove it); the last test runs
each operation in a fresh interpreter, as a TorchServe worker does, and lists what
it imported.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("handlers", "training", "serving", "client", "loadtests", "explorer", "batch")
HANDLER_DEPS = {"torch", "numpy", "PIL", "pydantic", "pydantic_core"}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    found = {"paths": ROOT / "paths.py"}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            found[".".join(parts)] = path
    return found


MODULES = module_files()


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str) -> set[str]:
    """The modules `name` imports anywhere in its file (not under `if TYPE_CHECKING:`):
    `from pkg import sub` counts as importing `pkg.sub` when that is a module."""
    tree = ast.parse(MODULES[name].read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _type_checking(node)
            for n in ast.walk(node) if n is not node}  # fmt: skip
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in MODULES else base)
    return out


def project_graph() -> dict[str, set[str]]:
    return {m: {i for i in imports_of(m) if i in MODULES and i != m} for m in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert "handlers.wire.request" in imports_of("handlers.wire.json_read")
    # an import under TYPE_CHECKING is for the type checker only
    assert "handlers.manifest" not in imports_of("handlers.wire.inputs")


def test_no_import_circles():
    assert cycles(project_graph()) == []


def test_downstream_never_reaches_upstream():
    """training imports neither serving nor handlers; handlers import neither; nothing
    imports batch but its benchmark in loadtests/ (DESIGN.md's data flow)."""
    graph = project_graph()
    rules = {
        "training": ("serving", "handlers", "client", "batch"),
        "handlers": ("training", "serving", "client", "loadtests", "batch"),
        "client": ("training", "serving", "handlers", "batch"),
    }
    bad = [
        (m, i)
        for m, deps in graph.items()
        for i in deps
        if i.split(".")[0] in rules.get(m.split(".")[0], ())
        or (i.split(".")[0] == "batch" and m.split(".")[0] not in ("batch", "loadtests"))
    ]
    assert bad == []


def test_the_wire_imports_no_operation_model_or_adapter():
    graph = project_graph()
    wire = [m for m in graph if m.startswith("handlers.wire")]
    assert len(wire) >= 9
    allowed = ("handlers.wire", "handlers.errors", "handlers.limits")
    bad = [(m, i) for m in wire for i in graph[m] if not i.startswith(allowed)]
    assert bad == []


def test_handlers_import_only_their_dependencies_and_ts_only_in_the_adapter():
    stdlib = set(sys.stdlib_module_names)
    for m in (m for m in MODULES if m.startswith("handlers")):
        tops = {i.split(".")[0] for i in imports_of(m)} - {"__future__"}
        if m == "handlers.ts_adapter":
            assert "ts" in tops
            tops.discard("ts")
        assert tops <= stdlib | HANDLER_DEPS | {"handlers"}, (m, tops - stdlib)


WORKER = r"""
import json, sys
import handlers.decode_handler, handlers.encode_handler, handlers.sample_handler
import handlers.score_handler
from handlers.engine import Engine
from handlers.wire.request import RawRequest
from paths import STORE

png = open(sys.argv[1], "rb").read()
bodies = {
    "encode": RawRequest(png, "image/png"),
    "score": RawRequest(png, "image/png"),
    "decode": RawRequest(json.dumps({"instances": [{"z": [0.0] * 32}]}).encode(),
                         "application/json"),
    "sample": RawRequest(b'{"n": 2, "seed": 1}', "application/json"),
}
status = {}
for op, raw in bodies.items():
    replies, _ = Engine.from_dir(STORE / "fashion-vae", op).handle([raw])
    status[op] = replies[0].status
print(json.dumps({"status": status, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


@pytest.mark.slow
def test_a_worker_running_every_operation_imports_no_build_time_code(tmp_path):
    from PIL import Image

    png = tmp_path / "x.png"
    Image.new("L", (28, 28), 128).save(png)
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(png)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["status"] == {"encode": 200, "score": 200, "decode": 200, "sample": 200}
    assert "handlers" in seen["modules"] and "ts" in seen["modules"]
    assert set(seen["modules"]) & {"training", "serving", "client", "loadtests", "batch"} == set()
