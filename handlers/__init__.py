"""Serving logic for latentserve: encode / decode / sample / score over exported models.

Everything in this package is packed into the TorchServe archives, so it imports
only torch, numpy, Pillow, pydantic and the standard library. Inside a worker a
batch flows adapter -> engine -> operation -> model, through the stages parse ->
run -> respond:

- `ts_adapter` (with the one-class entry points `encode_handler`,
  `decode_handler`, `sample_handler`, `score_handler`): the only modules that
  import `ts`; TorchServe's batch in, per-request status, headers and metric
  lines out.
- `engine`: builds an engine from a model directory (`Engine.from_dir`) and
  takes a batch through the three stages, each request isolated.
- `operations/`: encode, decode, sample and score, a module each on a shared
  base (parse one request, run the model, respond with that request's slice);
  `calibration`: score's statistics and calibrated p-values.
- `model`: the manifest (`ModelInfo`) and loading the exported modules.
- `wire/`: the wire formats (the project's JSON API, the Open Inference
  Protocol, images), which the operations call and which import none of them.
- `limits`, `errors`: the API's limits and 400s, shared by the wire and the
  operations.
- `device`, `options`, `metrics`: placement and tuning, the custom metrics.
"""
