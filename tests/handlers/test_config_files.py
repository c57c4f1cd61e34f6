"""deploy/metrics.yaml, deploy/config.properties and docs/api/ agree with the code."""

from __future__ import annotations

import json
import re

import yaml

from handlers.limits import LIMITS
from handlers.metrics import BASE_DIMS, SPECS
from paths import ROOT
from serving.process import BASE_CONFIG, read_properties
from serving.schema import schemas

METRICS_YAML = ROOT / "deploy" / "metrics.yaml"


def test_metrics_yaml_declares_exactly_the_handler_metrics():
    declared = {}
    for kind, entries in yaml.safe_load(METRICS_YAML.read_text())["model_metrics"].items():
        for e in entries:
            declared[e["name"]] = (kind, e["unit"], tuple(e["dimensions"]))
    ours = {k: v for k, v in declared.items() if k.startswith("latentserve_")}
    assert ours == {n: (s.kind, s.unit, BASE_DIMS + s.dims) for n, s in SPECS.items()}
    # TorchServe's own backend metrics stay declared
    assert {"HandlerTime", "PredictionTime"} <= set(declared)


def test_metric_names_and_units_fit_the_frontend_log_parser():
    for name, spec in SPECS.items():
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)  # also a valid Prometheus name
        assert re.fullmatch(r"\w+", spec.unit)


def test_local_config():
    props = read_properties(BASE_CONFIG)
    assert props["inference_address"] == "http://127.0.0.1:8080"
    assert props["management_address"] == "http://127.0.0.1:8081"
    assert props["metrics_address"] == "http://127.0.0.1:8082"
    assert props["metrics_mode"] == "prometheus"
    assert (ROOT / props["metrics_config"]).resolve() == METRICS_YAML
    assert props["disable_token_authorization"] == "true"
    assert props["load_models"] == "all"
    # the handler's 400 for an oversize body must come before TorchServe's 413
    assert int(props["max_request_size"]) > LIMITS.max_body_bytes


def test_committed_json_schemas_are_current():
    """docs/api/ is `make schema` output; regenerate it after changing
    handlers/wire/json_schemas.py."""
    docs = ROOT / "docs" / "api"
    current = schemas()
    assert sorted(p.name for p in docs.glob("*.json")) == sorted(current)
    for name, schema in current.items():
        assert json.loads((docs / name).read_text()) == schema, f"run `make schema` ({name})"
