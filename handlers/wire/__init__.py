"""The wire formats: how requests arrive and answers leave, apart from what the model does.

- `protocol`: which wire a request uses (the project's JSON API or the Open
  Inference Protocol), from the headers TorchServe passes and the body.
- `request`: `RawRequest` (a request as the server hands it over) and the
  checks both wires share (pydantic errors as 400s, value ranges).
- `json_read` / `json_write` / `json_schemas`: the project's JSON API
  (`{"instances": [...]}` in, `{"predictions": [...]}` out) and its pydantic
  models, from which `docs/api/` is written.
- `v2_read` / `v2_write` / `v2_schemas`: the Open Inference Protocol (KServe
  v2), JSON tensors and the binary tensor extension.
- `images`: PNG/JPEG in (checked, converted to the model's mode and size) and out.
- `inputs`: images on either wire -> the model's input tensor.

Nothing here imports the operations, the engine or the model loader
(`tests/test_layout.py` checks it): an operation calls the wire, never the
other way round.
"""
