"""The Ray actor of a batch job: one model, loaded once; one output part per block.

`BlockWorker` is the class `map_batches` runs in an actor pool. Its `__init__`
builds the handlers' own `Engine` (the exported modules, their sha256 checked,
the serving limits, warm-up), so every item is read, checked and run exactly
as the service does. Each call gets block descriptors (`batch.sources.Block`),
reads the block, runs the operation, writes the block's Parquet part
atomically under its own name (`part_name`) and returns one summary row per
block: that is all that travels back to the driver.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

from batch import columns
from batch.convert import Inputs, array_images_fast, images_in, latents_in
from batch.output import META, part_name
from batch.reading import read_block
from batch.sources import Block
from batch.spec import JobSpec
from batch.storage import locate, write_atomic
from handlers.engine import Engine
from handlers.metrics import Recorder
from handlers.options import HandlerOptions
from handlers.wire import images

SUMMARY = (
    "block", "key", "rows", "ok", "errors", "started", "finished", "node", "host", "pid", "model"
)  # fmt: skip


def request_seed(seed: int, r: int) -> int:
    """Sample request r's seed: the job's own for the first, then a hash of (seed, r),
    so that jobs of nearby seeds share no requests."""
    if r == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:{r}".encode()).digest()[:8], "big") >> 1


class BlockWorker:
    def __init__(self, job: dict) -> None:
        self.spec = spec = JobSpec.from_dict(job)
        threads = max(1, int(spec.cpus_per_actor))
        torch.set_num_threads(threads)
        if spec.gpus_per_actor > 0 and not torch.cuda.is_available():
            raise RuntimeError(
                f"--gpus-per-actor {spec.gpus_per_actor:g}, but torch sees no CUDA device on "
                f"{socket.gethostname()} (a CPU build of torch, or no driver)"
            )
        gpu = 0 if spec.gpus_per_actor > 0 else None  # Ray's CUDA_VISIBLE_DEVICES: ours only
        options = HandlerOptions(chunk_size=spec.batch_size, cpu_threads=threads)
        self.model_path = str(Path(spec.worker_model_dir or spec.model_dir).resolve())
        self.engine = Engine.from_dir(Path(self.model_path), spec.operation, options, gpu)
        self.engine.warmup()
        self.op, self.info = self.engine.op, self.engine.op.info
        self.out = locate(spec.output)
        # the Ray node (a host may run several); in-process, outside Ray: none
        self.node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        self.host = socket.gethostname()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        summaries = [
            self.process(Block.from_row({k: v[i] for k, v in batch.items()}))
            for i in range(len(batch["block"]))
        ]
        return {k: [s[k] for s in summaries] for k in SUMMARY}

    def process(self, block: Block) -> dict:
        started = time.time()
        table = self.answer(block)
        errors = table.num_rows - table.column("error_code").null_count
        summary = {
            "block": block.index,
            "key": block.key,
            "rows": table.num_rows,
            "ok": table.num_rows - errors,
            "errors": errors,
        }
        meta = {META: json.dumps(summary).encode()}
        buf = io.BytesIO()
        pq.write_table(table.replace_schema_metadata(meta), buf)
        if self.spec.images and self.spec.operation in ("decode", "sample"):
            self.write_pngs(table)
        write_atomic(self.out.join(part_name(block)), buf.getvalue())
        return summary | {
            "started": started,
            "finished": time.time(),
            "node": self.node,
            "host": self.host,
            "pid": os.getpid(),
            "model": self.model_path,
        }

    # ---- the operations ----------------------------------------------------------
    def answer(self, block: Block) -> pa.Table:
        if self.spec.operation == "sample":
            return self.sample(block)
        items = read_block(block, self.op.limits.max_image_bytes)
        if self.spec.operation == "decode":
            inputs = latents_in(self.info, self.op.limits, items)
        else:
            inputs = array_images_fast(self.info, items) or images_in(
                self.info, self.op.limits, items
            )
        n = len(items)
        cols = getattr(self, self.spec.operation)(n, inputs)
        return columns.table(items.ids, inputs, cols)

    def _run(self, inputs: Inputs, variant: str | None = None) -> tuple:
        return self.engine.run_chunks(inputs.x, Recorder(), variant)

    def encode(self, n: int, inputs: Inputs) -> dict:
        outputs = self._run(inputs) if inputs.ok else self._empty_encoder()
        return columns.encode_columns(n, inputs, outputs, self.info.kind == "vae")

    def _empty_encoder(self) -> tuple:
        d = self.info.latent_dim
        return (torch.empty(0, d), torch.empty(0, d))

    def score(self, n: int, inputs: Inputs) -> dict:
        op, mode, fpr = self.op, self.spec.mode, self.spec.fpr
        if not inputs.ok:  # names and a summary of no rows
            outputs = self._run(Inputs(op.example(1), [0], {}), mode)
            names, primary = op.names(outputs)
            empty = np.empty((0, len(names)))
            return columns.score_columns(
                n, inputs, np.empty((0, 5)), names, empty, empty, fpr, primary
            )
        outputs = self._run(inputs, mode)
        stats, scores, p = op.evaluate_outputs(outputs)
        names, primary = op.names(outputs)
        return columns.score_columns(n, inputs, op.summary(stats), names, scores, p, fpr, primary)

    def decode(self, n: int, inputs: Inputs) -> dict:
        pixels = self._run(inputs)[0] if inputs.ok else torch.empty(0, *self.info.image_shape)
        return columns.image_columns(n, inputs.ok, pixels, self.spec.format, self.info.scale)

    def sample(self, block: Block) -> pa.Table:
        """Rows [start, stop) of the job: whole requests of the service's size (max_n),
        request r being the service's `sample` of its size with `request_seed(seed, r)`."""
        per, spec = self.op.limits.max_n, self.spec
        zs, seeds = [], []
        for first in range(block.start, block.stop, per):
            k = min(per, block.stop - first)
            seed = request_seed(spec.seed, first // per)
            params = {"n": k, "seed": seed, "temperature": float(spec.temperature)}
            zs.append(self.op.parse_tensors({}, params).x)
            seeds += [seed] * k
        ids = list(range(block.start, block.stop))
        inputs = Inputs(torch.cat(zs), list(range(len(ids))), {})
        pixels = self._run(inputs)[0]
        cols = {"seed": pa.array(seeds, pa.int64())}
        cols |= columns.image_columns(len(ids), inputs.ok, pixels, spec.format, self.info.scale)
        return columns.table(ids, inputs, cols)

    def write_pngs(self, table: pa.Table) -> None:
        """`--images DIR`: each answered image also as a PNG file, DIR/<id>.png (either
        format: `pixels` are written as the service writes its PNGs)."""
        folder = locate(self.spec.images)
        if "image" in table.column_names:
            pngs = table.column("image").to_pylist()
        else:  # the fixed-size lists' values as one array, not as Python floats
            col = table.column("pixels").combine_chunks()
            values = col
            while pa.types.is_fixed_size_list(values.type):
                values = values.values
            c, h, w = self.info.image_shape
            pixels = values.to_numpy().reshape(len(col), *((h, w) if c == 1 else (h, w, c)))
            valid = col.is_valid().to_numpy(zero_copy_only=False)
            pngs = [
                images.png_bytes(p, self.info.scale) if ok else None
                for p, ok in zip(pixels, valid, strict=True)
            ]
        for rid, png in zip(table.column("id").to_pylist(), pngs, strict=True):
            if png is None:
                continue
            loc = folder.join(png_name(rid))
            loc.fs.create_dir(loc.path.rsplit("/", 1)[0], recursive=True)
            write_atomic(loc, png)


def png_name(rid: int | str) -> str:
    """An id as a file name under --images: 00000042.png for an index; for a path or a
    Parquet id, its own relative path (never leaving the folder) with .png appended
    unless it ends so."""
    if isinstance(rid, int):
        return f"{rid:08d}.png"
    parts = [p for p in str(rid).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    name = "/".join(parts) or "_"
    return name if name.lower().endswith(".png") else name + ".png"
