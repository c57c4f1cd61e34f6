"""One loader for both model formats (handlers/model.py): TorchScript and AOTInductor packages.

In-process engines on the tiny VAE (`vae_dir`) and its packaged copy
(`vae_pt2_dir`, tests/conftest.py); the same answers through the live server
are in tests/integration/test_formats.py.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from handlers.device import Placement
from handlers.engine import Engine
from handlers.manifest import ModelInfo, model_files
from handlers.model import load_module
from handlers.options import MODEL_FORMATS, HandlerOptions
from tests.handlers.tiny import json_request, pixels
from tests.support.compare import assert_close_tree

AOTI = HandlerOptions(model_format="aoti")
CPU = Placement("cpu", torch.float32, False)


def _answers(model_dir, options: HandlerOptions) -> dict:
    requests = {
        "encode": {"instances": pixels(3)},
        "decode": {"instances": [{"z": [0.5, -1.0, 0.0, 2.0]}] * 2, "format": "array"},
        "sample": {"n": 3, "seed": 7, "format": "array"},
        "score": {"instances": pixels(2, seed=1)},
    }
    out = {}
    for op, body in requests.items():
        (reply,), _ = Engine.from_dir(model_dir, op, options).handle([json_request(body)])
        assert reply.status == 200, reply.body
        out[op] = json.loads(reply.body)
    return out


def test_both_formats_answer_alike(vae_pt2_dir):
    """One directory with both formats' files: the option alone picks the loader."""
    assert_close_tree(_answers(vae_pt2_dir, HandlerOptions()), _answers(vae_pt2_dir, AOTI))


def test_a_package_keeps_the_module_output_structure(vae_pt2_dir):
    info = ModelInfo.from_dir(vae_pt2_dir)
    encoder = load_module(vae_pt2_dir, info, "encoder.pt2", CPU)
    z_mean, z_log_var = encoder(torch.rand(3, 1, 28, 28))
    assert z_mean.shape == z_log_var.shape == (3, 4)
    assert model_files("score", "aoti") == ("encoder.pt2", "decoder.pt2")


def _edited(src, dest, edit) -> ModelInfo:
    copy = shutil.copytree(src, dest)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_a_package_whose_sha256_differs_is_refused(vae_pt2_dir, tmp_path):
    def wrong(m):
        m["packages"]["files"]["decoder.pt2"] = "0" * 64

    copy = _edited(vae_pt2_dir, tmp_path / "m", wrong)
    with pytest.raises(ValueError, match="decoder.pt2: sha256 .* does not match"):
        Engine.from_dir(copy, "decode", AOTI)


def test_an_unlisted_package_is_refused(vae_dir, vae_pt2_dir, tmp_path):
    copy = _edited(vae_pt2_dir, tmp_path / "m", lambda m: m.pop("packages"))
    with pytest.raises(ValueError, match="lists no such package"):
        Engine.from_dir(copy, "encode", AOTI)
    with pytest.raises(ValueError, match="lists no such package.*--format NAME=aoti"):
        Engine.from_dir(vae_dir, "encode", AOTI)  # a TorchScript-only export


def test_a_package_of_another_torch_is_refused(vae_pt2_dir, tmp_path):
    def old(m):
        m["packages"]["torch_version"] = "2.0.0"

    copy = _edited(vae_pt2_dir, tmp_path / "m", old)
    with pytest.raises(ValueError, match="compiled with torch 2.0.0.*make archive"):
        Engine.from_dir(copy, "encode", AOTI)


def test_a_package_refuses_a_cuda_placement(vae_pt2_dir):
    info = ModelInfo.from_dir(vae_pt2_dir)
    with pytest.raises(ValueError, match="compiled for the CPU.*model_format: torchscript"):
        load_module(vae_pt2_dir, info, "decoder.pt2", Placement("cuda:0", torch.float32, False))


def test_chunks_must_fit_the_packages_batch_dimension(vae_pt2_dir):
    info = ModelInfo.from_dir(vae_pt2_dir)
    most = info.manifest["packages"]["settings"]["max_batch"]
    Engine.from_dir(vae_pt2_dir, "decode", HandlerOptions(model_format="aoti", chunk_size=most))
    with pytest.raises(ValueError, match="chunk_size .* exceeds the packages' largest batch"):
        Engine.from_dir(
            vae_pt2_dir, "decode", HandlerOptions(model_format="aoti", chunk_size=most + 1)
        )


@pytest.mark.parametrize("value", ["onnx", "AOTI", 1])
def test_a_wrong_model_format_is_a_clear_error(value):
    with pytest.raises(ValueError, match="model_format"):
        HandlerOptions.from_config({"handler": {"model_format": value}})
    assert "aoti" in MODEL_FORMATS and HandlerOptions().model_format == "torchscript"


def test_a_long_batch_through_the_package(vae_pt2_dir):
    """More items than one chunk: the engine's chunks (dynamic batch sizes) all run."""
    opts = HandlerOptions(model_format="aoti", chunk_size=5)
    (reply,), _ = Engine.from_dir(vae_pt2_dir, "encode", opts).handle(
        [json_request({"instances": pixels(12)})]
    )
    (ts,), _ = Engine.from_dir(vae_pt2_dir, "encode", HandlerOptions()).handle(
        [json_request({"instances": pixels(12)})]
    )
    got = [p["z_mean"] for p in json.loads(reply.body)["predictions"]]
    want = [p["z_mean"] for p in json.loads(ts.body)["predictions"]]
    np.testing.assert_allclose(got, want, atol=1e-5)
