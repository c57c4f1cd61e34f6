"""The exported-program format: eager rebuild from TorchScript, AOTInductor packages, their cache.

The packages of the tiny VAE are compiled once per machine (the cache of
serving/packages.py); the tests here read them through the `vae_pt2_dir` fixture.
"""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

from serving import packages
from tests.handlers.tiny import export_tiny
from training import aoti
from training.artifacts import ExportError, sha256_file
from training.export import eager_from_store
from training.models import ImageDecoder


def _script(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path))


@pytest.mark.parametrize("fixture", ["vae_dir", "ae_dir"])
def test_eager_from_store_matches_the_torchscript(fixture, request):
    model_dir = request.getfixturevalue(fixture)
    model = eager_from_store(model_dir)
    x = torch.rand(16, 1, 28, 28)
    encoder, decoder = _script(model_dir / "encoder.pt"), _script(model_dir / "decoder.pt")
    with torch.inference_mode():
        assert aoti.max_diff(model.encoder(x), encoder(x)) <= 1e-6
        z = torch.randn(16, model.cfg.latent_dim)
        assert aoti.max_diff(ImageDecoder(model.decoder)(z), decoder(z)) <= 1e-6


def test_eager_from_store_refuses_a_config_that_does_not_fit(vae_dir, tmp_path):
    copy = shutil.copytree(vae_dir, tmp_path / "m")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["model_config"]["hidden"] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match="size mismatch"):
        eager_from_store(copy)


def test_eager_from_store_checks_parity(vae_dir, monkeypatch):
    """A rebuild that computes something else than the TorchScript is refused."""
    monkeypatch.setattr(ImageDecoder, "forward", lambda self, z: torch.sigmoid(self.decoder(z)) / 2)
    with pytest.raises(ExportError, match="rebuilt decoder differs"):
        eager_from_store(vae_dir)


def test_packages_match_the_eager_modules(vae_dir, vae_pt2_dir):
    record = json.loads((vae_pt2_dir / "manifest.json").read_text())["packages"]
    assert set(record["files"]) == {"encoder.pt2", "decoder.pt2"}
    for name, sha in record["files"].items():
        assert sha256_file(vae_pt2_dir / name) == sha
    assert max(record["parity_max_abs_diff"].values()) <= aoti.PARITY_TOL
    assert record["settings"] == aoti.SETTINGS.to_dict()
    assert record["torch_version"] == torch.__version__
    model = eager_from_store(vae_dir)
    encoder = aoti.load_package(vae_pt2_dir / "encoder.pt2")
    for b in (1, 5, 300):  # a dynamic batch dimension, beyond the checked sizes too
        x = torch.rand(b, 1, 28, 28)
        with torch.inference_mode():
            got, want = encoder(x), model.encoder(x)
        assert isinstance(got, tuple) and len(got) == 2  # (z_mean, z_log_var), as TorchScript
        assert aoti.max_diff(got, want) <= aoti.PARITY_TOL


def test_check_package_fails_on_another_module(vae_pt2_dir, ae_dir):
    """The parity check can fail: the VAE's decoder package against the AE's decoder."""
    decoder = ImageDecoder(eager_from_store(ae_dir).decoder)
    with pytest.raises(aoti.PackageError, match="differs from eager"):
        aoti.check_package(vae_pt2_dir / "decoder.pt2", decoder, torch.randn(4, 4))


def test_a_missing_compiler_names_what_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(aoti.PackageError, match="install g\\+\\+"):
        aoti.cxx_compiler()
    with pytest.raises(aoti.PackageError, match="C\\+\\+ compiler"):
        aoti.compile_package(torch.nn.Linear(2, 2), torch.rand(3, 2), tmp_path / "x.pt2")


def test_cache_key_follows_what_decides_the_packages(vae_dir, tmp_path, monkeypatch):
    key = packages.cache_key(vae_dir)
    assert packages.cache_key(shutil.copytree(vae_dir, tmp_path / "same")) == key
    other = export_tiny(tmp_path / "other", "vae", seed=1)  # other weights, same config
    assert packages.cache_key(other) != key
    bigger = aoti.CompileSettings(max_batch=aoti.MAX_BATCH * 2)
    assert packages.cache_key(vae_dir, bigger) != key
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert packages.cache_key(vae_dir) != key


def test_packages_are_compiled_once(vae_dir, vae_pt2_dir, monkeypatch):
    """The fixture compiled (or found) them; asking again reads the cache."""
    monkeypatch.setattr(aoti, "package_pair", pytest.fail)
    done = packages.packages_for(vae_dir, log=lambda *_: None)
    assert done.name == packages.cache_key(vae_dir)
    assert sorted(p.name for p in done.iterdir()) == ["decoder.pt2", "encoder.pt2", "packages.json"]
