"""Open Inference Protocol (KServe v2) requests built by hand, for tests.

tritonclient (tests/integration/test_protocol.py) only sends well-formed
requests; the error tests need bodies that are wrong on purpose (a header
length past the body, short buffers, sizes that do not match the shape), so
they build them here, byte by byte, as the binary extension lays them out:
the JSON header, then the binary inputs concatenated in "inputs" order.

    header = {"inputs": [binary_input("image", images)]}
    resp = post_v2(server, "fashion-vae-encode", *v2_body(header, images.tobytes()))
    meta, tensors = read_v2(resp)        # a 200: its JSON and every output as an array
"""

from __future__ import annotations

import json

import numpy as np
import requests

HEADER_LENGTH = "Inference-Header-Content-Length"

DTYPES = {
    "UINT8": np.uint8, "INT8": np.int8, "FP32": np.float32, "FP64": np.float64, "BOOL": np.bool_
}  # fmt: skip


def datatype(array: np.ndarray) -> str:
    return next(name for name, dt in DTYPES.items() if np.dtype(dt) == array.dtype)


def binary_input(
    name: str, array: np.ndarray, dtype: str | None = None, *, size: int | None = None
) -> dict:
    """The JSON description of a binary input (its bytes go after the header): the
    array's own datatype and byte count unless `dtype` or `size` say otherwise."""
    return {
        "name": name,
        "shape": list(array.shape),
        "datatype": datatype(array) if dtype is None else dtype,
        "parameters": {"binary_data_size": array.nbytes if size is None else size},
    }


def json_input(name: str, array: np.ndarray) -> dict:
    """A JSON input: flat row-major data (numbers as Python scalars)."""
    return {
        "name": name,
        "shape": list(array.shape),
        "datatype": datatype(array),
        "data": array.ravel().tolist(),
    }


def v2_body(
    header: dict, *parts: bytes, header_length: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """-> (body, HTTP headers): JSON header + binary parts, and the header length
    (the real one unless `header_length` overrides it). No binary part and no
    override: a plain JSON body, no length header (what tritonclient sends then)."""
    text = json.dumps(header, allow_nan=True).encode()
    headers = {"Content-Type": "application/octet-stream"}
    if parts or header_length is not None:
        headers[HEADER_LENGTH] = str(len(text) if header_length is None else header_length)
    else:
        headers["Content-Type"] = "application/json"
    return text + b"".join(parts), headers


def binary_body(name: str, array: np.ndarray, /, **desc) -> tuple[bytes, dict[str, str]]:
    """One binary input, its description changed by `desc` (the bytes are the array's)."""
    return v2_body({"inputs": [binary_input(name, array) | desc]}, array.tobytes())


def json_body(*inputs: dict, **top) -> tuple[bytes, dict[str, str]]:
    """JSON inputs and top-level fields (parameters, outputs), no binary part."""
    return v2_body({"inputs": list(inputs), **top})


def infer_url(server, endpoint: str) -> str:
    return f"{server.url}/v2/models/{endpoint}/infer"


def post_v2(
    server, endpoint: str, body: bytes, headers: dict | None = None, session=None
) -> requests.Response:
    return (session or requests).post(
        infer_url(server, endpoint), data=body, headers=headers or {}, timeout=120
    )


def read_v2(resp: requests.Response) -> tuple[dict, dict[str, np.ndarray]]:
    """A 200 v2 answer -> (its JSON, {output name: array}), JSON or binary outputs."""
    assert resp.status_code == 200, resp.text[:500]
    return split_v2(resp.content, resp.headers.get(HEADER_LENGTH))


def read_reply(reply) -> tuple[dict, dict[str, np.ndarray]]:
    """The engine's 200 v2 `Reply` -> (its JSON, {output name: array})."""
    assert reply.status == 200, reply.body
    body = reply.body if isinstance(reply.body, bytes) else reply.body.encode()
    return split_v2(body, reply.headers.get(HEADER_LENGTH))


def split_v2(body: bytes, length: str | None) -> tuple[dict, dict[str, np.ndarray]]:
    """A v2 answer's bytes and its header-length header -> (JSON, {name: array})."""
    cut = int(length) if length is not None else len(body)
    meta = json.loads(body[:cut])
    tensors, offset = {}, cut
    for out in meta["outputs"]:
        dtype = np.dtype(DTYPES[out["datatype"]]).newbyteorder("<")
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is None:
            arr = np.asarray(out["data"], dtype=dtype)
        else:
            arr = np.frombuffer(body[offset : offset + size], dtype=dtype)
            offset += size
        tensors[out["name"]] = arr.reshape(out["shape"])
    assert offset == len(body), f"{len(body) - offset} bytes after the last output"
    return meta, tensors
