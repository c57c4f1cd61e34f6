"""`make serve` / `make stop`: run TorchServe locally on deploy/config.properties.

    python -m serving.cli start    # start, wait for every worker READY, print curl examples
    python -m serving.cli start --models fashion-vae NAME   # exactly these models' archives
    python -m serving.cli stop     # stop the server `start` started
    python -m serving.cli status   # is it running, and the workers of each model

The run directory is logs/torchserve/ (git-ignored): rendered config, TorchServe
logs, its pid file. `start` expects the archives to be built (`make archive`,
which `make serve` runs first); without --models it serves every archive in
model_store/, with it exactly the four archives of each model named (`make serve
MODELS="..."`, default the shipped models).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

from paths import LOGS, SHIPPED_MODELS, STORE
from serving.archive import archive_names, model_dirs
from serving.process import ServeError, TorchServeProcess
from serving.properties import BASE_CONFIG, Ports, read_properties

RUN_DIR = LOGS / "torchserve"

EXAMPLES = """\
# health
curl -s {inf}/ping
# two samples (seeded), as base64 PNG
curl -s -X POST {inf}/predictions/{model}-sample -H 'Content-Type: application/json' \\
  -d '{{"n": 2, "seed": 0}}'
# decode a latent vector of {dim} zeros, as a float array
curl -s -X POST {inf}/predictions/{model}-decode -H 'Content-Type: application/json' \\
  -d '{{"instances": [{{"z": {zeros}}}], "format": "array"}}'
# save a sample as PNG, then encode it (raw PNG body)
curl -s -X POST {inf}/predictions/{model}-sample -H 'Content-Type: application/json' \\
  -d '{{"n": 1, "seed": 1}}' | python3 -c 'import base64, json, sys
p = json.load(sys.stdin)["predictions"][0]
open("sample.png", "wb").write(base64.b64decode(p["image_b64"]))'
curl -s -X POST {inf}/predictions/{model}-encode -H 'Content-Type: image/png' \\
  --data-binary @sample.png
# how unusual it is for the model: scores, p-values, is_outlier
curl -s -X POST {inf}/predictions/{model}-score -H 'Content-Type: image/png' \\
  --data-binary @sample.png
# workers (management) and metrics
curl -s {mgmt}/models
curl -s {metrics}/metrics | grep latentserve_items_total
"""


def local_server(
    run_dir: Path = RUN_DIR, store: Path = STORE, models: list[str] | None = None
) -> TorchServeProcess:
    """`make serve`'s TorchServe: every archive in `store`, or those of `models` only."""
    ports = Ports.of(read_properties(BASE_CONFIG))
    archives = None if models is None else archive_names(list(dict.fromkeys(models)))
    return TorchServeProcess(run_dir=run_dir, model_store=store, models=archives, ports=ports)


def check_models(store: Path, models: list[str]) -> None:
    """Each requested model has `<store>/<name>/` and its four archives, or SystemExit
    saying which is missing and what builds it."""
    model_dirs(store, models)  # no <store>/<name>/manifest.json: SystemExit naming it
    missing = [
        m for m in models if not all((store / f"{a}.mar").exists() for a in archive_names([m]))
    ]
    if missing:
        raise SystemExit(
            f"no archives of {', '.join(missing)} in {store}/: run "
            f'make archive MODELS="{" ".join(models)}" (make serve builds them first)'
        )


def _example_model(server: TorchServeProcess) -> tuple[str, int]:
    """A served model for the examples, and its latent_dim (from its decode archive)."""
    names = {m.rsplit("-", 1)[0] for m in server.expected_models()}
    model = next((m for m in SHIPPED_MODELS if m in names), min(names))
    with zipfile.ZipFile(server.model_store / f"{model}-decode.mar") as z:
        return model, json.loads(z.read("manifest.json"))["latent_dim"]


def print_examples(server: TorchServeProcess) -> None:
    model, dim = _example_model(server)
    print(
        EXAMPLES.format(
            inf=server.inference_url,
            mgmt=server.management_url,
            metrics=server.metrics_url,
            model=model,
            dim=dim,
            zeros="[" + ", ".join(["0"] * dim) + "]",
        )
    )


def start(server: TorchServeProcess, timeout: float) -> int:
    pid = server.pid()
    if pid is not None:
        print(
            f"TorchServe is already running (pid {pid}) on {server.inference_url}, "
            f"started from {server.run_dir}.\n"
            "Nothing to do. To restart it with fresh archives: make stop && make serve"
        )
        newer = [
            p.name
            for p in server.model_store.glob("*.mar")
            if p.stat().st_mtime > server.pid_file.stat().st_mtime
        ]
        if newer:
            print(f"note: archives rebuilt since it started ({', '.join(sorted(newer))})")
        served = server.served_models()
        if server.models is not None and served is not None and set(served) != set(server.models):
            running = sorted({a.rsplit("-", 1)[0] for a in served})
            print(
                f"note: it serves {' '.join(running)}, not the models asked for; "
                f'make stop && make serve MODELS="..." to change them'
            )
        return 0
    models = server.expected_models()
    if not models:
        print(f"no archives in {server.model_store}/: run `make models` then `make archive`")
        return 1
    print(f"starting TorchServe with {len(models)} models ({server.config_path}) ...", flush=True)
    t0 = time.monotonic()
    try:
        server.start()
        server.wait_ready(timeout)
    except (ServeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        server.stop()
        return 1
    took = time.monotonic() - t0
    print(f"all workers READY after {took:.1f}s: {', '.join(models)}")
    print(f"logs: {server.log_dir}/   stop with: make stop\n")
    print_examples(server)
    return 0


def stop(server: TorchServeProcess) -> int:
    print("TorchServe stopped." if server.stop() else "TorchServe is not running.")
    return 0


def status(server: TorchServeProcess) -> int:
    pid = server.pid()
    if pid is None:
        print("TorchServe is not running.")
        return 1
    print(f"TorchServe running (pid {pid}) on {server.inference_url}")
    started_with = replace(server, models=server.served_models() or server.models)
    for model, workers in started_with.model_status().items():
        print(f"  {model:28s} {' '.join(workers) or 'no workers'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("command", choices=["start", "stop", "status"])
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for READY")
    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="start: serve exactly these models (their four archives); default: every archive",
    )
    a = p.parse_args(argv)
    if a.models is not None and a.command != "start":
        p.error("--models is for start")
    server = local_server(models=a.models)
    if a.command == "start":
        if a.models is not None:
            check_models(server.model_store, a.models)
        return start(server, a.timeout)
    return stop(server) if a.command == "stop" else status(server)


if __name__ == "__main__":
    sys.exit(main())
