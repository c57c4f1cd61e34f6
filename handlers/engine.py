"""One dynamic batch of requests through an operation, each request isolated.

TorchServe hands a handler a list of requests (its dynamic batch); each request
may carry many items. `Engine.handle` takes the batch through three stages
(the `Stage` label values, `handlers.metrics.STAGES`):

1. parse: read every request on its own. A bad one gets its own error reply
   (400 with the field) and takes no further part.
2. run: concatenate the items of the good requests, run the model in chunks of
   at most `chunk_size` items under `torch.inference_mode()`, and split each
   model output back by the requests' item counts (in order). Requests that
   ask the model to run another way (`Parsed.variant`: score's `mode`) run as
   their own concatenation.
3. respond: each request writes its answer from exactly its own slices.

Each request arrives on one of two wires (`RawRequest.protocol`): the
project's JSON API, or the Open Inference Protocol (v2), which
`handlers.wire.v2_read` / `v2_write` read and write around the same operations
(`Operation.parse_tensors` / `outputs`), so both run the same model in the same
batch. One `Request` record per request carries its state through the stages.
The result is one `Reply` per request, in request order: status, body (text,
or bytes for binary tensors), content type and headers. Diagnostic headers say
which batch a request shared (`X-Latentserve-Batch-Id`) and its size in
requests and model items.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from handlers.device import Placement, placement
from handlers.errors import RequestError
from handlers.limits import LIMITS
from handlers.manifest import ModelInfo, model_files
from handlers.metrics import STAGES, Recorder
from handlers.model import load_module, package_max_batch
from handlers.operations import OPERATIONS, Operation, Outputs, Parsed
from handlers.options import HandlerOptions
from handlers.wire import v2_read, v2_write
from handlers.wire.protocol import V2
from handlers.wire.request import RawRequest

log = logging.getLogger(__name__)

BATCH_ID = "X-Latentserve-Batch-Id"
BATCH_REQUESTS = "X-Latentserve-Batch-Requests"
BATCH_ITEMS = "X-Latentserve-Batch-Items"
PARSE, RUN, RESPOND = STAGES


@dataclass
class Reply:
    status: int
    body: str | bytes
    code: str | None = None  # error code for non-200 replies
    items: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class Request:
    """One request's way through the batch. A set `reply` ends it: an error, or its answer."""

    raw: RawRequest
    call: v2_read.Call | None = None  # a v2 request, read
    parsed: Parsed | None = None
    outputs: Outputs = ()  # its slice of each model output
    reply: Reply | None = None


def _cat(parts: list[Outputs]) -> Outputs:
    """Several chunks' (or requests') outputs -> one tensor per model output."""
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat(column) for column in zip(*parts, strict=True))


def _by_variant(requests: list[Request]) -> dict[str | None, list[Request]]:
    """Requests by how the model runs for them (`Parsed.variant`), each group in order."""
    groups: dict[str | None, list[Request]] = {}
    for r in requests:
        groups.setdefault(r.parsed.variant, []).append(r)
    return groups


def _error(err: RequestError, protocol: str) -> Reply:
    body = v2_write.write_error(err) if protocol == V2 else err.to_json()
    return Reply(err.status, body, err.code)


def _internal(what: str, protocol: str) -> Reply:
    log.exception("internal error during %s", what)
    err = RequestError("internal_error", "body", f"internal error during {what}", 500)
    return _error(err, protocol)


class Engine:
    def __init__(self, op: Operation, options: HandlerOptions, placement: Placement) -> None:
        self.op, self.options, self.placement = op, options, placement
        # the names v2 answers carry; the TorchServe adapter sets the registered ones
        self.model_name, self.model_version = f"{op.info.name}-{op.name}", "1.0"

    @classmethod
    def from_dir(
        cls,
        model_dir: Path,
        operation: str,
        options: HandlerOptions | None = None,
        gpu_id: int | None = None,
    ) -> Engine:
        """The engine of `operation` (encode | decode | sample | score) on an exported model.

        Reads manifest.json, places the model (`cuda:<gpu_id>` when CUDA is
        present, else the CPU), loads the files the operation needs in the
        options' `model_format` (TorchScript or AOTInductor packages) after
        checking their sha256, and applies the serving limits.
        """
        options = options or HandlerOptions()
        where = placement(gpu_id, options)
        info = ModelInfo.from_dir(model_dir)
        files = model_files(operation, options.model_format)
        modules = tuple(load_module(model_dir, info, f, where) for f in files)
        if options.model_format == "aoti" and options.chunk_size > package_max_batch(info):
            raise ValueError(
                f"handler option chunk_size {options.chunk_size} exceeds the packages' "
                f"largest batch {package_max_batch(info)}"
            )
        module = modules[0] if len(modules) == 1 else modules
        limits = LIMITS.for_image(info.image_shape)
        return cls(OPERATIONS[operation](info, module, limits), options, where)

    def handle(self, raws: list[RawRequest]) -> tuple[list[Reply], Recorder]:
        """A batch of requests -> one reply per request (in order), and the batch's metrics."""
        rec, name = Recorder(), self.op.name
        requests = [Request(raw) for raw in raws]
        with rec.stage(name, PARSE):
            self.parse(requests)
        live = [r for r in requests if r.reply is None]
        if live:
            with rec.stage(name, RUN):
                self.run(live, rec)
        with rec.stage(name, RESPOND), torch.inference_mode():
            self.respond([r for r in live if r.reply is None])
        self._finish(requests, rec)
        return [r.reply for r in requests], rec

    # ---- the three stages ----------------------------------------------------
    def parse(self, requests: list[Request]) -> None:
        op = self.op
        for r in requests:
            try:
                if r.raw.protocol == V2:
                    r.call = v2_read.read_call(r.raw, op.limits)
                    r.parsed = op.parse_tensors(r.call.inputs, r.call.parameters)
                    v2_read.check_outputs(r.call, op.output_names(r.parsed), op.name)
                else:
                    r.parsed = op.parse(r.raw)
            except RequestError as err:
                r.reply = _error(err, r.raw.protocol)
            except Exception:  # a bug must not take the batch down
                r.reply = _internal("request parsing", r.raw.protocol)

    def run(self, live: list[Request], rec: Recorder) -> None:
        for variant, group in _by_variant(live).items():
            try:
                x = torch.cat([r.parsed.x for r in group])
                attempt = Recorder()  # kept only if the whole group succeeds
                sizes = [r.parsed.items for r in group]
                outputs = self.run_chunks(x, attempt, variant)
                per_output = [torch.split(y, sizes) for y in outputs]
                for i, r in enumerate(group):
                    r.outputs = tuple(parts[i] for parts in per_output)
                rec.observations += attempt.observations
            except Exception:
                log.exception("model failed on the whole batch; retrying request by request")
                for r in group:
                    try:
                        r.outputs = self.run_chunks(r.parsed.x, rec, variant)
                    except Exception:
                        r.reply = _internal("model inference", r.raw.protocol)

    def respond(self, live: list[Request]) -> None:
        for r in live:
            try:
                if r.call is None:
                    r.reply = Reply(200, self.op.respond(r.parsed, r.outputs))
                else:
                    named, params = self.op.outputs(r.parsed, r.outputs)
                    body, ctype, headers = v2_write.write_response(
                        self.model_name, self.model_version, r.call, named, params
                    )
                    r.reply = Reply(200, body, headers=headers, content_type=ctype)
                r.reply.items = r.parsed.items
            except RequestError as err:
                r.reply = _error(err, r.raw.protocol)
            except Exception:
                r.reply = _internal("response writing", r.raw.protocol)

    # ---- helpers -------------------------------------------------------------
    def run_chunks(self, x: torch.Tensor, rec: Recorder, variant: str | None = None) -> Outputs:
        """The model on `x` in chunks of at most `chunk_size` items; each output on the CPU."""
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(x), self.options.chunk_size):
                chunk = x[start : start + self.options.chunk_size]
                y = self.op.forward(self.placement.to_input(chunk), variant)
                outputs = y if isinstance(y, tuple) else (y,)  # a VAE encoder returns two
                chunks.append(tuple(self.placement.to_output(t) for t in outputs))
                rec.add("latentserve_model_batch_items", len(chunk), Operation=self.op.name)
            return _cat(chunks)

    def warmup(self, rounds: int = 3) -> None:
        """Run the model a few times at load: TorchScript profiles and optimises on
        its first calls, and an AOTInductor package initialises its runtime on the
        first, which would otherwise land on the first requests."""
        for n in (1, 2, 1)[:rounds]:
            self.run_chunks(self.op.example(n), Recorder())

    def _finish(self, requests: list[Request], rec: Recorder) -> None:
        op, batch_id = self.op.name, uuid.uuid4().hex[:16]
        ok = [r for r in requests if r.reply.status == 200]
        for group in _by_variant(ok).values():
            try:
                with torch.inference_mode():
                    self.op.observe(_cat([r.outputs for r in group]), rec)
            except Exception:
                log.exception("recording %s metrics failed", op)
        rec.add("latentserve_batch_requests", len(requests), Operation=op)
        rec.add("latentserve_items_total", sum(r.reply.items for r in ok), Operation=op)
        headers = {
            BATCH_ID: batch_id,
            BATCH_REQUESTS: str(len(requests)),
            BATCH_ITEMS: str(sum(r.parsed.items for r in requests if r.parsed is not None)),
        }
        for r in requests:
            if r.reply.status != 200:
                rec.add("latentserve_rejected_total", 1, Operation=op, Reason=r.reply.code)
            r.reply.headers.update(headers)
