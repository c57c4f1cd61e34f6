#!/usr/bin/env python3
"""Health probes for latentserve's TorchServe 0.12 with token authorization on.

With token authorization on, every path of the inference port, /ping included,
demands the inference key, so a plain HTTP probe cannot work. This script runs
inside the container (Kubernetes exec probe, Docker HEALTHCHECK), reads the
keys from TorchServe's key_file.json and asks the server on loopback:

  ready  every expected model has at least one READY worker
         (management API, GET /models/<name>): readiness and startup probes
  live   the management API answers GET /models with 200: liveness probe
         (a worker restart must not restart the pod; TorchServe restarts workers)
  ping   GET /ping on the inference port answers 200 "Healthy": Docker HEALTHCHECK

Expected models come from TS_MODELS ("all" = every .mar in TS_MODEL_STORE,
named after the file) just as the entrypoint loads them, so a model that failed
to register keeps the pod unready instead of going unnoticed.

If a call is refused because the key in the file has expired
(token_expiration_min), the probe rotates that key with the API key
(POST /token?type=...) and retries once: an expired key must not make a healthy
pod fail its probes. Rotating an expired key locks out nobody, since the old key
was already refused.

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
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_WORKDIR = "/home/model-server/work"
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


def parse_expiry(text: str) -> datetime:
    """TorchServe writes Java Instants ('...T05:06:39.488023725Z'): trim to microseconds."""
    head, _, frac = text.rstrip("Z").partition(".")
    frac = (frac + "000000")[:6]
    return datetime.fromisoformat(f"{head}.{frac}+00:00")


class Client:
    def __init__(self, key_file: Path, timeout: float) -> None:
        self.key_file = key_file
        self.timeout = timeout

    def keys(self) -> dict:
        try:
            return json.loads(self.key_file.read_text())
        except FileNotFoundError:
            raise ProbeError(f"no key file {self.key_file} (TorchServe not started yet?)") from None
        except (OSError, ValueError) as e:
            raise ProbeError(f"cannot read key file {self.key_file}: {e}") from None

    def call(self, method: str, url: str, key: str) -> tuple[int, str]:
        req = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ProbeError(f"{method} {url}: {reason}") from None

    def get(self, url: str, kind: str, management_url: str) -> tuple[int, str]:
        """GET with the `kind` key (inference|management); rotate it once if it expired."""
        status, body = self.call("GET", url, self.keys()[kind]["key"])
        if status == 400 and "InvalidKeyException" in body and self._expired(kind):
            rotate = f"{management_url}/token?type={kind}"
            r_status, r_body = self.call("POST", rotate, self.keys()["API"]["key"])
            if r_status != 200:
                raise ProbeError(f"{kind} key expired and rotation failed: {r_status} {r_body}")
            status, body = self.call("GET", url, self.keys()[kind]["key"])
        return status, body

    def _expired(self, kind: str) -> bool:
        try:
            expiry = parse_expiry(self.keys()[kind]["expiration time"])
        except (KeyError, ValueError):
            return False
        return expiry <= datetime.now(UTC)


def check_ready(client: Client, management_url: str, models: list[str]) -> str:
    if not models:
        status, body = client.get(
            f"{management_url}/models?limit=1000", "management", management_url
        )
        if status != 200:
            raise ProbeError(f"GET /models answered {status}: {body.strip()[:200]}")
        models = [m["modelName"] for m in json.loads(body).get("models", [])]
        if not models:
            raise ProbeError("no model is registered")
    not_ready = []
    for name in models:
        url = f"{management_url}/models/{urllib.parse.quote(name, safe='')}"
        status, body = client.get(url, "management", management_url)
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
    status, body = client.get(f"{management_url}/models", "management", management_url)
    if status != 200:
        raise ProbeError(f"GET /models answered {status}: {body.strip()[:200]}")
    return "live: management API answers"


def check_ping(client: Client, inference_url: str, management_url: str) -> str:
    status, body = client.get(f"{inference_url}/ping", "inference", management_url)
    if status != 200:
        raise ProbeError(f"GET /ping answered {status}: {body.strip()[:200]}")
    return f"ping: {json.loads(body).get('status', body.strip())}"


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["ready", "live", "ping"])
    p.add_argument(
        "--key-file",
        default=env("TS_KEY_FILE")
        or str(Path(env("TS_WORKDIR") or DEFAULT_WORKDIR, "key_file.json")),
    )
    p.add_argument("--management-url", default=env("TS_MANAGEMENT_URL") or "http://127.0.0.1:8081")
    p.add_argument("--inference-url", default=env("TS_INFERENCE_URL") or "http://127.0.0.1:8080")
    p.add_argument("--models", default=env("TS_MODELS") or "all", help='"all" or names/archives')
    p.add_argument("--model-store", default=env("TS_MODEL_STORE") or DEFAULT_STORE)
    p.add_argument("--timeout", type=float, default=float(env("TS_PROBE_TIMEOUT") or 3.0))
    args = p.parse_args(argv)

    client = Client(Path(args.key_file), args.timeout)
    management_url = args.management_url.rstrip("/")
    try:
        if args.mode == "ready":
            models = expected_models(args.models, args.model_store)
            message = check_ready(client, management_url, models)
        elif args.mode == "live":
            message = check_live(client, management_url)
        else:
            message = check_ping(client, args.inference_url.rstrip("/"), management_url)
    except ProbeError as e:
        print(f"{args.mode}: FAIL: {e}")
        return 1
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
