"""Helpers of the handler unit tests: tiny exported models, engines, requests.

The models are randomly initialised but exported through the real
`training.export.export_model`, so they follow the export contract exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from handlers.engine import Engine
from handlers.errors import RequestError
from handlers.options import HandlerOptions
from handlers.wire.request import RawRequest
from tests.support.exports import calibrate_fixture
from training.export import export_model
from training.models import ModelConfig, build_model

LATENT = 4


def export_tiny(out: Path, kind: str, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = ModelConfig(kind=kind, latent_dim=LATENT, hidden=32, channels=(8, 8, 8))
    prior = None
    if kind == "ae":
        rng = np.random.default_rng(seed)
        a = rng.normal(size=(LATENT, LATENT))
        prior = {"type": "gaussian", "mean": [1.0, -2.0, 0.5, 3.0], "cov": (a @ a.T).tolist()}
    export_model(
        build_model(cfg),
        out,
        x_check=torch.rand(4, 1, 28, 28),
        dataset={"name": "test"},
        code_prior=prior,
    )
    calibrate_fixture(out, seed)
    return out


def make_engine(model_dir: Path, op: str, chunk_size: int = 256) -> Engine:
    return Engine.from_dir(model_dir, op, HandlerOptions(chunk_size=chunk_size))


def json_request(payload, content_type: str | None = "application/json") -> RawRequest:
    return RawRequest(json.dumps(payload).encode(), content_type)


def pixels(k: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"pixels": rng.random((28, 28)).round(4).tolist()} for _ in range(k)]


def rejects(code: str, field: str, fn, *args) -> RequestError:
    """Call fn(*args) and check that it raises a 400 RequestError of this code and field."""
    with pytest.raises(RequestError) as info:
        fn(*args)
    err = info.value
    assert (err.code, err.field) == (code, field), err.body()
    assert err.status == 400
    return err


def v2_request(header: dict, binary: bytes = b"", **headers: str) -> RawRequest:
    """A v2 request as the adapter builds it from the KServe route: the JSON header,
    then `binary` (with `Inference-Header-Content-Length` when there is any)."""
    head = json.dumps(header).encode()
    http = {"explain": "False", **{k.replace("_", "-"): v for k, v in headers.items()}}
    if binary:
        http.setdefault("inference-header-content-length", str(len(head)))
    content_type = "application/octet-stream" if binary else "application/json"
    return RawRequest(head + binary, content_type, "v2", http)
