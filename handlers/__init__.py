"""Serving logic for latentserve: encode / decode / sample over TorchScript exports.

Everything in this package is packed into the TorchServe archives, so it imports
only torch, numpy, Pillow, pydantic and the standard library. The plain modules
(`limits`, `errors`, `schemas`, `codecs`, `device`, `options`, `batching`,
`metrics`, `operations`, `engine`) hold all the model logic and never import
`ts`; the thin TorchServe adapters live in `ts_adapter.py` and the three
`*_handler.py` entry points (one class each, as TorchServe's loader expects).
"""
