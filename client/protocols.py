"""The two wire formats `LatentClient` speaks, with one interface per operation.

- `V2` (the default): the Open Inference Protocol at `/v2/models/<model>-<op>/infer`
  with binary tensors (client/v2.py): no PNG, base64 or JSON floats on either side.
- `JsonApi`: latentserve's JSON API at `/predictions/<model>-<op>` (instances in,
  predictions out; PNG images as base64).

Each writes one request of a chunk -> (body, headers) and reads its 200 answer ->
arrays or images, checked (a wrong answer raises `LatentServeError`). Images are
the model's shape (C, H, W), from its metadata (client/metadata.py): requests
carry images of that shape, and answers must have it: PIL images of mode L or
RGB, arrays (N, H, W) or (N, H, W, C). The splitting, concurrency and retries
around them are the client's (client/api.py, client/transport.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from client.errors import LatentServeError
from client.limits import BODY_BUDGET, MAX_ABS_LATENT
from client.pixels import Shape, array_shape, to_instance, to_tensor
from client.results import images, read_answer
from client.v2 import Expected, read_infer_response, write_infer_request

Request = tuple[bytes, dict[str, str]]  # body, headers (added to the session's own)
Images = list[Image.Image] | np.ndarray


@dataclass(frozen=True)
class Reply:
    """A 200 answer to one request of `items` items, and where it came from."""

    body: bytes
    headers: Mapping[str, str]
    url: str
    model_name: str  # <model>-<operation>
    items: int


class JsonApi:
    name = "json"

    def path(self, model_name: str) -> str:
        return f"/predictions/{model_name}"

    def encode_request(self, items: Sequence[Any], seed: int | None, shape: Shape) -> Request:
        payload: dict = {"instances": instances(items, shape)}
        if seed is not None:
            payload.update(sample=True, seed=seed)
        return json_body(payload)

    def read_encoded(self, reply: Reply, seed: int | None) -> dict[str, np.ndarray | None]:
        preds = read_answer(reply.body, reply.url, reply.items)["predictions"]
        arrays: dict[str, np.ndarray | None] = {
            "z_mean": np.asarray([p["z_mean"] for p in preds], dtype=np.float32),
            "z_log_var": None,
            "z": None,
        }
        if preds[0].get("z_log_var") is not None:
            arrays["z_log_var"] = np.asarray([p["z_log_var"] for p in preds], dtype=np.float32)
        if seed is not None:
            arrays["z"] = np.asarray([p["z"] for p in preds], dtype=np.float32)
        return arrays

    def decode_request(self, zs: np.ndarray, as_array: bool) -> Request:
        payload: dict = {"instances": [{"z": row} for row in zs.tolist()]}
        payload["format"] = "array" if as_array else "png"
        return json_body(payload)

    def sample_request(self, n: int, seed: int, temperature: float, as_array: bool) -> Request:
        fmt = "array" if as_array else "png"
        return json_body({"n": n, "seed": seed, "temperature": temperature, "format": fmt})

    def read_images(
        self, reply: Reply, as_array: bool, seed: int | None = None, shape: Shape | None = None
    ) -> Images:
        preds = read_answer(reply.body, reply.url, reply.items)["predictions"]
        return images(preds, as_array, shape, reply.url)


def instances(items: Sequence[Any], shape: Shape) -> list[dict]:
    """A chunk of images -> JSON API instances, each within its share of the body."""
    budget = BODY_BUDGET // max(1, len(items))
    return [to_instance(x, shape, budget) for x in items]


def json_body(payload: dict) -> Request:
    return json.dumps(payload, separators=(",", ":")).encode(), {}


class V2:
    name = "v2"

    def path(self, model_name: str) -> str:
        return f"/v2/models/{model_name}/infer"

    def encode_request(self, items: Sequence[Any], seed: int | None, shape: Shape) -> Request:
        params = {} if seed is None else {"sample": True, "seed": seed}
        return write_infer_request({"image": to_tensor(items, shape)}, params)

    def read_encoded(self, reply: Reply, seed: int | None) -> dict[str, np.ndarray | None]:
        code = Expected(("FP32",), (reply.items, "D"))
        expected = {
            "z_mean": code,
            "z_log_var": Expected(code.datatypes, code.shape, required=False),  # a VAE's
        }
        if seed is not None:
            expected["z"] = code
        answer = _read(reply, expected, seed)
        return {name: answer.get(name) for name in ("z_mean", "z_log_var", "z")}

    def decode_request(self, zs: np.ndarray, as_array: bool) -> Request:
        # float32 when every value is one decode accepts (the server computes in float32,
        # so this is its own cast); else the caller's float64, for the server to name.
        ok = np.all(np.abs(zs) <= MAX_ABS_LATENT)  # False for NaN
        z = zs.astype(np.float32) if ok else zs.astype(np.float64)
        return write_infer_request({"z": z}, _image_params(as_array))

    def sample_request(self, n: int, seed: int, temperature: float, as_array: bool) -> Request:
        params = {"n": n, "seed": seed, "temperature": temperature, **_image_params(as_array)}
        return write_infer_request({}, params)

    def read_images(
        self, reply: Reply, as_array: bool, seed: int | None = None, shape: Shape | None = None
    ) -> Images:
        """The answer's `image`: [N, H, W] or [N, H, W, C] of the model's `shape` (without
        one, as before metadata: [N, H, W] of any size)."""
        datatype = "FP32" if as_array else "UINT8"
        dims = ("H", "W") if shape is None else array_shape(shape)
        expected = {"image": Expected((datatype,), (reply.items, *dims))}
        pixels = _read(reply, expected, seed)["image"]
        if as_array:
            if not np.all((pixels >= 0.0) & (pixels <= 1.0)):
                raise LatentServeError(
                    "not a valid inference answer: FP32 image values outside [0, 1]",
                    status=200,
                    url=reply.url,
                )
            return pixels
        mode = "L" if pixels.ndim == 3 else "RGB"
        return [Image.fromarray(p, mode) for p in pixels]


def _image_params(as_array: bool) -> dict:
    return {"image_datatype": "FP32"} if as_array else {}


def _read(reply: Reply, expected: dict[str, Expected], seed: int | None) -> dict[str, np.ndarray]:
    answer = read_infer_response(
        reply.body, reply.headers, expected, model_name=reply.model_name, url=reply.url
    )
    if seed is not None and answer.parameters.get("seed") != seed:
        raise LatentServeError(
            f"not a valid inference answer: seed {answer.parameters.get('seed')!r}, sent {seed}",
            status=200,
            url=reply.url,
        )
    return answer.outputs


PROTOCOLS = {p.name: p for p in (V2(), JsonApi())}
