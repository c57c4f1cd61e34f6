"""Build TorchServe archives for every exported model: `<name>-{encode,decode,sample,score}.mar`.

    python -m serving.archive [--store model_store] [--out DIR] [--models NAME ...] [--force]
                              [--format NAME=aoti ...]

A model directory is any `<store>/<name>/` holding `manifest.json` (the export
contract of `training/export.py`). Each archive holds the operation's entry
point (`handlers/<op>_handler.py`), the whole `handlers/` package, the model's
`manifest.json`, the TorchScript files the operation needs, and a
`model-config.yaml` rendered by `WorkerConfig` (`serving/workers.py`) and
`HandlerOptions` (the one source of truth for those defaults). A model whose
format is `aoti` (`WorkerConfig.formats`, `--format NAME=aoti`) gets
AOTInductor packages instead, built from its TorchScript and cached
(`serving/packages.py`), and a copy of its manifest that lists them.

An archive is rebuilt exactly when what goes into it changed: a sha256 over
its inputs (export files, handler sources, the config, the archiver's version
and the build code, this file and `serving/workers.py`) is kept in
`<out>/.build/<archive>.stamp`. New archives replace old ones atomically, and
archives of models that no longer exist are removed, so a server started after
`make archive` never runs stale handler code.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import handlers
from handlers.manifest import FILES, MANIFEST, ModelInfo
from handlers.operations.metadata import FILE as METADATA_FILE
from handlers.operations.metadata import v2_metadata
from handlers.options import MODEL_FORMATS
from paths import STORE
from serving.packages import Sources, sources
from serving.workers import WorkerConfig

HANDLERS = Path(handlers.__file__).resolve().parent
OPERATIONS = tuple(FILES)  # encode, decode, sample, score
VERSION = "1.0"  # every archive's model version (the v2 metadata's `versions`)
# the code that shapes an archive (building, and rendering its model-config.yaml):
# an edit to either module rebuilds every archive, as when both were this one file
BUILD_CODE = (Path(__file__).resolve(), Path(inspect.getfile(WorkerConfig)).resolve())


@dataclass(frozen=True)
class Archive:
    model: str
    operation: str
    path: Path
    rebuilt: bool

    @property
    def name(self) -> str:
        return self.path.stem


def model_dirs(store: Path, names: list[str] | None = None) -> list[Path]:
    """The model dirs `<store>/<name>/` (those holding manifest.json; hidden ones, such as
    a registration in progress, left out), or exactly those of `names`."""
    found = {
        p.parent.name: p.parent
        for p in sorted(Path(store).glob(f"*/{MANIFEST}"))
        if not p.parent.name.startswith(".")
    }
    if names is None:
        return list(found.values())
    missing = [n for n in dict.fromkeys(names) if n not in found]
    if missing:
        raise SystemExit(
            f"no model {', '.join(missing)}: {store}/ has no <name>/{MANIFEST} for it "
            f"(have: {', '.join(sorted(found)) or 'none'}). Register a model trained "
            "elsewhere with `make register` (docs/register.md), or train the shipped ones "
            "with `make models`"
        )
    return [found[n] for n in dict.fromkeys(names)]


def archive_names(models: list[str]) -> list[str]:
    """The archives (TorchServe model names) of these models: `<model>-<op>`."""
    return [f"{m}-{op}" for m in models for op in OPERATIONS]


def handler_sources() -> list[Path]:
    """Every module of the handlers package, its subpackages (wire, operations) included."""
    return sorted(p for p in HANDLERS.rglob("*.py") if "__pycache__" not in p.parts)


def _archiver() -> str:
    exe = Path(sys.executable).parent / "torch-model-archiver"
    found = str(exe) if exe.exists() else shutil.which("torch-model-archiver")
    if not found:
        raise SystemExit("torch-model-archiver not found; run `make setup`")
    return found


def _archiver_version() -> str:
    from model_archiver.version import __version__

    return __version__


def stamp(src: Sources, op: str, config_text: str) -> str:
    h = hashlib.sha256()
    inputs = [*BUILD_CODE, src.manifest, *src.files(op)]
    for path in inputs:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for path in handler_sources():
        h.update(path.relative_to(HANDLERS).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(config_text.encode() + _archiver_version().encode())
    return h.hexdigest()


def build_one(src: Sources, op: str, out: Path, config_text: str, force: bool) -> Archive:
    name = f"{src.model}-{op}"
    target = out / f"{name}.mar"
    stamp_file = out / ".build" / f"{name}.stamp"
    digest = stamp(src, op, config_text)
    fresh = target.exists() and stamp_file.exists() and stamp_file.read_text().strip() == digest
    if fresh and not force:
        return Archive(src.model, op, target, rebuilt=False)
    stage = out / ".build" / name
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "pkg" / "handlers").mkdir(parents=True)
    (stage / "tmp").mkdir()
    for f in handler_sources():
        dest = stage / "pkg" / "handlers" / f.relative_to(HANDLERS)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
    (stage / "model-config.yaml").write_text(config_text)
    # GET /v2/models/<name>: the frontend agent (deploy/agent/) serves this file
    try:  # as every worker reads it: a manifest they cannot read stops the build here
        info = ModelInfo.from_manifest(json.loads(src.manifest.read_text()))
    except ValueError as err:
        raise SystemExit(f"{src.model}: {src.manifest}: {err}") from None
    meta = stage / METADATA_FILE
    meta.write_text(json.dumps(v2_metadata(info, op, src.model, VERSION), indent=1) + "\n")
    first, *others = src.files(op)  # score: the decoder beside the encoder
    cmd = [
        _archiver(),
        "--model-name", name,
        "--version", VERSION,
        "--handler", str(stage / "pkg" / "handlers" / f"{op}_handler.py"),
        "--serialized-file", str(first),
        "--extra-files", ",".join(map(str, [stage / "pkg", src.manifest, meta, *others])),
        "--config-file", str(stage / "model-config.yaml"),
        "--export-path", str(stage),
        "--force",
    ]  # fmt: skip
    # the archiver stages files in $TMPDIR/<model-name>: keep concurrent builds apart
    env = dict(os.environ, TMPDIR=str(stage / "tmp"))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"torch-model-archiver failed for {name}:\n{proc.stdout}{proc.stderr}")
    os.replace(stage / f"{name}.mar", target)
    stamp_file.write_text(digest + "\n")
    shutil.rmtree(stage, ignore_errors=True)
    return Archive(src.model, op, target, rebuilt=True)


def prune(out: Path, keep: set[str]) -> list[Path]:
    """Remove `<model>-<op>.mar` archives (and stamps) whose model is gone."""
    removed = []
    for mar in sorted(out.glob("*.mar")):
        model, _, op = mar.stem.rpartition("-")
        if op in OPERATIONS and model not in keep:
            mar.unlink()
            (out / ".build" / f"{mar.stem}.stamp").unlink(missing_ok=True)
            removed.append(mar)
    return removed


def build_archives(
    store: Path = STORE,
    out: Path | None = None,
    models: list[str] | None = None,
    worker: WorkerConfig | None = None,
    force: bool = False,
    log=print,
) -> list[Archive]:
    """Build (or keep, when up to date) each model's archives (one per operation) under `store`."""
    store = Path(store)
    out = Path(out) if out is not None else store
    (out / ".build").mkdir(parents=True, exist_ok=True)
    dirs = model_dirs(store, models)
    # archives beside their model dirs (out is the store): one whose model is gone is
    # stale whatever was chosen; elsewhere only a full build knows what is gone
    if models is None or out.resolve() == store.resolve():
        for mar in prune(out, {d.name for d in model_dirs(store)}):
            log(f"removed {mar} (its model is gone)")
    worker = worker or WorkerConfig()
    srcs = [sources(d, worker.model_format(d.name), out, log) for d in dirs]
    jobs = [(s, op) for s in srcs for op in OPERATIONS]
    configs = {(op, f): worker.config_text(op, f) for op in OPERATIONS for f in MODEL_FORMATS}
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        futures = [
            pool.submit(build_one, s, op, out, configs[op, s.model_format], force) for s, op in jobs
        ]
        results = []
        for i, fut in enumerate(futures, 1):
            a = fut.result()
            results.append(a)
            log(f"[{i}/{len(jobs)}] {a.path} {'built' if a.rebuilt else 'up to date'}")
    return results


def _registered(model_dir: Path) -> bool:
    """A model entered through `serving.register` (no training code of ours)."""
    return json.loads((model_dir / MANIFEST).read_text()).get("body") == "external"


FORMAT = "serve model NAME as FORMAT: torchscript, or aoti (AOTInductor packages, compiled and "
FORMAT += "cached on first use; docs/formats.md); repeatable"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description="Build <model>-{encode,decode,sample,score}.mar archives."
    )
    p.add_argument("--store", type=Path, default=STORE, help="where the model dirs are")
    p.add_argument("--out", type=Path, default=None, help="where the .mar go (default: --store)")
    p.add_argument("--models", nargs="+", default=None, help="only these model dirs")
    p.add_argument("--force", action="store_true", help="rebuild even when up to date")
    p.add_argument("--format", action="append", default=[], metavar="NAME=FORMAT", help=FORMAT)
    a = p.parse_args(argv)
    formats = dict(f.partition("=")[::2] for f in a.format)
    names = {d.name for d in model_dirs(a.store, a.models)}
    if set(formats) - names or set(formats.values()) - set(MODEL_FORMATS):
        raise SystemExit(f"--format {a.format}: want NAME=FORMAT, NAME in {sorted(names)}, "
                         f"FORMAT in {MODEL_FORMATS}")  # fmt: skip
    external = [n for n, f in formats.items() if f == "aoti" and _registered(a.store / n)]
    if external:
        raise SystemExit(
            f"--format {external[0]}=aoti: a registered model (body external) has no model "
            "code to compile AOTInductor packages from (serving/packages.py rebuilds the "
            "eager model from model_config); serve it as TorchScript"
        )
    worker = WorkerConfig(formats=formats)
    results = build_archives(a.store, a.out, a.models, worker, force=a.force)
    if not results:
        raise SystemExit(f"no exported models (*/{MANIFEST}) in {a.store}/; run `make models`")
    rebuilt = sum(r.rebuilt for r in results)
    print(f"{len(results)} archives in {a.out or a.store}/ ({rebuilt} rebuilt)")


if __name__ == "__main__":
    main()
