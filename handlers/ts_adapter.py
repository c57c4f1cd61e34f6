"""The thin TorchServe adapter: BaseHandler in, `handlers.engine` does the work.

TorchServe calls `handle(data, context)` with its dynamic batch: `data[i]` is
the i-th request as {parameter name: value}. The handler returns a list with
one JSON string per request; TorchServe sends element i verbatim as the body
of request i, with the status, content type and headers set for index i via
`context.set_response_status(code, phrase, idx)` and friends
(ts/protocol/otf_message_handler.py `create_predict_response`). So a bad
request gets its own 400 while its neighbours get 200. Exceptions never leave
`handle` for input reasons; if one did, TorchServe would answer the whole batch
503 (ts/service.py) but keep the worker alive.
"""

from __future__ import annotations

import logging
import os
import time
from http import HTTPStatus
from pathlib import Path

import torch
from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler

import handlers
from handlers.codecs import RawRequest, media_type
from handlers.device import placement, set_cpu_threads
from handlers.engine import Batch, Engine, Reply
from handlers.limits import LIMITS
from handlers.metrics import SPECS, Recorder
from handlers.operations import FILES, OPERATIONS, ModelInfo, load_script
from handlers.options import HandlerOptions

log = logging.getLogger(__name__)


def raw_request(row: dict, headers: dict) -> RawRequest:
    """TorchServe's per-request dict + its headers -> RawRequest.

    The body arrives as parameter "body" (raw POST) or "data" (a form field of
    that name); a form with a single field also works. Parameter headers map a
    parameter name to {"content-type": ...}; request headers are plain strings.
    """
    name = next((k for k in ("body", "data") if k in row), None)
    if name is None and len(row) == 1:
        name = next(iter(row))
    if name is not None:
        part = headers.get(name)
        ctype = part.get("content-type") if isinstance(part, dict) else None
        return RawRequest(row[name], media_type(ctype))
    http_ctype = next(
        (v for k, v in headers.items() if k.lower() == "content-type" and isinstance(v, str)), None
    )
    return RawRequest(None, media_type(http_ctype))


class LatentHandler(BaseHandler):
    operation = ""  # encode | decode | sample, set by the entry-point subclass

    def initialize(self, context) -> None:
        # Receive bodies as bytes: the handler then knows their size and answers
        # bad JSON with its own 400. (TorchServe's worker reads this variable on
        # every request; by default it json-decodes application/json bodies.)
        os.environ["TS_DECODE_INPUT_REQUEST"] = "false"
        self.context, self.manifest = context, context.manifest
        props = context.system_properties
        model_dir = Path(props["model_dir"])
        options = HandlerOptions.from_config(getattr(context, "model_yaml_config", None))
        set_cpu_threads(options.cpu_threads)
        self.placement = placement(props.get("gpu_id"), options)
        self.device = torch.device(self.placement.device)
        info = ModelInfo.from_dir(model_dir)
        module = load_script(model_dir, info, FILES[self.operation], self.placement)
        op = OPERATIONS[self.operation](info, module, LIMITS)
        self.engine = Engine(op, options, self.placement)
        self.engine.warmup()
        self.initialized = True
        log.info(
            "latentserve %s of %s (%s, latent %d) on %s %s, %d thread(s), chunk %d; code from %s",
            self.operation,
            info.name,
            info.kind,
            info.latent_dim,
            self.placement.device,
            self.placement.dtype,
            options.cpu_threads,
            options.chunk_size,
            Path(handlers.__file__).parent,
        )

    # LitServe's shape on TorchServe's names: decode -> predict -> encode.
    def preprocess(self, data: list[dict]) -> Batch:
        raws = []
        for idx, row in enumerate(data):
            headers = self.context.get_all_request_header(idx) or {}
            raws.append(raw_request(row or {}, headers))
        return self.engine.decode_inputs(raws)

    def inference(self, batch: Batch, *args, **kwargs) -> Batch:
        return self.engine.run_model(batch)

    def postprocess(self, batch: Batch) -> list[Reply]:
        return self.engine.encode_outputs(batch)

    def handle(self, data: list[dict], context) -> list[str]:
        start = time.time()
        self.context = context
        batch = self.preprocess(data)
        replies = self.postprocess(self.inference(batch))
        for idx, reply in enumerate(replies):
            context.set_response_status(reply.status, HTTPStatus(reply.status).phrase, idx)
            context.set_response_content_type(idx, "application/json")
            for key, value in reply.headers.items():
                context.set_response_header(idx, key, value)
        self._flush(batch.recorder)
        if context.metrics is not None:
            context.metrics.add_time("HandlerTime", round((time.time() - start) * 1000, 2))
        return [reply.body for reply in replies]

    def _flush(self, rec: Recorder) -> None:
        metrics = self.context.metrics
        if metrics is None:
            return
        base = [Dimension("ModelName", self.context.model_name), Dimension("Level", "Model")]
        for o in rec.observations:
            spec = SPECS[o.name]
            dims = base + [Dimension(d, v) for d, v in zip(spec.dims, o.labels, strict=True)]
            metrics.add_metric(o.name, o.value, spec.unit, None, dims, MetricTypes(spec.kind))
