"""The handlers' custom metrics: their declaration and an in-memory recorder.

`SPECS` is the one declaration; `deploy/metrics.yaml` must declare the same
names, types and dimensions under `model_metrics` (a test compares them), since
TorchServe drops backend metrics it does not know. Every metric carries the
dimensions `ModelName` and `Level` first (TorchServe's convention; the frontend
appends `Hostname`), then its own. Values are emitted in exactly that order
because TorchServe matches dimension values by position.

The logic records into a `Recorder`; the TorchServe adapter flushes it into
`context.metrics` after each batch. Nothing here imports `ts`.
"""

from __future__ import annotations

import math
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
        "seconds per batch in decode_input, model and encode_output",
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
}
STAGES = ("decode_input", "model", "encode_output")


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

    def total(self, name: str, **labels: str) -> float:
        """Sum of the recorded values matching `labels` (for tests and logs)."""
        spec = SPECS[name]
        return sum(
            o.value
            for o in self.observations
            if o.name == name and all(o.labels[spec.dims.index(k)] == v for k, v in labels.items())
        )
