"""serving/register.py: a TorchScript pair trained elsewhere, checked, becomes a model dir.

The pairs are tiny linear modules written here (a 3x40x40 colour VAE, a 1x28x28
AE), scripted and saved to tmp_path; each malformed pair is refused with a
message naming the problem, and nothing is written.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from handlers.calibration import Calibration
from handlers.manifest import ModelInfo
from paths import ROOT
from serving import archive, cli
from serving.register import HELD_OUT, main, register
from serving.register_checks import RegisterError
from training.artifacts import sha256_file
from training.export import MANIFEST_VERSION
from training.sources import source_sha256

COLOUR, GRAY = (3, 40, 40), (1, 28, 28)
D_VAE, D_AE = 6, 4
OPS = ("decode", "encode", "sample", "score")


class VaeEncoder(nn.Module):
    def __init__(self, shape, d: int, mix_batch: bool = False):
        super().__init__()
        n = int(np.prod(shape))
        self.mean, self.log_var = nn.Linear(n, d), nn.Linear(n, d)
        self.mix_batch = mix_batch

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x.flatten(1)
        if self.mix_batch:  # what a train-mode BatchNorm does: depends on the other rows
            h = h - h.mean(0, keepdim=True)
        return self.mean(h), 0.1 * self.log_var(h)


class AeEncoder(nn.Module):
    def __init__(self, shape, d: int, poison: bool = False):
        super().__init__()
        self.z = nn.Linear(int(np.prod(shape)), d)
        self.poison = poison

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.z(x.flatten(1))
        return torch.log(z - 1e6) if self.poison else z  # NaN


class Decoder(nn.Module):
    def __init__(self, shape, d: int, sigmoid: bool = True):
        super().__init__()
        self.c, self.h, self.w = shape
        self.out = nn.Linear(d, self.c * self.h * self.w)
        self.sigmoid = sigmoid

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = self.out(z).reshape(z.shape[0], self.c, self.h, self.w)
        return torch.sigmoid(y) if self.sigmoid else 3.0 * y


def save(module: nn.Module, path: Path) -> Path:
    torch.manual_seed(0)
    for p in module.parameters():  # deterministic weights, whatever the construction order
        nn.init.normal_(p, std=0.02)
    with warnings.catch_warnings():  # TorchScript is what a registered pair is
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
        torch.jit.script(module.eval()).save(str(path))
    return path


@pytest.fixture
def pairs(tmp_path) -> dict[str, tuple[Path, Path]]:
    d = tmp_path / "pairs"
    d.mkdir()
    return {
        "vae": (
            save(VaeEncoder(COLOUR, D_VAE), d / "vae-enc.pt"),
            save(Decoder(COLOUR, D_VAE), d / "vae-dec.pt"),
        ),
        "ae": (
            save(AeEncoder(GRAY, D_AE), d / "ae-enc.pt"),
            save(Decoder(GRAY, D_AE), d / "ae-dec.pt"),
        ),
    }


def argv(name, enc, dec, kind, shape, dim, store, *extra) -> list[str]:
    shape = ",".join(map(str, shape))
    return [name, "--encoder", str(enc), "--decoder", str(dec), "--kind", kind,
            "--image-shape", shape, "--latent-dim", str(dim),
            "--store", str(store), *extra]  # fmt: skip


def vae_argv(pairs, store, *extra, name="my-vae"):
    return argv(name, *pairs["vae"], "vae", COLOUR, D_VAE, store, *extra)


def ae_argv(pairs, store, *extra, name="my-ae"):
    return argv(name, *pairs["ae"], "ae", GRAY, D_AE, store, *extra)


def read(store: Path, name: str) -> dict:
    return json.loads((store / name / "manifest.json").read_text())


def test_a_colour_vae_without_data(pairs, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(vae_argv(pairs, store)) == 0
    assert "make serve MODELS" in capsys.readouterr().out
    assert sorted(p.name for p in store.iterdir()) == ["my-vae"]  # no temp dir left
    assert sorted(p.name for p in (store / "my-vae").iterdir()) == [
        "decoder.pt", "encoder.pt", "manifest.json",
    ]  # fmt: skip
    m = read(store, "my-vae")
    assert list(m)[:4] == ["manifest_version", "name", "kind", "body"]
    assert m["manifest_version"] == MANIFEST_VERSION
    assert (m["name"], m["kind"], m["body"]) == ("my-vae", "vae", "external")
    assert m["image_shape"] == list(COLOUR) and m["latent_dim"] == D_VAE
    assert m["pixel_scaling"] == {"input": "uint8", "divide_by": 255.0, "range": [0.0, 1.0]}
    assert m["encoder_outputs"] == ["z_mean", "z_log_var"]
    assert m["prior"] == {"type": "standard_normal"}
    assert m["dataset"] is None and "calibration" not in m
    assert m["torch_version"] == torch.__version__
    enc, dec = pairs["vae"]
    assert m["files"] == {"encoder.pt": sha256_file(enc), "decoder.pt": sha256_file(dec)}
    for f in ("encoder.pt", "decoder.pt"):
        assert m["files"][f] == sha256_file(store / "my-vae" / f)
    reg = m["registered"]
    assert reg["from"] == {
        "encoder": str(enc.resolve()),
        "decoder": str(dec.resolve()),
        "data": None,
    }
    assert reg["command"].startswith("python -m serving.register my-vae --encoder")
    assert reg["when"].endswith("+00:00")
    assert 0.0 <= reg["checks"]["decoder_range"][0] <= reg["checks"]["decoder_range"][1] <= 1.0
    info = ModelInfo.from_dir(store / "my-vae")  # what every worker checks at load
    assert info.image_shape == COLOUR and info.mode == "RGB"


def test_an_ae_without_data_has_no_prior(pairs, tmp_path):
    store = tmp_path / "store"
    assert main(ae_argv(pairs, store, "--pixel-scale", "256")) == 0
    m = read(store, "my-ae")
    assert m["prior"] == {"type": "none"} and m["encoder_outputs"] == ["z"]
    assert m["pixel_scaling"]["divide_by"] == 256.0
    assert "calibration" not in m
    assert ModelInfo.from_dir(store / "my-ae").prior_mean is None


def test_with_data_both_kinds_are_calibrated_and_the_ae_gets_its_prior(pairs, tmp_path):
    store, rng = tmp_path / "store", np.random.default_rng(1)
    colour = tmp_path / "colour.npy"  # (N, H, W, C) uint8
    np.save(colour, rng.integers(0, 256, (60, 40, 40, 3), dtype=np.uint8))
    gray = tmp_path / "gray.npy"  # (N, H, W) floats in [0, 1]
    np.save(gray, rng.random((80, 28, 28)).astype(np.float32))
    assert main(vae_argv(pairs, store, "--data", str(colour))) == 0
    assert main(ae_argv(pairs, store, "--data", str(gray))) == 0

    vae = read(store, "my-vae")
    assert vae["dataset"] == {
        "name": "colour", "sha256": source_sha256(colour), "source": str(colour.resolve()),
        "images": 60,
    }  # fmt: skip
    assert vae["prior"] == {"type": "standard_normal"}
    cal = Calibration.from_manifest(vae)
    assert cal.held_out == 60 == vae["calibration"]["held_out"]["images"]  # a VAE fits no prior
    assert vae["calibration"]["held_out"]["dataset_sha256"] == source_sha256(colour)
    assert vae["registered"]["from"]["data"] == str(colour.resolve())

    ae = read(store, "my-ae")
    assert Calibration.from_manifest(ae).held_out == 40 <= HELD_OUT  # half: the rest fit the prior
    prior = ae["prior"]
    assert prior["type"] == "gaussian" and set(prior) == {"type", "mean", "cov", "factor"}
    factor, cov = np.asarray(prior["factor"]), np.asarray(prior["cov"])
    assert len(prior["mean"]) == D_AE and cov.shape == factor.shape == (D_AE, D_AE)
    np.testing.assert_allclose(factor @ factor.T, cov, atol=1e-10)
    assert ModelInfo.from_dir(store / "my-ae").prior_mean.shape == (D_AE,)


# ---- refusals: a message naming the problem, and nothing written -----------------------
def refused(args: list[str], store: Path, match: str, capsys) -> str:
    before = sorted(p.name for p in store.rglob("*")) if store.exists() else None
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "refused" in err and match.lower() in err.lower(), err
    after = sorted(p.name for p in store.rglob("*")) if store.exists() else None
    assert after == before  # nothing written, no temp dir left
    return err


def bad_pair(tmp_path, encoder: nn.Module, decoder: nn.Module) -> tuple[Path, Path]:
    return save(encoder, tmp_path / "bad-enc.pt"), save(decoder, tmp_path / "bad-dec.pt")


def test_refuses_a_file_that_is_not_torchscript(pairs, tmp_path, capsys):
    state = tmp_path / "state.pt"
    torch.save(VaeEncoder(COLOUR, D_VAE).state_dict(), state)
    args = argv("m", state, pairs["vae"][1], "vae", COLOUR, D_VAE, tmp_path / "store")
    refused(args, tmp_path / "store", "is not TorchScript", capsys)
    package = tmp_path / "encoder.pt2"
    package.write_bytes(b"not really a package")
    args = argv("m", package, pairs["vae"][1], "vae", COLOUR, D_VAE, tmp_path / "store")
    refused(args, tmp_path / "store", "AOTInductor", capsys)


def test_refuses_the_wrong_encoder_outputs_for_the_kind(pairs, tmp_path, capsys):
    store = tmp_path / "store"
    # a VAE's encoder registered as an AE: a tuple where one tensor is due
    args = argv("m", pairs["vae"][0], pairs["vae"][1], "ae", COLOUR, D_VAE, store)
    refused(args, store, "an AE encoder returns one tensor", capsys)
    args = argv("m", pairs["ae"][0], pairs["ae"][1], "vae", GRAY, D_AE, store)
    refused(args, store, "a VAE encoder returns the tuple (z_mean, z_log_var)", capsys)


def test_refuses_a_wrong_latent_dim(pairs, tmp_path, capsys):
    store = tmp_path / "store"
    args = argv("m", *pairs["vae"], "vae", COLOUR, D_VAE + 1, store)
    refused(args, store, f"has shape (8, {D_VAE}), want (8, {D_VAE + 1}) (--latent-dim", capsys)


def test_refuses_a_wrong_decoder_output_shape(tmp_path, capsys):
    enc, dec = bad_pair(tmp_path, VaeEncoder(COLOUR, D_VAE), Decoder((3, 20, 20), D_VAE))
    store = tmp_path / "store"
    err = refused(argv("m", enc, dec, "vae", COLOUR, D_VAE, store), store, "decoder", capsys)
    assert "(8, 3, 20, 20), want (8, 3, 40, 40)" in err


def test_refuses_decoder_values_outside_the_pixel_range(tmp_path, capsys):
    enc, dec = bad_pair(tmp_path, AeEncoder(GRAY, D_AE), Decoder(GRAY, D_AE, sigmoid=False))
    store = tmp_path / "store"
    err = refused(argv("m", enc, dec, "ae", GRAY, D_AE, store), store, "outside", capsys)
    assert "[0, 1]" in err and "torch.sigmoid" in err


def test_refuses_outputs_that_depend_on_the_rest_of_the_batch(tmp_path, capsys):
    enc, dec = bad_pair(tmp_path, VaeEncoder(COLOUR, D_VAE, mix_batch=True), Decoder(COLOUR, D_VAE))
    store = tmp_path / "store"
    args = argv("m", enc, dec, "vae", COLOUR, D_VAE, store)
    refused(args, store, "of a batch of 8 differs from the same input alone", capsys)


def test_refuses_nan_outputs(tmp_path, capsys):
    enc, dec = bad_pair(tmp_path, AeEncoder(GRAY, D_AE, poison=True), Decoder(GRAY, D_AE))
    store = tmp_path / "store"
    refused(argv("m", enc, dec, "ae", GRAY, D_AE, store), store, "NaN or infinite", capsys)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ("2,40,40", "grayscale (1) or RGB (3)"),
        ("3,40", "want C,H,W"),
        ("3,0,40", "H and W must be in [1, 1024]"),
        ("1,2000,28", "H and W must be in [1, 1024]"),
    ],
)
def test_refuses_a_bad_image_shape(pairs, tmp_path, capsys, shape, match):
    args = vae_argv(pairs, tmp_path / "store")
    args[args.index("--image-shape") + 1] = shape
    refused(args, tmp_path / "store", match, capsys)


def test_an_image_shape_the_pair_does_not_take(pairs, tmp_path, capsys):
    args = vae_argv(pairs, tmp_path / "store")
    args[args.index("--image-shape") + 1] = "1,40,40"
    refused(args, tmp_path / "store", "encoder failed on a float32 batch", capsys)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("my vae", "letters, digits"),
        ("x-encode", "ends like an operation"),
        ("fashion-vae", "shipped"),
    ],
)
def test_refuses_a_bad_name(pairs, tmp_path, capsys, name, match):
    refused(vae_argv(pairs, tmp_path / "store", name=name), tmp_path / "store", match, capsys)


def test_an_existing_name_needs_force(pairs, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(vae_argv(pairs, store)) == 0
    first = (store / "my-vae" / "manifest.json").read_text()
    err = refused(vae_argv(pairs, store), store, "exists", capsys)
    assert "--force" in err and (store / "my-vae" / "manifest.json").read_text() == first
    assert main(vae_argv(pairs, store, "--force", "--pixel-scale", "256")) == 0
    assert read(store, "my-vae")["pixel_scaling"]["divide_by"] == 256.0
    assert sorted(p.name for p in store.iterdir()) == ["my-vae"]


def test_data_is_converted_to_the_model_and_too_little_is_refused(pairs, tmp_path, capsys):
    data = tmp_path / "rgb.npy"
    rgb = np.random.default_rng(2).integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    np.save(data, rgb)  # converted by the reader (as the server converts an upload)...
    assert main(ae_argv(pairs, tmp_path / "store", "--data", str(data))) == 0  # ...to 1x28x28
    few = tmp_path / "few.npy"
    np.save(few, np.zeros((5, 28, 28), dtype=np.uint8))
    args = ae_argv(pairs, tmp_path / "store", "--data", str(few), name="other")
    refused(args, tmp_path / "store", "at least 20", capsys)


def test_register_raises_register_error(pairs, tmp_path):
    from serving.register import Registration

    reg = Registration("m", *pairs["ae"], "ae", GRAY, D_AE + 3, store=tmp_path / "s")
    with pytest.raises(RegisterError, match="--latent-dim"):
        register(reg, log=lambda *_: None)
    assert not (tmp_path / "s").exists()


# ---- archives and the launcher ------------------------------------------------------------
def test_archive_builds_only_the_chosen_model(pairs, tmp_path):
    store = tmp_path / "store"
    assert main(vae_argv(pairs, store)) == 0
    assert main(ae_argv(pairs, store)) == 0
    (store / ".half-registered").mkdir()  # a registration in progress is no model
    (store / ".half-registered" / "manifest.json").write_text("{}")
    cmd = [sys.executable, "-m", "serving.archive", "--store", str(store), "--models", "my-vae"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in store.glob("*.mar")) == [f"my-vae-{op}.mar" for op in OPS]
    cmd[-1] = "nosuch"
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "no model nosuch" in proc.stderr
    assert "make register" in proc.stderr


def test_a_registered_model_cannot_be_served_as_aoti(pairs, tmp_path):
    store = tmp_path / "store"
    assert main(vae_argv(pairs, store)) == 0
    args = ["--store", str(store), "--models", "my-vae", "--format", "my-vae=aoti"]
    with pytest.raises(SystemExit, match="registered model"):
        archive.main(args)
    assert not list(store.glob("*.mar"))


def test_the_launcher_serves_exactly_the_models_asked_for(pairs, tmp_path):
    store = tmp_path / "store"
    assert main(vae_argv(pairs, store)) == 0
    server = cli.local_server(tmp_path / "run", store, ["fashion-vae", "my-vae", "my-vae"])
    ops = ("encode", "decode", "sample", "score")
    assert server.expected_models() == [
        f"{m}-{op}" for m in ("fashion-vae", "my-vae") for op in ops
    ]
    with pytest.raises(SystemExit, match="no model nosuch"):
        cli.check_models(store, ["my-vae", "nosuch"])
    with pytest.raises(SystemExit, match='make archive MODELS="my-vae"'):
        cli.check_models(store, ["my-vae"])  # registered, not archived yet
    assert cli.local_server(tmp_path / "run", store).expected_models() == []  # every .mar


def test_the_make_targets_pass_the_variables_on():
    def dry(*args: str) -> str:
        run = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return run.stdout

    out = dry("register", "NAME=m", "ENCODER=e.pt", "DECODER=d.pt", "KIND=vae",
              "IMAGE_SHAPE=3,40,40", "LATENT_DIM=6", "DATA=x.npy", "FORCE=1")  # fmt: skip
    line = " ".join(out.replace("\\\n", " ").split())
    assert ('-m serving.register "m" --encoder "e.pt" --decoder "d.pt" --kind "vae" '
            '--image-shape "3,40,40" --latent-dim "6" --pixel-scale "255" --data "x.npy" '
            "--force") in line  # fmt: skip
    out = dry("serve", "MODELS=fashion-vae m")
    assert "-m serving.archive --models fashion-vae m" in out
    assert "-m serving.cli start --models fashion-vae m" in out
