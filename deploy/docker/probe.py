#!/usr/bin/env python3
"""Health probes for latentserve's TorchServe 0.12, run inside the container.

TorchServe listens on loopback only, without its own token authorization (the
pod's gateway checks the clients' keys: deploy/gateway/). This script is what
the Kubernetes exec probes and the Docker HEALTHCHECK run; it asks the server
on loopback:

  ready  every expected model has at least one READY worker
         (management API, GET /models/<name>): readiness and startup probes
  live   the management API answers GET /models with 200: liveness probe
         (a worker restart must not restart the pod; TorchServe restarts workers)
  ping   GET /ping on the inference port answers 200 "Healthy": Docker HEALTHCHECK

Expected models come from TS_MODELS ("all" = every .mar in TS_MODEL_STORE,
named after the file) just as the entrypoint loads them, so a model that failed
to register keeps the pod unready instead of going unnoticed. TorchServe's own
/ping says "Healthy" even for a model scaled to zero workers, which is why
readiness asks model by model.

Exit status 0 when healthy, 1 otherwise, with a one-line reason on stdout (the
kubelet shows it in the pod's events). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

DEFAULT_STORE = "/home/model-server/model-store"


class ProbeError(Exception):
    """The server is not healthy; the message says why."""


def expected_models(models: str, store: str) -> list[str]:
    """Model names the entrypoint asked TorchServe to load (see entrypoint.sh)."""
    names: list[str] = []
    for item in models.split():
        if item.lower() == "all":
            archives = sorted(Path(store).glob("*.mar"))
            if not archives:
                raise ProbeError(f"TS_MODELS=all but no .mar archives in {store}")
            names += [p.stem for p in archives]
        elif "=" in item:
            names.append(item.split("=", 1)[0])
        else:
            names.append(Path(item).stem)
    return sorted(set(names))


class Client:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    def get(self, url: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                return resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ProbeError(f"GET {url}: {reason}") from None


def check_ready(client: Client, management_url: str, models: list[str]) -> str:
    if not models:
        status, body = client.get(f"{management_url}/models?limit=1000")
        if status != 200:
            raise ProbeError(f"GET /models answered {status}: {body.strip()[:200]}")
        models = [m["modelName"] for m in json.loads(body).get("models", [])]
        if not models:
            raise ProbeError("no model is registered")
    not_ready = []
    for name in models:
        url = f"{management_url}/models/{urllib.parse.quote(name, safe='')}"
        status, body = client.get(url)
        if status == 404:
            not_ready.append(f"{name} (not registered)")
            continue
        if status != 200:
            raise ProbeError(f"GET /models/{name} answered {status}: {body.strip()[:200]}")
        versions = json.loads(body)
        workers = [w for v in versions for w in v.get("workers", [])]
        ready = sum(1 for w in workers if w.get("status") == "READY")
        if ready == 0:
            states = ",".join(sorted({w.get("status", "?") for w in workers})) or "no workers"
            not_ready.append(f"{name} ({states})")
    if not_ready:
        raise ProbeError(
            f"{len(not_ready)}/{len(models)} models without a READY worker: " + "; ".join(not_ready)
        )
    return f"ready: {len(models)} models each have a READY worker"


def check_live(client: Client, management_url: str) -> str:
    status, body = client.get(f"{management_url}/models")
    if status != 200:
        raise ProbeError(f"GET /models answered {status}: {body.strip()[:200]}")
    return "live: management API answers"


def check_ping(client: Client, inference_url: str) -> str:
    status, body = client.get(f"{inference_url}/ping")
    if status != 200:
        raise ProbeError(f"GET /ping answered {status}: {body.strip()[:200]}")
    return f"ping: {json.loads(body).get('status', body.strip())}"


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["ready", "live", "ping"])
    p.add_argument("--management-url", default=env("TS_MANAGEMENT_URL") or "http://127.0.0.1:8081")
    p.add_argument("--inference-url", default=env("TS_INFERENCE_URL") or "http://127.0.0.1:8080")
    p.add_argument("--models", default=env("TS_MODELS") or "all", help='"all" or names/archives')
    p.add_argument("--model-store", default=env("TS_MODEL_STORE") or DEFAULT_STORE)
    p.add_argument("--timeout", type=float, default=float(env("TS_PROBE_TIMEOUT") or 3.0))
    args = p.parse_args(argv)

    client = Client(args.timeout)
    management_url = args.management_url.rstrip("/")
    try:
        if args.mode == "ready":
            models = expected_models(args.models, args.model_store)
            message = check_ready(client, management_url, models)
        elif args.mode == "live":
            message = check_live(client, management_url)
        else:
            message = check_ping(client, args.inference_url.rstrip("/"))
    except ProbeError as e:
        print(f"{args.mode}: FAIL: {e}")
        return 1
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
