"""The driver of a batch job: check, plan, skip finished blocks, run the rest on Ray
(`batch.cluster`), write the manifest.

Everything that can refuse the job (options, model, input) runs before Ray
starts and needs neither Ray nor torch. A rerun of the same command plans the
same blocks (`batch.sources`), finds the parts already written
(`batch.output`) and runs only the others: every input row ends in exactly one
part however often the job is killed.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime

from batch import output
from batch.cluster import check_reachable, execute
from batch.sources import IMAGES, LATENTS, plan
from batch.spec import JobError, JobSpec, check, image_shapes


def run(spec: JobSpec, log=print) -> dict:
    """Run (or resume) the job; its manifest."""
    t0 = time.time()
    info = check(spec)
    check_reachable(spec)
    reads = LATENTS if spec.operation == "decode" else IMAGES
    if spec.operation == "sample":
        the_plan = sample_plan(spec)
    else:
        try:
            the_plan = plan(spec.input, reads, spec.block_items, spec.limit)
        except (ValueError, OSError) as err:
            raise JobError(str(err)) from None
        _check_item_shape(the_plan, info, reads, spec.model)
    out = output.prepare(spec, the_plan)
    output.remove_temporaries(out)
    done = output.finished(out, the_plan)
    todo = [b for b in the_plan.blocks if b.key not in done]
    summaries, startup, ray_info = [], 0.0, {}
    if todo:
        before = sum(s["errors"] for s in done.values())
        summaries, startup, ray_info = execute(spec, todo, t0, before, log)
    wall = time.time() - t0
    every = list(done.values()) + summaries
    rows, ok = sum(s["rows"] for s in every), sum(s["ok"] for s in every)
    steady = _steady_rate(summaries)
    manifest = {
        "model": spec.model,
        "model_sha256": spec.model_sha256,
        "model_kind": info.kind,
        "image_shape": list(info.image_shape),
        "latent_dim": info.latent_dim,
        "operation": spec.operation,
        "options": spec.options(),
        "input": spec.input,
        "input_kind": the_plan.kind,
        "output": spec.output,
        "rows": rows,
        "ok": ok,
        "errors": rows - ok,
        "error_codes": _error_codes(out),
        "blocks": len(the_plan.blocks),
        "blocks_skipped": len(done),
        "rows_this_run": sum(s["rows"] for s in summaries),
        "wall_seconds": round(wall, 3),
        "startup_seconds": round(startup, 3),
        "items_per_second": round(steady, 1),
        "ray": ray_info,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    output.write_manifest(out, manifest)
    if not spec.quiet:
        log(
            f"{spec.operation} {spec.model}: {rows} rows ({rows - ok} errors) in "
            f"{wall:.1f} s, {steady:,.0f} items/s after {startup:.1f} s of start-up; "
            f"{len(done)} of {len(the_plan.blocks)} blocks were already done -> {spec.output}"
        )
    return manifest


def _check_item_shape(the_plan, info, reads: str, model: str) -> None:
    """An array input (.npy, IDX) whose items are not the model's fails before Ray starts:
    arrays are not resized (as a v2 tensor is not); image files are converted."""
    shape = the_plan.item_shape
    if shape is None:
        return
    want = [(info.latent_dim,)] if reads == LATENTS else list(image_shapes(info))
    if tuple(shape) not in want:
        what = "latents" if reads == LATENTS else "images"
        raise JobError(
            f"input {the_plan.input}: {what} of shape {list(shape)}; {model} reads "
            + " or ".join(str(list(s)) for s in want)
        )


def sample_plan(spec: JobSpec):
    from batch.sources import Block, Plan

    n = spec.n if spec.limit is None else min(spec.n, spec.limit)
    src = f"sample:{spec.seed}:{spec.temperature}"
    blocks = [
        Block(i, "sample", src, s, min(s + spec.block_items, n))
        for i, s in enumerate(range(0, n, spec.block_items))
    ]
    return Plan("sample", src, blocks, src)


def _steady_rate(summaries: list[dict]) -> float:
    """Items per second from the first block's start to the last block's end."""
    if not summaries:
        return 0.0
    span = max(s["finished"] for s in summaries) - min(s["started"] for s in summaries)
    return sum(s["rows"] for s in summaries) / span if span > 0 else 0.0


def _error_codes(out) -> dict[str, int]:
    """Error counts by code, over every part (read from the parts' error_code column)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    counts: Counter = Counter()
    for info in out.fs.get_file_info(output.pafs.FileSelector(out.path)):
        if info.base_name.startswith("part-"):
            with out.fs.open_input_file(info.path) as f:
                col = pq.read_table(f, columns=["error_code"]).column("error_code")
            for row in pc.value_counts(col.drop_null()).to_pylist():
                counts[row["values"]] += row["counts"]
    return dict(sorted(counts.items()))
