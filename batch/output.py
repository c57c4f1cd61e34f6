"""A job's output folder: parts, the job's identity, and the manifest.

- `part-<block>-<key>.parquet`: one per input block, written whole or not at
  all (`storage.write_atomic`), its key-value metadata holding the block's
  summary. A part that exists is a finished block: a rerun skips it, so every
  input row is in exactly one part however often the job is run or killed.
- `_job.json`: what the job is (operation, model sha256, input, the options that
  shape the output), written by the first run. A rerun of another job into the
  same folder is refused (or, with `--overwrite`, the old output is removed).
- `_manifest.json`: written at the end of every run that completes.
"""

from __future__ import annotations

import json

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from batch.sources import Block, Plan
from batch.spec import JobError, JobSpec
from batch.storage import TMP_PREFIX, Location, locate, write_atomic

JOB, MANIFEST = "_job.json", "_manifest.json"
META = b"latentserve.block"  # a part's key-value metadata: its block's summary (JSON)


def part_name(block: Block) -> str:
    return f"part-{block.index:06d}-{block.key}.parquet"


def _ours(name: str) -> bool:
    return name.startswith(("part-", TMP_PREFIX)) or name in (JOB, MANIFEST)


def prepare(spec: JobSpec, plan: Plan) -> Location:
    """The output folder, ready: created, or checked to hold this same job."""
    out = locate(spec.output)
    if out.exists() and not out.is_dir():
        raise JobError(f"--output {spec.output} is a file; give a folder")
    out.fs.create_dir(out.path, recursive=True)
    identity = spec.identity() | {"input_fingerprint": plan.fingerprint, "blocks": len(plan.blocks)}
    job = out.join(JOB)
    if job.exists():
        before = json.loads(job.read_bytes())
        if before != identity and not spec.overwrite:
            diff = sorted(k for k in identity if before.get(k) != identity[k])
            raise JobError(
                f"--output {spec.output} holds another job's output ({', '.join(diff)} "
                "differ): give another --output, or --overwrite to replace it"
            )
        if before != identity:
            clear(out)
    else:
        names = [i.base_name for i in out.fs.get_file_info(pafs.FileSelector(out.path))]
        if any(n.startswith("part-") for n in names) and not spec.overwrite:
            raise JobError(f"--output {spec.output} holds parts of an unknown job; give another")
        if spec.overwrite:
            clear(out)
    write_atomic(job, json.dumps(identity, indent=2, sort_keys=True).encode())
    return out


def clear(out: Location) -> None:
    """Remove a job's own files from its folder (nothing else)."""
    for info in out.fs.get_file_info(pafs.FileSelector(out.path)):
        if info.type == pafs.FileType.File and _ours(info.base_name):
            out.fs.delete_file(info.path)


def finished(out: Location, plan: Plan) -> dict[str, dict]:
    """Block key -> its summary, for every block whose part is in `out`."""
    names = {
        i.base_name
        for i in out.fs.get_file_info(pafs.FileSelector(out.path))
        if i.type == pafs.FileType.File
    }
    done = {}
    for block in plan.blocks:
        name = part_name(block)
        if name in names:
            with out.fs.open_input_file(out.join(name).path) as f:
                meta = pq.read_schema(f).metadata or {}
            done[block.key] = json.loads(meta[META])
    return done


def remove_temporaries(out: Location) -> None:
    """Half-written files of a killed run (never renamed into place)."""
    for info in out.fs.get_file_info(pafs.FileSelector(out.path)):
        if info.base_name.startswith(TMP_PREFIX):
            out.fs.delete_file(info.path)


def write_manifest(out: Location, manifest: dict) -> None:
    write_atomic(out.join(MANIFEST), json.dumps(manifest, indent=2).encode())
