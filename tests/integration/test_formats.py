"""Both model formats through a real TorchServe: the same answers, and a quiet default path.

One server of its own serves the tiny VAE twice: `tiny-vae` as TorchScript (the
default) and `tiny-vae-pt2` as AOTInductor packages (`WorkerConfig.formats`, the
archive's handler option `model_format: aoti`), one worker per archive. Every
operation on both wires must give the same answer within float32 tolerance;
the TorchScript workers' logs must carry no DeprecationWarning or FutureWarning.
"""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from serving.archive import OPERATIONS
from serving.workers import WorkerConfig
from tests.support.compare import assert_close_tree
from tests.support.live import LiveServer, start_live_server
from tests.support.v2 import binary_input, json_body, json_input, post_v2, read_v2, v2_body

TS, PT2 = "tiny-vae", "tiny-vae-pt2"
WARNINGS = ("DeprecationWarning", "FutureWarning")


@pytest.fixture(scope="module")
def both(vae_dir, vae_pt2_dir, tmp_path_factory) -> LiveServer:
    worker = WorkerConfig(formats={PT2: "aoti"}).with_workers(1)
    with pytest.MonkeyPatch.context() as env:  # the workers inherit it (see the log test)
        env.setenv("PYTHONWARNINGS", "default")
        server = start_live_server(
            tmp_path_factory.mktemp("formats"), [vae_dir, vae_pt2_dir], worker=worker
        )
    yield server
    server.stop()


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def _png(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


JSON_CALLS = {
    "encode": {
        "instances": [{"image_b64": _png(i)} for i in _images(3)],
        "sample": True,
        "seed": 3,
    },
    "decode": {"instances": [{"z": [0.5, -1.0, 0.0, 2.0]}, {"z": [0.0] * 4}], "format": "array"},
    "sample": {"n": 3, "seed": 7, "temperature": 0.8, "format": "array"},
    "score": {"instances": [{"image_b64": _png(i)} for i in _images(2, seed=1)]},
}


@pytest.mark.parametrize("op", OPERATIONS)
def test_json_api_answers_alike(both, op):
    answers = []
    for model in (TS, PT2):
        resp = both.post(f"{model}-{op}", json=JSON_CALLS[op])
        assert resp.status_code == 200, resp.text
        answers.append(resp.json())
    assert_close_tree(*answers)


def _v2_calls() -> dict:
    images, z = _images(4, seed=2), np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    binary = {"binary_data_output": True}
    return {
        "encode": v2_body(
            {"inputs": [binary_input("image", images)], "parameters": binary}, images.tobytes()
        ),
        "decode": json_body(json_input("z", z), parameters={"image_datatype": "FP32"}),
        "sample": json_body(parameters={"n": 3, "seed": 5, **binary}),
        "score": v2_body(
            {"inputs": [binary_input("image", images)], "parameters": binary}, images.tobytes()
        ),
    }


@pytest.mark.parametrize("op", OPERATIONS)
def test_v2_answers_alike(both, op):
    body, headers = _v2_calls()[op]
    (meta_ts, ts), (meta_pt2, pt2) = (
        read_v2(post_v2(both, f"{model}-{op}", body, headers)) for model in (TS, PT2)
    )
    assert ts.keys() == pt2.keys() and ts
    assert_close_tree(meta_ts.get("parameters"), meta_pt2.get("parameters"))
    for name, want in ts.items():
        got = pt2[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        if want.dtype == np.uint8:  # pixels rounded from floats: at most one step apart
            assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, name
        elif want.dtype == np.bool_:
            assert (got == want).all(), name
        else:
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_workers_log_their_format_and_torchscript_no_deprecation(both):
    """The default path (TorchScript) leaves no deprecation warnings in the worker log.

    The workers run with PYTHONWARNINGS=default (the fixture), so a warning that
    Python would hide (a DeprecationWarning raised inside torch) is printed too.
    """
    for op in OPERATIONS:  # every worker has answered at least once
        assert both.post(f"{TS}-{op}", json=JSON_CALLS[op]).status_code == 200
    log = (both.process.log_dir / "model_log.log").read_text().splitlines()
    started = [line for line in log if "latentserve " in line and " of tiny-vae (" in line]
    assert sum(", torchscript)" in line for line in started) == len(OPERATIONS), started
    assert sum(", aoti)" in line for line in started) == len(OPERATIONS), started
    ts_workers = re.compile(rf"W-\d+-{TS}-({'|'.join(OPERATIONS)})_")
    ours = [line for line in log if ts_workers.search(line)]
    # warnings do reach this log: TorchServe 0.12's own unclosed files (ResourceWarning)
    assert any("Warning: " in line for line in ours), "no warning seen: is stderr logged?"
    noisy = [line for line in ours if any(w in line for w in WARNINGS)]
    assert not noisy, "\n".join(noisy)
