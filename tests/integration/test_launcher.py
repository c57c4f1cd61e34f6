"""serving/: config rendering, `make serve` on a running server, status, stop."""

from __future__ import annotations

import json
import time

import pytest

from serving import cli
from serving.archive import build_archives
from serving.process import ServeError, TorchServeProcess
from serving.properties import BASE_CONFIG, Ports, read_properties
from tests.support.curl import curl_commands, run_curl_block
from tests.support.exports import export_fixture

JSON_HEADERS = {"Content-Type": "application/json"}


def test_rendered_config_has_absolute_paths_ports_and_models(torchserve):
    p = torchserve.process
    props = read_properties(p.config_path)
    base = read_properties(BASE_CONFIG)
    assert props["inference_address"] == p.inference_url
    assert props["management_address"] == p.management_url
    assert props["metrics_address"] == p.metrics_url
    assert props["grpc_inference_port"] == str(p.ports.grpc_inference)
    assert props["model_store"] == str(p.model_store)
    assert props["metrics_config"].startswith("/") and props["metrics_config"].endswith(
        base["metrics_config"]
    )
    assert props["load_models"].split(",") == [f"{m}={m}.mar" for m in p.expected_models()]
    for key in ("disable_token_authorization", "metrics_mode", "max_request_size"):
        assert props[key] == base[key]
    assert 8080 not in vars(p.ports).values()


def test_second_start_says_it_is_running(torchserve, capsys):
    assert cli.start(torchserve.process, timeout=5) == 0
    out = capsys.readouterr().out
    assert "already running" in out and f"pid {torchserve.process.pid()}" in out
    assert cli.status(torchserve.process) == 0
    out = capsys.readouterr().out
    assert all(m in out for m in torchserve.process.expected_models())


def test_stop_without_a_server(tmp_path, capsys):
    idle = TorchServeProcess(run_dir=tmp_path, model_store=tmp_path, ports=Ports.free())
    assert idle.pid() is None
    assert cli.stop(idle) == 0
    assert "not running" in capsys.readouterr().out
    assert cli.status(idle) == 1


def test_local_server_uses_the_config_ports():
    local = cli.local_server()
    assert local.ports == Ports(8080, 8081, 8082, 7070, 7071)
    assert local.run_dir.name == "torchserve" and local.run_dir.parent.name == "logs"


def test_printed_curl_examples_work(torchserve, tmp_path, capsys):
    """What `make serve` prints after READY runs as printed (against this server)."""
    cli.print_examples(torchserve.process)
    script = capsys.readouterr().out
    run = run_curl_block(script, torchserve.process.ports, tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.statuses == [200] * curl_commands(script), (run.statuses, script)


def test_a_model_that_cannot_load_fails_fast_with_its_log(tmp_path):
    """A broken export makes wait_ready fail with the worker's traceback, not hang.

    (A manifest the handlers cannot read stops `make archive` already, naming the model;
    a model file that is not the one the manifest lists is found only when it loads.)"""
    broken = export_fixture(tmp_path / "models" / "broken", "vae", latent_dim=2)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["prior"] = {"type": "laplace"}
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match="broken: .*unknown prior type 'laplace'"):
        build_archives(broken.parent, tmp_path / "store", log=lambda *_: None)
    manifest["prior"] = {"type": "standard_normal"}
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with (broken / "decoder.pt").open("ab") as f:  # no longer the file the manifest lists
        f.write(b"tampered")
    build_archives(broken.parent, tmp_path / "store", log=lambda *_: None)
    server = TorchServeProcess(
        run_dir=tmp_path / "run",
        model_store=tmp_path / "store",
        models=["broken-sample"],
        ports=Ports.free(),
    )
    server.start()
    try:
        started = time.monotonic()
        with pytest.raises(ServeError, match="failed to load") as info:
            server.wait_ready(timeout=120)
        assert time.monotonic() - started < 60
        assert "decoder.pt: sha256" in str(info.value), info.value
    finally:
        server.stop()
    assert server.pid() is None


def test_logs_are_quiet_on_the_hot_path_but_keep_worker_lifecycle(torchserve, vae):
    """deploy/log4j2.xml: no per-request, per-batch or per-metric lines in the logs
    (TorchServe's built-in config wrote ~2.3 KB per request), one access line per
    request, and worker starts still logged."""
    body = json.dumps({"n": 1, "seed": 1}).encode()
    logs = torchserve.process.log_dir
    before = {p.name: p.stat().st_size for p in logs.glob("*.log")}
    for _ in range(20):
        r = torchserve.post(f"{vae.name}-sample", data=body, headers=JSON_HEADERS)
        assert r.status_code == 200
    time.sleep(1.0)  # the frontend writes its logs asynchronously to the answers
    grown = {}
    for p in logs.glob("*.log"):
        with open(p, "rb") as f:
            f.seek(before.get(p.name, 0))
            grown[p.name] = f.read().decode(errors="replace")
    noisy = (
        "Sending response for jobId", "Waiting time ns", "Flushing req.cmd",
        "Backend response time", "Looping backend response", "result=",
        "Backend received inference at", "[METRICS]",
    )  # fmt: skip
    for name, text in grown.items():
        for marker in noisy:
            assert marker not in text, f"{name} logs {marker!r} per request or batch"
    assert grown.get("access_log.log", "").count(f"/predictions/{vae.name}-sample") == 20
    assert sum(len(t) for t in grown.values()) < 20 * 200, "more than an access line each"
    ts_log = (logs / "ts_log.log").read_text(errors="replace")
    assert "Connecting to" in ts_log  # worker starts (and restarts) stay visible
    assert "[DEBUG]" not in ts_log and not (logs / "console.log").read_text().count("ACCESS")
