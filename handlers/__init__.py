"""Serving logic for latentserve: encode / decode / sample over TorchScript exports.

Everything in this package is packed into the TorchServe archives, so it imports
only torch, numpy, Pillow, pydantic and the standard library. Inside a worker a
batch flows adapter -> engine -> operation, through the stages parse -> run ->
respond:

- `ts_adapter` (with the one-class entry points `encode_handler`,
  `decode_handler`, `sample_handler`): the only modules that import `ts`;
  TorchServe's batch in, per-request status, headers and metric lines out.
- `engine`: builds an engine from a model directory (`Engine.from_dir`) and
  takes a batch through the three stages, each request isolated.
- `operations`: encode, decode and sample (parse one request, run the model,
  respond with that request's slice), on either wire.
- `model`: the manifest (`ModelInfo`) and loading the TorchScript file.
- `readers` / `writers` / `images`: request reading, response writing, PNG/JPEG
  (the project's JSON API).
- `v2_read` / `v2_write` / `v2_schemas`: the Open Inference Protocol (KServe
  v2) with binary tensors: the wire choice, tensors in, outputs out.
- `schemas`, `limits`, `errors`: the API's request models, limits and 400s.
- `device`, `options`, `metrics`: placement and tuning, the custom metrics.
"""
