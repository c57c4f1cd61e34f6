"""A no-op TorchServe handler: the framework ceiling of `make bench`.

It answers every request of a batch with a fixed reply (`reply.json` in the
archive: the exact bytes the real encode handler returns for the same payload),
with the same status, content type and headers as the real handler, and does no
parsing, no model run and no response writing. Requests/s of this archive under the
same payloads, batching settings and concurrency are what TorchServe (frontend,
worker protocol, Python worker loop) allows at most.
"""

from __future__ import annotations

import os

_REPLY: list[str] = []
_HEADERS = {
    "X-Latentserve-Batch-Id": "0000000000000000",
    "X-Latentserve-Batch-Requests": "1",
    "X-Latentserve-Batch-Items": "1",
}


def handle(data, context):
    if data is None:  # TorchServe's load call: initialize
        os.environ["TS_DECODE_INPUT_REQUEST"] = "false"  # bodies stay bytes, as in ours
        path = os.path.join(context.system_properties["model_dir"], "reply.json")
        with open(path) as f:
            _REPLY[:] = [f.read()]
        return None
    for idx in range(len(data)):
        context.set_response_status(200, "OK", idx)
        context.set_response_content_type(idx, "application/json")
        for key, value in _HEADERS.items():
            context.set_response_header(idx, key, value)
    return _REPLY * len(data)
