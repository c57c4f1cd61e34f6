"""serving/archive.py: contents, model-config.yaml, rebuild-on-change stamps, pruning."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest
import yaml

from serving import archive
from serving.archive import build_archives
from serving.workers import WorkerConfig


def quiet(*_):
    pass


def test_archives_contents_and_stamps(vae_dir, tmp_path, monkeypatch):
    out = tmp_path / "store"
    first = build_archives(vae_dir.parent, out, models=[vae_dir.name], log=quiet)
    assert sorted(a.name for a in first) == [
        f"tiny-vae-{op}" for op in ("decode", "encode", "sample", "score")
    ]
    assert all(a.rebuilt for a in first)
    with zipfile.ZipFile(out / "tiny-vae-sample.mar") as z:
        names = set(z.namelist())
        config = yaml.safe_load(z.read("model-config.yaml"))
    assert {"sample_handler.py", "manifest.json", "decoder.pt", "handlers/engine.py"} <= names
    assert "encoder.pt" not in names  # each archive carries only the file it needs
    assert config == WorkerConfig().model_config("sample")
    with zipfile.ZipFile(out / "tiny-vae-encode.mar") as z:
        encode = yaml.safe_load(z.read("model-config.yaml"))
    assert encode["minWorkers"] == encode["maxWorkers"] == WorkerConfig().encode_workers
    assert config["minWorkers"] == config["maxWorkers"] == WorkerConfig().sample_workers
    # torch threads per worker are set per operation (the handler reads cpu_threads)
    assert encode["handler"]["cpu_threads"] == WorkerConfig().encode_threads == 1
    assert config["handler"]["cpu_threads"] == WorkerConfig().sample_threads == 2
    with zipfile.ZipFile(out / "tiny-vae-score.mar") as z:  # score needs both modules
        names = set(z.namelist())
    assert {"score_handler.py", "manifest.json", "encoder.pt", "decoder.pt"} <= names

    again = build_archives(vae_dir.parent, out, models=[vae_dir.name], log=quiet)
    assert not any(a.rebuilt for a in again)

    # a change in handlers/ rebuilds every archive (a copy of the package stands in)
    fake = tmp_path / "handlers"
    shutil.copytree(archive.HANDLERS, fake, ignore=shutil.ignore_patterns("__pycache__"))
    (fake / "limits.py").write_text((fake / "limits.py").read_text() + "\n# changed\n")
    monkeypatch.setattr(archive, "HANDLERS", fake)
    changed = build_archives(vae_dir.parent, out, models=[vae_dir.name], log=quiet)
    assert all(a.rebuilt for a in changed)
    with zipfile.ZipFile(out / "tiny-vae-encode.mar") as z:
        assert z.read("handlers/limits.py").endswith(b"# changed\n")

    # so does a change in the build code, serving/workers.py as well as this module
    assert [p.name for p in archive.BUILD_CODE] == ["archive.py", "workers.py"]
    settings = tmp_path / "workers.py"
    settings.write_bytes(archive.BUILD_CODE[1].read_bytes() + b"\n# changed\n")
    monkeypatch.setattr(archive, "BUILD_CODE", (archive.BUILD_CODE[0], settings))
    assert all(a.rebuilt for a in build_archives(vae_dir.parent, out, log=quiet))


def test_export_change_and_pruning(ae_dir, tmp_path):
    store = tmp_path / "models"
    shutil.copytree(ae_dir, store / "m")
    out = tmp_path / "out"
    build_archives(store, out, log=quiet)
    manifest = store / "m" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"name": "tiny-ae"', '"name": "m"'))
    rebuilt = {a.operation: a.rebuilt for a in build_archives(store, out, log=quiet)}
    assert rebuilt == {"encode": True, "decode": True, "sample": True, "score": True}
    # a changed decoder rebuilds the archives that carry it, score's among them
    decoder = store / "m" / "decoder.pt"
    decoder.write_bytes(decoder.read_bytes())  # same bytes: nothing to do
    assert not any(a.rebuilt for a in build_archives(store, out, log=quiet))
    decoder.write_bytes(decoder.read_bytes() + b"\0")
    rebuilt = {a.operation: a.rebuilt for a in build_archives(store, out, log=quiet)}
    assert rebuilt == {"encode": False, "decode": True, "sample": True, "score": True}
    shutil.rmtree(store / "m")
    (out / "keep.txt").write_text("not an archive of ours")
    assert build_archives(store, out, log=quiet) == []
    assert not list(out.glob("*.mar")) and (out / "keep.txt").exists()


def test_an_aoti_archive_carries_the_packages(vae_dir, vae_pt2_dir, tmp_path):
    """`formats` switches one model to AOTInductor packages (from the cache that the
    `vae_pt2_dir` fixture filled): the .pt2 files, a manifest listing them, the option."""
    out = tmp_path / "store"
    worker = WorkerConfig(formats={vae_dir.name: "aoti"})
    build_archives(vae_dir.parent, out, models=[vae_dir.name], worker=worker, log=quiet)
    with zipfile.ZipFile(out / "tiny-vae-score.mar") as z:
        names = set(z.namelist())
        config = yaml.safe_load(z.read("model-config.yaml"))
        manifest = json.loads(z.read("manifest.json"))
    assert {"encoder.pt2", "decoder.pt2"} <= names and not {"encoder.pt", "decoder.pt"} & names
    assert config["handler"]["model_format"] == "aoti"
    listed = json.loads((vae_pt2_dir / "manifest.json").read_text())["packages"]
    assert manifest["packages"] == listed
    assert manifest["files"] == json.loads((vae_dir / "manifest.json").read_text())["files"]
    again = build_archives(vae_dir.parent, out, models=[vae_dir.name], worker=worker, log=quiet)
    assert not any(a.rebuilt for a in again)
    back = build_archives(vae_dir.parent, out, models=[vae_dir.name], log=quiet)
    assert all(a.rebuilt for a in back)  # TorchScript again: every archive changes
    with zipfile.ZipFile(out / "tiny-vae-encode.mar") as z:
        assert "encoder.pt" in z.namelist()
        assert yaml.safe_load(z.read("model-config.yaml"))["handler"]["model_format"] == (
            "torchscript"
        )


@pytest.mark.parametrize("arg", ["tiny-vae=onnx", "nosuch=aoti", "tiny-vae"])
def test_the_format_option_is_checked(vae_dir, tmp_path, arg):
    argv = ["--store", str(vae_dir.parent), "--out", str(tmp_path), "--format", arg]
    with pytest.raises(SystemExit, match="want NAME=FORMAT"):
        archive.main(argv)
