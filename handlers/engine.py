"""One dynamic batch of requests through an operation, each request isolated.

TorchServe hands a handler a list of requests (its dynamic batch); each request
may carry many items. The engine flattens both levels:

1. decode_inputs: parse every request on its own. A bad one gets its own
   error reply (400 with the field) and takes no further part.
2. run_model: concatenate the items of the good requests, run the model in
   chunks of at most `chunk_size` items under `torch.inference_mode()`, and
   split the output back by each request's item count (in order).
3. encode_outputs: each request turns exactly its own slice into its answer.

The result is one `Reply` per request, in request order: status, JSON body and
headers. Diagnostic headers say which batch a request shared
(`X-Latentserve-Batch-Id`) and its size in requests and model items.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

import torch

from handlers.codecs import RawRequest
from handlers.device import Placement
from handlers.errors import RequestError
from handlers.metrics import Recorder
from handlers.operations import Operation, Parsed
from handlers.options import HandlerOptions

log = logging.getLogger(__name__)

BATCH_ID = "X-Latentserve-Batch-Id"
BATCH_REQUESTS = "X-Latentserve-Batch-Requests"
BATCH_ITEMS = "X-Latentserve-Batch-Items"


@dataclass
class Reply:
    status: int
    body: str
    code: str | None = None  # error code for non-200 replies
    items: int = 0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Batch:
    """Per-request state through the three stages (index = request index)."""

    parsed: list[Parsed | None]
    replies: list[Reply | None]
    outputs: list[torch.Tensor | None]
    recorder: Recorder
    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    @property
    def live(self) -> list[int]:
        return [i for i, r in enumerate(self.replies) if r is None]


def _error(err: RequestError) -> Reply:
    return Reply(err.status, err.to_json(), err.code)


def _internal(what: str) -> Reply:
    log.exception("internal error during %s", what)
    return _error(RequestError("internal_error", "body", f"internal error during {what}", 500))


class Engine:
    def __init__(self, op: Operation, options: HandlerOptions, placement: Placement) -> None:
        self.op, self.options, self.placement = op, options, placement

    # ---- the three stages ----------------------------------------------------
    def decode_inputs(self, raws: list[RawRequest]) -> Batch:
        n = len(raws)
        batch = Batch([None] * n, [None] * n, [None] * n, Recorder())
        with self._stage(batch, "decode_input"):
            for i, raw in enumerate(raws):
                try:
                    batch.parsed[i] = self.op.parse(raw)
                except RequestError as err:
                    batch.replies[i] = _error(err)
                except Exception:  # a bug must not take the batch down
                    batch.replies[i] = _internal("input decoding")
        return batch

    def run_model(self, batch: Batch) -> Batch:
        live = batch.live
        if not live:
            return batch
        with self._stage(batch, "model"):
            try:
                x = torch.cat([batch.parsed[i].x for i in live])
                attempt = Recorder()  # kept only if the whole batch succeeds
                y = self._chunked(x, attempt)
                parts = torch.split(y, [batch.parsed[i].items for i in live])
                for i, part in zip(live, parts, strict=True):
                    batch.outputs[i] = part
                batch.recorder.observations += attempt.observations
            except Exception:
                log.exception("model failed on the whole batch; retrying request by request")
                for i in live:
                    try:
                        batch.outputs[i] = self._chunked(batch.parsed[i].x, batch.recorder)
                    except Exception:
                        batch.replies[i] = _internal("model inference")
        return batch

    def encode_outputs(self, batch: Batch) -> list[Reply]:
        with self._stage(batch, "encode_output"), torch.inference_mode():
            for i in batch.live:
                try:
                    text = self.op.respond(batch.parsed[i], batch.outputs[i])
                    batch.replies[i] = Reply(200, text, items=batch.parsed[i].items)
                except RequestError as err:
                    batch.replies[i] = _error(err)
                except Exception:
                    batch.replies[i] = _internal("output encoding")
        self._finish(batch)
        return batch.replies

    def handle(self, raws: list[RawRequest]) -> tuple[list[Reply], Recorder]:
        batch = self.decode_inputs(raws)
        self.run_model(batch)
        return self.encode_outputs(batch), batch.recorder

    def warmup(self, rounds: int = 3) -> None:
        """Run the model a few times at load: TorchScript optimises on its first calls
        (about 35 ms instead of 1 ms), which would otherwise land on the first requests."""
        for n in (1, 2, 1)[:rounds]:
            self._chunked(self.op.example(n), Recorder())

    # ---- helpers -------------------------------------------------------------
    def _chunked(self, x: torch.Tensor, rec: Recorder) -> torch.Tensor:
        parts = []
        with torch.inference_mode():
            for start in range(0, len(x), self.options.chunk_size):
                chunk = x[start : start + self.options.chunk_size]
                y = self.op.forward(self.placement.to_input(chunk))
                parts.append(self.placement.to_output(y))
                rec.add("latentserve_model_batch_items", len(chunk), Operation=self.op.name)
        return torch.cat(parts)

    def _stage(self, batch: Batch, stage: str):
        return _Timed(batch.recorder, self.op.name, stage)

    def _finish(self, batch: Batch) -> None:
        rec, op = batch.recorder, self.op.name
        ok = [i for i, r in enumerate(batch.replies) if r.status == 200]
        model_items = sum(p.items for p in batch.parsed if p is not None)
        try:
            with torch.inference_mode():
                self.op.observe([batch.outputs[i] for i in ok], rec)
        except Exception:
            log.exception("recording %s metrics failed", op)
        rec.add("latentserve_batch_requests", len(batch.replies), Operation=op)
        rec.add("latentserve_items_total", sum(batch.replies[i].items for i in ok), Operation=op)
        for r in batch.replies:
            if r.status != 200:
                rec.add("latentserve_rejected_total", 1, Operation=op, Reason=r.code)
            r.headers.update(
                {
                    BATCH_ID: batch.batch_id,
                    BATCH_REQUESTS: str(len(batch.replies)),
                    BATCH_ITEMS: str(model_items),
                }
            )


class _Timed:
    """Context manager recording a stage's wall time (seconds) into the recorder."""

    def __init__(self, rec: Recorder, op: str, stage: str) -> None:
        self.rec, self.op, self.stage = rec, op, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        seconds = time.perf_counter() - self.start
        self.rec.add("latentserve_stage_seconds", seconds, Operation=self.op, Stage=self.stage)
