"""Start a real TorchServe, wait until every worker is READY, stop it.

Used by `make serve` / `make stop` (`serving/cli.py`) and, through
`serving/server.py` (a store of chosen archives on free ports), by the
benchmark, the soak and the tests. Everything a run writes lives in its
`run_dir`: the rendered config.properties, TorchServe's logs (LOG_LOCATION,
METRICS_LOCATION), and `tmp/` (TMPDIR/TEMP) where TorchServe keeps its pid
file `.model_server.pid` and unpacks archives. Two runs with different
run_dirs and ports therefore never collide (TorchServe's own pid file would
otherwise be global in /tmp).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from paths import ROOT
from serving.properties import BASE_CONFIG, LOG_CONFIG, Ports, read_properties
from serving.query import workers

PATH_KEYS = ("model_store", "metrics_config")  # relative to the repository in the config
# log lines meaning a worker could not load its model (it would retry forever): the
# frontend's own in ts_log.log, the worker's stdout/stderr in model_log.log
LOAD_FAILURES = ("Load model failed", "Backend worker process died")
SCANNED_LOGS = ("ts_log.log", "model_log.log")
MODEL_SERVER = "org.pytorch.serve.ModelServer"


class ServeError(RuntimeError):
    pass


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child is not alive
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def _torchserve_group(pgid: int) -> list[int]:
    """Live pids of process group `pgid` that are TorchServe's frontend or workers."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, IndexError):
            continue
        ours = MODEL_SERVER in cmdline or "model_service_worker" in cmdline
        if int(fields[2]) == pgid and fields[0] != "Z" and ours:
            pids.append(int(stat.parent.name))
    return pids


@dataclass
class TorchServeProcess:
    """One TorchServe instance: `start()`, `wait_ready()`, `stop()`.

    `models` are archive names in `model_store` (without `.mar`); None loads
    every archive there. `base_config` is rendered with these ports, the store
    and absolute paths into `run_dir/config.properties`.
    """

    run_dir: Path
    model_store: Path
    models: list[str] | None = None
    ports: Ports = field(default_factory=Ports)
    base_config: Path = BASE_CONFIG
    host: str = "127.0.0.1"
    log_config: Path | None = LOG_CONFIG  # None: TorchServe's built-in log4j2.xml

    def __post_init__(self) -> None:
        # sizes of the scanned logs at start(): older lines are other runs'
        self._log_offsets: dict[str, int] = {}
        self.run_dir = Path(self.run_dir).resolve()
        self.model_store = Path(self.model_store).resolve()

    # ---- addresses -------------------------------------------------------------
    @property
    def inference_url(self) -> str:
        return f"http://{self.host}:{self.ports.inference}"

    @property
    def management_url(self) -> str:
        return f"http://{self.host}:{self.ports.management}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports.metrics}"

    @property
    def config_path(self) -> Path:
        return self.run_dir / "config.properties"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "tmp" / ".model_server.pid"

    # ---- config ----------------------------------------------------------------
    def expected_models(self) -> list[str]:
        if self.models is not None:
            return list(self.models)
        return sorted(p.stem for p in self.model_store.glob("*.mar"))

    def served_models(self) -> list[str] | None:
        """The archives the running server was started with (the load_models of the config
        start() rendered), or None when none runs from this run_dir."""
        if self.pid() is None or not self.config_path.exists():
            return None
        loaded = read_properties(self.config_path).get("load_models", "")
        return [m.split("=", 1)[0] for m in loaded.split(",") if m]

    def render_config(self) -> str:
        props = read_properties(self.base_config)
        for key in PATH_KEYS:
            if key in props:
                props[key] = str((ROOT / props[key]).resolve())
        if "vmargs" in props:  # -javaagent:<path> relative to the repository, too
            props["vmargs"] = " ".join(
                f"-javaagent:{(ROOT / a.split(':', 1)[1]).resolve()}"
                if a.startswith("-javaagent:")
                else a
                for a in props["vmargs"].split()
            )
        props["model_store"] = str(self.model_store)
        props.update(self.ports.properties(self.host))
        props["load_models"] = ",".join(f"{m}={m}.mar" for m in self.expected_models())
        head = f"# rendered from {self.base_config} by serving/process.py; edit that file\n"
        return head + "".join(f"{k}={v}\n" for k, v in props.items())

    # ---- lifecycle -------------------------------------------------------------
    def pid(self) -> int | None:
        """The running frontend's pid (from this run_dir's pid file), or None."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if not _alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return None
        return pid if MODEL_SERVER in cmdline else None

    def start(self) -> int:
        if self.pid() is not None:
            raise ServeError(f"TorchServe already runs from {self.run_dir} (pid {self.pid()})")
        if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
            raise ServeError("java not found: TorchServe needs Java 11+; run `make setup`")
        torchserve = Path(sys.executable).parent / "torchserve"
        if not torchserve.exists():
            raise ServeError(f"{torchserve} not found; run `make setup` (pip extra 'serve')")
        missing = [
            m for m in self.expected_models() if not (self.model_store / f"{m}.mar").exists()
        ]
        if missing or not self.expected_models():
            raise ServeError(f"no archives {missing or ''} in {self.model_store}; `make archive`")
        for name, port in vars(self.ports).items():
            if _port_in_use(self.host, port):
                raise ServeError(f"{name} port {self.host}:{port} is already in use")
        for sub in ("logs", "tmp"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        self.pid_file.unlink(missing_ok=True)
        self._log_offsets = {
            name: (self.log_dir / name).stat().st_size if (self.log_dir / name).exists() else 0
            for name in SCANNED_LOGS
        }
        self.config_path.write_text(self.render_config())
        env = dict(
            os.environ,
            TMPDIR=str(self.run_dir / "tmp"),
            TEMP=str(self.run_dir / "tmp"),
            LOG_LOCATION=str(self.log_dir),
            METRICS_LOCATION=str(self.log_dir),
        )
        cmd = [
            str(torchserve), "--start", "--ncs", "--disable-token-auth",
            "--ts-config", str(self.config_path), "--model-store", str(self.model_store),
        ]  # fmt: skip
        if self.log_config is not None:
            cmd += ["--log-config", str(Path(self.log_config).resolve())]
        with open(self.log_dir / "console.log", "ab") as out:
            # own session: the frontend and its workers share our process group
            launcher = subprocess.Popen(
                cmd, cwd=self.run_dir, env=env, stdout=out, stderr=out, start_new_session=True
            )
        (self.run_dir / "pgid").write_text(str(launcher.pid))
        launcher.wait(timeout=60)  # the launcher writes the pid file and returns
        deadline = time.monotonic() + 30
        while (pid := self.pid()) is None:
            if time.monotonic() > deadline:
                raise ServeError(f"TorchServe did not start:\n{self.log_tail()}")
            time.sleep(0.1)
        return pid

    def model_status(self) -> dict[str, list[str]]:
        """{model: [worker status, ...]} of every expected model (missing: [])."""
        return {
            name: [w.get("status", "?") for w in workers(self.management_url, name, timeout=5)]
            for name in self.expected_models()
        }

    def wait_ready(self, timeout: float = 600.0) -> float:
        """Block until every worker of every expected model is READY; seconds waited."""
        start = time.monotonic()
        status: dict = {}
        while True:
            if self.pid() is None:
                raise ServeError(f"TorchServe exited while loading models:\n{self.log_tail()}")
            if self.load_failed():
                raise ServeError(f"a worker failed to load its model:\n{self.log_tail()}")
            try:
                status = self.model_status()
                if all(s and all(w == "READY" for w in s) for s in status.values()):
                    return time.monotonic() - start
            except (OSError, ValueError, IndexError):
                pass  # management API not up yet
            if time.monotonic() - start > timeout:
                raise ServeError(f"workers not READY after {timeout:.0f}s: {status}")
            time.sleep(0.5)

    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM the frontend, wait, then clear any process left in our group."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self._kill_group()
        self.pid_file.unlink(missing_ok=True)
        return pid is not None

    def _kill_group(self) -> None:
        """Kill what is left of the process group we started (TorchServe processes only)."""
        try:
            pgid = int((self.run_dir / "pgid").read_text())
        except (OSError, ValueError):
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            members = _torchserve_group(pgid)
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if not members:
                break
            time.sleep(1.0)
        (self.run_dir / "pgid").unlink(missing_ok=True)

    def load_failed(self) -> bool:
        """A load failure logged since this start() (the logs append across runs)."""
        for name in SCANNED_LOGS:
            path = self.log_dir / name
            if not path.exists():
                continue
            with open(path, "rb") as f:
                f.seek(self._log_offsets.get(name, 0))
                text = f.read().decode(errors="replace")
            if any(marker in text for marker in LOAD_FAILURES):
                return True
        return False

    def log_tail(self, lines: int = 40) -> str:
        chunks = []
        for name in ("ts_log.log", "model_log.log", "console.log"):
            path = self.log_dir / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {path} ---\n" + "\n".join(tail))
        return "\n".join(chunks) or f"(no logs in {self.log_dir})"
