"""The thin TorchServe adapter: BaseHandler in, `handlers.engine` does the work.

TorchServe calls `handle(data, context)` with its dynamic batch: `data[i]` is
the i-th request as {parameter name: value}. The handler returns a list with
one body (text, or bytes for binary tensors) per request; TorchServe sends
element i verbatim as the body of request i, with the status, content type and
headers set for index i via `context.set_response_status(code, phrase, idx)`
and friends
(ts/protocol/otf_message_handler.py `create_predict_response`). So a bad
request gets its own 400 while its neighbours get 200. Exceptions never leave
`handle` for input reasons; if one did, TorchServe would answer the whole batch
503 (ts/service.py) but keep the worker alive.

Metrics leave the worker as TorchServe's backend metric lines on stdout, which
the frontend parses (org.pytorch.serve.metrics.Metric) into its Prometheus
registry. The adapter writes a batch's lines in one logging call, in the format
of `ts.metrics.caching_metric` (a test compares the two), because going through
`context.metrics` costs a logging call per line, a noticeable part of the
handler's time on single-image requests.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from http import HTTPStatus
from pathlib import Path

from ts.metrics.unit import Units
from ts.torch_handler.base_handler import BaseHandler

import handlers
from handlers.device import keep_freed_memory, set_cpu_threads
from handlers.engine import Engine
from handlers.metrics import BASE_DIMS, SPECS, Recorder
from handlers.options import HandlerOptions
from handlers.wire.protocol import wire_protocol
from handlers.wire.request import RawRequest, media_type

log = logging.getLogger(__name__)
# metric lines go to the worker's stdout, where the frontend reads them
metric_log = logging.getLogger("latentserve.metrics")
metric_log.setLevel(logging.INFO)
UNITS = Units().units  # TorchServe prints "s" as "Seconds", "count" as "Count", ...
PER_BATCH_LINE = "Backend received inference at"  # ts/protocol/otf_message_handler.py


def quiet_per_batch_line(record: logging.LogRecord) -> bool:
    """Root logger filter: drop the worker's INFO line of every batch (a stdout write
    the frontend reads and deploy/log4j2.xml discards); everything else passes."""
    return not (isinstance(record.msg, str) and record.msg.startswith(PER_BATCH_LINE))


def metric_lines(
    rec: Recorder, model_name: str, handler_ms: float, host: str, timestamp: int
) -> list[str]:
    """A batch's observations as TorchServe backend metric lines.

    `[METRICS]<name>.<unit>:<value>|#<dim>:<value>,...|#type:<TYPE>|#hostname:<host>,<ts>`,
    dimensions ModelName and Level first, then the metric's own in declared order
    (the frontend matches them by position). The last line is TorchServe's
    HandlerTime gauge (`handler_ms`), which BaseHandler.handle would have emitted.
    """
    tail = f"|#hostname:{host},{timestamp}"
    lines = []
    for o in rec.observations:
        spec = SPECS[o.name]
        values = (model_name, "Model", *o.labels)
        dims = ",".join(f"{d}:{v}" for d, v in zip(BASE_DIMS + spec.dims, values, strict=True))
        unit, kind = UNITS.get(spec.unit, spec.unit), spec.kind.upper()
        lines.append(f"[METRICS]{o.name}.{unit}:{o.value}|#{dims}|#type:{kind}{tail}")
    lines.append(
        f"[METRICS]HandlerTime.{UNITS['ms']}:{handler_ms}|#ModelName:{model_name},Level:Model"
        f"|#type:GAUGE{tail}"
    )
    return lines


def raw_request(row: dict, headers: dict) -> RawRequest:
    """TorchServe's per-request dict + its headers -> RawRequest.

    The body arrives as parameter "body" (raw POST) or "data" (a form field of
    that name); a form with a single field also works. Parameter headers map a
    parameter name to {"content-type": ...}; request headers are plain strings,
    kept with lower-case names. The wire (JSON API or v2) follows from the
    headers TorchServe adds per route and the body (`wire.wire_protocol`).
    """
    http = {k.lower(): v for k, v in headers.items() if isinstance(v, str)}
    name = next((k for k in ("body", "data") if k in row), None)
    if name is None and len(row) == 1:
        name = next(iter(row))
    if name is not None:
        part = headers.get(name)
        ctype = part.get("content-type") if isinstance(part, dict) else None
        body = row[name]
        return RawRequest(body, media_type(ctype), wire_protocol(http, body), http)
    return RawRequest(None, media_type(http.get("content-type")), wire_protocol(http, None), http)


class LatentHandler(BaseHandler):
    """BaseHandler's lifecycle around an `Engine`: `handle` passes the whole batch to
    `Engine.handle` once (so BaseHandler's preprocess/inference/postprocess go unused)."""

    operation = ""  # encode | decode | sample, set by the entry-point subclass

    def initialize(self, context) -> None:
        # Receive bodies as bytes: the handler then knows their size and answers
        # bad JSON with its own 400. (TorchServe's worker reads this variable on
        # every request; by default it json-decodes application/json bodies.)
        os.environ["TS_DECODE_INPUT_REQUEST"] = "false"
        logging.getLogger().addFilter(quiet_per_batch_line)
        self.context, self.manifest = context, context.manifest
        self.host = socket.gethostname()
        props = context.system_properties
        options = HandlerOptions.from_config(getattr(context, "model_yaml_config", None))
        set_cpu_threads(options.cpu_threads)
        kept = options.keep_freed_memory and keep_freed_memory()
        self.engine = Engine.from_dir(
            Path(props["model_dir"]), self.operation, options, props.get("gpu_id")
        )
        self.engine.warmup()
        self.engine.model_name = context.model_name
        self.engine.model_version = str(self.manifest.get("model", {}).get("modelVersion", "1.0"))
        self.initialized = True
        info, where = self.engine.op.info, self.engine.placement
        log.info(
            "latentserve %s of %s (%s, latent %d, %s) on %s %s, %d thread(s), chunk %d, "
            "freed memory kept: %s; code from %s",
            self.operation,
            info.name,
            info.kind,
            info.latent_dim,
            options.model_format,
            where.device,
            where.dtype,
            options.cpu_threads,
            options.chunk_size,
            kept,
            Path(handlers.__file__).parent,
        )

    def handle(self, data: list[dict], context) -> list[str]:
        start = time.time()
        raws = [
            raw_request(row or {}, context.get_all_request_header(idx) or {})
            for idx, row in enumerate(data)
        ]
        replies, rec = self.engine.handle(raws)
        for idx, reply in enumerate(replies):
            context.set_response_status(reply.status, HTTPStatus(reply.status).phrase, idx)
            context.set_response_content_type(idx, reply.content_type)
            for key, value in reply.headers.items():
                context.set_response_header(idx, key, value)
        handler_ms = round((time.time() - start) * 1000, 2)
        lines = metric_lines(rec, context.model_name, handler_ms, self.host, int(time.time()))
        metric_log.info("\n".join(lines))
        return [reply.body for reply in replies]
