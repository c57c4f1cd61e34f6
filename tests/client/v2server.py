"""The server's half of the Open Inference Protocol, written from the contract for
the client's unit tests: it reads what `client.v2.write_infer_request` sends and
writes answers for `client.v2.read_infer_response` to read. Independent of both
(plain json + numpy), so a round trip through it tests the client's codec and not
the codec against itself. The real server is in test_client_live.py.
"""

from __future__ import annotations

import json
import math

import numpy as np

DTYPES = {"UINT8": "u1", "FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "BOOL": "?"}


def read_request(body: bytes, headers: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """A request -> (its JSON part, its input tensors by name)."""
    length = {k.lower(): v for k, v in headers.items()}.get("inference-header-content-length")
    head_len = len(body) if length is None else int(length)
    doc = json.loads(body[:head_len])
    tensors, offset = {}, head_len
    for inp in doc["inputs"]:
        dtype, shape = np.dtype(DTYPES[inp["datatype"]]), inp["shape"]
        size = inp.get("parameters", {}).get("binary_data_size")
        if size is None:
            tensors[inp["name"]] = np.asarray(inp["data"], dtype).reshape(shape)
            continue
        assert size == math.prod(shape) * dtype.itemsize, inp
        tensors[inp["name"]] = np.frombuffer(body[offset : offset + size], dtype).reshape(shape)
        offset += size
    assert offset == len(body), "bytes left over after the binary inputs"
    return doc, tensors


def metadata_doc(
    model: str,
    operation: str,
    image_shape=(1, 28, 28),
    kind: str = "vae",
    latent_dim: int = 2,
    pixel_scale: float = 255.0,
) -> dict:
    """The contract's `GET /v2/models/<model>-<op>` answer (Open Inference Protocol
    model metadata, latentserve's facts in `parameters`)."""
    c, h, w = image_shape
    image = [-1, h, w] if c == 1 else [-1, h, w, c]
    code = lambda name: {"name": name, "datatype": "FP32", "shape": [-1, latent_dim]}  # noqa: E731
    pixels = {"name": "image", "datatype": "UINT8", "shape": image}
    inputs, outputs = {
        "encode": ([pixels], [code("z_mean")] + [code("z_log_var")] * (kind == "vae")),
        "decode": ([code("z")], [pixels]),
        "sample": ([], [pixels]),
        "score": ([pixels], [{"name": "scores", "datatype": "FP32", "shape": [-1, -1]}]),
    }[operation]
    return {
        "name": f"{model}-{operation}",
        "versions": ["1.0"],
        "platform": "latentserve",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {
            "model": model,
            "operation": operation,
            "kind": kind,
            "latent_dim": latent_dim,
            "image_shape": list(image_shape),
            "pixel_scale": pixel_scale,
        },
    }


def write_response(
    model_name: str, outputs: dict[str, np.ndarray], parameters=None, binary=True
) -> tuple[bytes, dict]:
    """Output tensors -> (body, headers) as the contract's server answers."""
    doc: dict = {"model_name": model_name, "model_version": "1.0", "outputs": []}
    if parameters:
        doc["parameters"] = parameters
    blobs = []
    for name, arr in outputs.items():
        datatype = next(k for k, v in DTYPES.items() if np.dtype(v) == arr.dtype.newbyteorder("<"))
        out = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            blobs.append(np.ascontiguousarray(arr, DTYPES[datatype]).tobytes())
            out["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            out["data"] = arr.reshape(-1).tolist()
        doc["outputs"].append(out)
    head = json.dumps(doc).encode()
    if not binary:
        return head, {"Content-Type": "application/json"}
    headers = {"Content-Type": "application/octet-stream"}
    headers["Inference-Header-Content-Length"] = str(len(head))
    return head + b"".join(blobs), headers
