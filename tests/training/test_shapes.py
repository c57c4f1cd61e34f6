"""Both bodies for any image shape (C, H, W), C in {1, 3}: the conv stages, exact output
shapes, the shipped 1x28x28 architecture unchanged, and an RGB export with parity."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from paths import SHIPPED_MODELS, STORE
from training.export import eager_from_store, export_model
from training.models import ModelConfig, build_model, conv_stages

SHAPES = [(1, 28, 28), (3, 40, 40), (3, 64, 64), (1, 17, 23)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("body", ["conv", "mlp"])
@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_encoder_and_decoder_shapes(shape, body, kind):
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind, body, 6, shape, hidden=32, channels=(8, 16, 16)))
    x = torch.rand(3, *shape)
    out = model.encoder(x)
    codes = out if kind == "vae" else (out,)
    assert [tuple(t.shape) for t in codes] == [(3, 6)] * len(codes)
    logits = model.decoder(codes[0])
    assert logits.shape == (3, *shape)
    (logits.sum() + sum(t.sum() for t in codes)).backward()  # every parameter learns
    assert all(p.grad is not None for p in model.parameters())


def test_conv_stage_rule():
    """Halve until both sides are <= 4; kernel 4 when both sides are even, else 3; the
    decoder's output padding makes up each odd size."""

    def rule(h, w):
        return [(s.in_hw, s.kernel, s.output_padding) for s in conv_stages(h, w)]

    assert rule(28, 28) == [((28, 28), 4, (0, 0)), ((14, 14), 4, (0, 0)), ((7, 7), 3, (0, 0))]
    assert [s.out_hw for s in conv_stages(40, 40)] == [(20, 20), (10, 10), (5, 5), (3, 3)]
    assert [s.out_hw for s in conv_stages(64, 64)] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    assert rule(17, 23) == [((17, 23), 3, (0, 0)), ((9, 12), 3, (0, 1)), ((5, 6), 3, (0, 1))]
    assert len(conv_stages(4, 4)) == 1  # always at least one stage
    for h, w in [(1, 1), (2, 9), (5, 200), (33, 31), (100, 3)]:
        model = build_model(ModelConfig("ae", "conv", 2, (1, h, w), hidden=8, channels=(4,)))
        assert model.decoder(torch.zeros(1, 2)).shape == (1, 1, h, w)


def test_channels_per_stage_are_cut_or_extended():
    assert ModelConfig(image_shape=(1, 28, 28)).stage_channels == (32, 64, 96)
    assert ModelConfig(image_shape=(3, 64, 64)).stage_channels == (32, 64, 96, 96)
    assert ModelConfig(image_shape=(3, 8, 8)).stage_channels == (32,)


def test_the_28x28_conv_architecture_is_unchanged():
    """Exactly the keys and shapes the shipped exports were trained with."""
    model = build_model(ModelConfig("vae", "conv", 16))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {
        "encoder.features.0.weight": (32, 1, 4, 4), "encoder.features.0.bias": (32,),
        "encoder.features.2.weight": (64, 32, 4, 4), "encoder.features.2.bias": (64,),
        "encoder.features.4.weight": (96, 64, 3, 3), "encoder.features.4.bias": (96,),
        "encoder.features.7.weight": (256, 96 * 4 * 4), "encoder.features.7.bias": (256,),
        "encoder.mean.weight": (16, 256), "encoder.mean.bias": (16,),
        "encoder.log_var.weight": (16, 256), "encoder.log_var.bias": (16,),
        "decoder.net.0.weight": (256, 16), "decoder.net.0.bias": (256,),
        "decoder.net.2.weight": (96 * 4 * 4, 256), "decoder.net.2.bias": (96 * 4 * 4,),
        "decoder.net.5.weight": (96, 64, 3, 3), "decoder.net.5.bias": (64,),
        "decoder.net.7.weight": (64, 32, 4, 4), "decoder.net.7.bias": (32,),
        "decoder.net.9.weight": (32, 1, 4, 4), "decoder.net.9.bias": (1,),
    }  # fmt: skip


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_model_configs_rebuild_their_torchscript_weights(name):
    cfg = ModelConfig.from_dict(
        json.loads((STORE / name / "manifest.json").read_text())["model_config"]
    )
    model = build_model(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(STORE / name / "encoder.pt"))
    want = {k: tuple(v.shape) for k, v in scripted.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in model.encoder.state_dict().items()} == want


def test_rgb_40x40_vae_export_and_parity(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig("vae", "conv", 8, (3, 40, 40), hidden=64, channels=(8, 16, 24)))
    manifest = export_model(
        model, tmp_path / "rgb", x_check=torch.rand(8, 3, 40, 40), dataset={"name": "test"}
    )
    assert manifest["image_shape"] == [3, 40, 40]
    assert max(manifest["parity_max_abs_diff"].values()) <= 1e-5
    rebuilt = eager_from_store(tmp_path / "rgb")  # raises unless it answers as the files
    assert rebuilt.cfg.stage_channels == (8, 16, 24, 24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        enc = torch.jit.load(str(tmp_path / "rgb" / "encoder.pt"))
        dec = torch.jit.load(str(tmp_path / "rgb" / "decoder.pt"))
    with torch.inference_mode():
        z_mean, z_log_var = enc(torch.rand(5, 3, 40, 40))
        images = dec(z_mean)
    assert z_mean.shape == z_log_var.shape == (5, 8)
    assert images.shape == (5, 3, 40, 40) and 0 <= float(images.min()) <= float(images.max()) <= 1
