"""What a running TorchServe reports: its workers and its Prometheus metrics.

The launcher (`serving/process.py`), the benchmark, the soak and chaos tools and
the tests read these through here. Plain `urllib` (no `requests`: the serving
side needs nothing beyond TorchServe's own dependencies); the metrics text is
parsed with prometheus_client's parser, as Prometheus would read it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

# {(sample name, sorted (label, value) pairs): value}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body) of a GET; an HTTP error status is returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def workers(management_url: str, archive: str, timeout: float = 10.0) -> list[dict]:
    """The archive's workers as `GET /models/<archive>` describes them (pid, status, ...).

    [] when the archive is not registered (yet); a connection error raises OSError.
    """
    code, text = get(f"{management_url}/models/{archive}", timeout)
    return json.loads(text)[0].get("workers", []) if code == 200 else []


def pids_of(described: list[dict]) -> list[int]:
    """Sorted pids of these workers that have one (a starting worker may not)."""
    return sorted(int(w["pid"]) for w in described if w.get("pid"))


def worker_pids(management_url: str, archive: str) -> list[int]:
    return pids_of(workers(management_url, archive))


def scrape(metrics_url: str, timeout: float = 10.0) -> Samples:
    """Every sample of `GET /metrics`, keyed by name and labels without `Hostname`.

    The Hostname label is the same on every sample of one server; samples that
    differ only there (none in practice) are summed.
    """
    code, text = get(f"{metrics_url}/metrics", timeout)
    if code != 200:
        raise OSError(f"{metrics_url}/metrics answered {code}: {text[:200]}")
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "Hostname"))
            out[(s.name, labels)] = out.get((s.name, labels), 0.0) + s.value
    return out


def metric(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 if none).

    prometheus_client's parser names a counter's sample `<name>_total` even when
    the exposition (TorchServe) calls it `<name>`: both are accepted.
    """
    want, names = set(labels.items()), (name, f"{name}_total")
    return sum(v for (n, lab), v in samples.items() if n in names and want <= set(lab))
