"""The TorchServe frontend agent (deploy/agent/): it rewrites exactly the method it was
written for, and refuses to start, with a message, when the class has another shape.

Its endpoints (GET /v2, /v2/health/*, /v2/models/<m>[/ready]) are tested against a real
TorchServe in tests/integration/test_protocol.py and through the image in test_image.py.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import zipfile
from pathlib import Path

import pytest
import ts

from paths import AGENT_JAR, DEPLOY
from serving.properties import read_properties

FRONTEND = Path(ts.__file__).parent / "frontend" / "model-server.jar"
HANDLER = "org/pytorch/serve/http/api/rest/InferenceRequestHandler"


def _java(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def _fake_frontend(tmp: Path, method: str, cls: str = HANDLER) -> Path:
    """A class of the name `cls` (the handler's, or Model's) with `method` (and nothing
    else), and a Main that loads it: what the agent would see in another TorchServe."""
    src = tmp / "src"
    package, name = cls.rsplit("/", 1)
    (src / package).mkdir(parents=True)
    (src / f"{cls}.java").write_text(
        textwrap.dedent(f"""\
        package {package.replace("/", ".")};
        public class {name} {{
            {method}
        }}
        """)
    )
    (src / "Main.java").write_text(
        textwrap.dedent(f"""\
        public class Main {{
            public static void main(String[] a) throws Exception {{
                Class.forName("{cls.replace("/", ".")}");
                System.out.println("loaded");
            }}
        }}
        """)
    )
    classes = tmp / "classes"
    files = [str(p) for p in src.rglob("*.java")]
    proc = _java("javac", "-d", str(classes), *files, cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    return classes


@pytest.fixture(scope="module")
def agent() -> Path:
    if shutil.which("javac") is None:
        pytest.fail("javac missing: `make setup` installs a JDK")
    assert AGENT_JAR.is_file(), "run `make setup` (it builds the agent)"
    return AGENT_JAR


def test_the_jar_names_its_premain_class(agent):
    with zipfile.ZipFile(agent) as jar:
        manifest = jar.read("META-INF/MANIFEST.MF").decode()
        names = jar.namelist()
    assert "Premain-Class: latentserve.agent.Agent" in manifest
    assert "latentserve/agent/Metadata.class" in names


@pytest.mark.parametrize(
    "method",
    [
        "public void other() {}",  # no handleRequest at all
        "public void handleRequest(String[] segments) {}",  # another signature
    ],
)
def test_an_unexpected_class_shape_is_refused_with_a_message(agent, tmp_path, method):
    classes = _fake_frontend(tmp_path, method)
    proc = _java("java", f"-javaagent:{agent}", "-cp", str(classes), "Main", cwd=tmp_path)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "loaded" not in proc.stdout
    assert "latentserve-agent: refusing to start" in proc.stderr
    assert "has 0 methods handleRequest" in proc.stderr and "TorchServe 0.12.0" in proc.stderr


# Model with one timed poll too few in pollBatch: the batch-filling call would be missed
FEW_POLLS = """
    java.util.concurrent.LinkedBlockingDeque<Object> q =
        new java.util.concurrent.LinkedBlockingDeque<>();
    public void pollBatch(String t, long w, java.util.Map<String, Object> m) throws Exception {
        q.poll(w, java.util.concurrent.TimeUnit.MILLISECONDS);
        q.poll(w, java.util.concurrent.TimeUnit.MILLISECONDS);
    }
    public void pollInferJob(java.util.Map<String, Object> m, int n,
            java.util.concurrent.LinkedBlockingDeque<Object> d) throws Exception {
        d.poll(1L, java.util.concurrent.TimeUnit.MILLISECONDS);
        d.poll(1L, java.util.concurrent.TimeUnit.MILLISECONDS);
    }
"""


def test_a_model_class_of_another_shape_is_refused(agent, tmp_path):
    classes = _fake_frontend(tmp_path, FEW_POLLS, "org/pytorch/serve/wlm/Model")
    proc = _java("java", f"-javaagent:{agent}", "-cp", str(classes), "Main", cwd=tmp_path)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "refusing to start" in proc.stderr and "has timed polls" in proc.stderr
    assert "pollBatch(Ljava/lang/String;JLjava/util/Map;)V=2" in proc.stderr


def test_an_unknown_batching_mode_is_refused_at_start(agent, tmp_path):
    classes = _fake_frontend(tmp_path, "", "example/Unrelated")  # no TorchServe class at all
    flags = ("-Dlatentserve.batching=fast", f"-javaagent:{agent}")
    proc = _java("java", *flags, "-cp", str(classes), "Main", cwd=tmp_path)
    assert proc.returncode == 3 and "loaded" not in proc.stdout, proc.stdout
    assert "-Dlatentserve.batching=fast: expected greedy or timed" in proc.stderr


@pytest.mark.parametrize("cls", [HANDLER, "org/pytorch/serve/wlm/Model"])
def test_the_real_frontend_classes_are_rewritten(agent, tmp_path, cls):
    """Loading TorchServe 0.12's own classes under the agent succeeds (a class the
    verifier rejects would throw VerifyError here, long before any request)."""
    (tmp_path / "Main.java").write_text(
        "public class Main { public static void main(String[] a) throws Exception {"
        f' Class.forName("{cls.replace("/", ".")}"); System.out.println("loaded"); }} }}'
    )
    assert _java("javac", "-d", str(tmp_path), str(tmp_path / "Main.java"), cwd=tmp_path)
    # the frontend's log4j prints a WARNING line of its own on stdout
    cp = f"{tmp_path}:{FRONTEND.parent}/*"
    proc = _java("java", "-Xverify:all", f"-javaagent:{agent}", "-cp", cp, "Main", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "loaded"
    assert "refusing" not in proc.stderr


def test_every_config_loads_the_agent():
    for name in ("config.properties", "config.production.properties"):
        vmargs = read_properties(DEPLOY / name)["vmargs"]
        assert "-javaagent:" in vmargs and "latentserve-agent.jar" in vmargs, name
