"""The handlers' custom metrics: their declaration and an in-memory recorder.

`SPECS` is the one declaration; `deploy/metrics.yaml` must declare the same
names, types and dimensions under `model_metrics` (a test compares them), since
TorchServe drops backend metrics it does not know. Every metric carries the
dimensions `ModelName` and `Level` first (TorchServe's convention; the frontend
appends `Hostname`), then its own. Values are emitted in exactly that order
because TorchServe matches dimension values by position.

The engine records a batch's observations into a `Recorder`; the TorchServe
adapter writes them as backend metric lines on the worker's stdout after the
batch (`handlers.ts_adapter.metric_lines`). Nothing here imports `ts`.

`STAGES` are the values of the `Stage` label: the engine's three steps over a
batch (parse the requests, run the model, respond to each request).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

BASE_DIMS = ("ModelName", "Level")


@dataclass(frozen=True)
class MetricSpec:
    kind: str  # counter | gauge | histogram (TorchServe's MetricTypes values)
    unit: str  # letters only: TorchServe's log parser allows [\w\s]
    dims: tuple[str, ...]  # own dimensions, after BASE_DIMS
    help: str


SPECS: dict[str, MetricSpec] = {
    "latentserve_items_total": MetricSpec(
        "counter", "count", ("Operation",), "items answered with 200 (images or latents)"
    ),
    "latentserve_rejected_total": MetricSpec(
        "counter", "count", ("Operation", "Reason"), "requests answered with an error, by code"
    ),
    "latentserve_batch_requests": MetricSpec(
        "histogram", "count", ("Operation",), "requests per TorchServe batch (handler call)"
    ),
    "latentserve_model_batch_items": MetricSpec(
        "histogram", "count", ("Operation",), "items per model call (batch size after flattening)"
    ),
    "latentserve_stage_seconds": MetricSpec(
        "histogram",
        "s",
        ("Operation", "Stage"),
        "seconds per batch in each stage: parse, run, respond",
    ),
    "latentserve_encode_z_mean_norm_total": MetricSpec(
        "counter", "count", (), "sum over encoded items of ||z_mean||_2 (divide by items)"
    ),
    "latentserve_encode_kl_nats_total": MetricSpec(
        "counter", "count", (), "VAE: sum over encoded items of KL(q(z|x) || N(0, I)) in nats"
    ),
    "latentserve_encode_batch_z_mean_norm": MetricSpec(
        "gauge", "count", (), "mean ||z_mean||_2 of the last encode batch"
    ),
    "latentserve_encode_batch_kl_nats": MetricSpec(
        "gauge", "count", (), "VAE: mean KL to the prior of the last encode batch, nats"
    ),
    # score: the primary score's p-values are uniform on in-distribution data, so a
    # shift shows as mass moving to the low buckets and as a flagged rate above 1 %
    "latentserve_score_p_value": MetricSpec(
        "histogram", "count", (), "per scored item: the primary score's p-value"
    ),
    "latentserve_score_flagged_total": MetricSpec(
        "counter", "count", (), "scored items whose primary p-value is below 0.01"
    ),
}
STAGES = ("parse", "run", "respond")


@dataclass(frozen=True)
class Observation:
    name: str
    value: float
    labels: tuple[str, ...]  # values of SPECS[name].dims, in order


@dataclass
class Recorder:
    observations: list[Observation] = field(default_factory=list)

    def add(self, name: str, value: float, **labels: str) -> None:
        spec = SPECS[name]
        if set(labels) != set(spec.dims):
            raise ValueError(f"{name} takes dimensions {spec.dims}, got {sorted(labels)}")
        if not math.isfinite(value) or (spec.kind == "counter" and value < 0):
            raise ValueError(f"{name}: invalid value {value!r}")
        self.observations.append(
            Observation(name, float(value), tuple(labels[d] for d in spec.dims))
        )

    @contextmanager
    def stage(self, operation: str, stage: str) -> Iterator[None]:
        """Record the wall time of the block as `latentserve_stage_seconds`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            self.add("latentserve_stage_seconds", seconds, Operation=operation, Stage=stage)
