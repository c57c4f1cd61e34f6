"""A LatentClient with a scripted transport, for the unit tests (no server).

`Scripted` plays a script of failures first (per attempt: an int status, an
exception to raise, or a ready (status, headers, body) answer), then answers
like a tiny server, in whichever protocol the client speaks: encode gives
z_mean = [first pixel, 0], decode and sample give images of 7s (every channel)
of the served model's image shape (`served_shape`, (C, H, W); 1 x 28 x 28 unless
told). Every request is recorded as a `Sent` (the same fields for both
protocols), so one test can check both protocols' splitting, seeds and limits.

It also answers the model's metadata, `GET /v2/models/<model>-<op>`
(`metadata=True`, the contract's document for `served_shape`), or as an old
server does (`metadata=404`), or with a given document (a dict) or answer (a
(status, headers, body) tuple); each GET is kept in `gets` (the operation).
"""

from __future__ import annotations

import base64
import io
import json
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from client import LatentClient, RetryPolicy
from tests.client.v2server import metadata_doc, read_request, write_response

NO_WORKER = (
    b'{"code": 503, "type": "ServiceUnavailableException", '
    b'"message": "Model has no worker to serve inference request"}'
)
# What TorchServe answers for a path it has no route for (an old server's metadata GET)
NOT_FOUND = (
    b'{"code": 404, "type": "ResourceNotFoundException", '
    b'"message": "Requested resource is not found, please refer to API document."}'
)


@dataclass
class Sent:
    url: str
    operation: str  # encode | decode | sample
    items: int  # images or vectors in the request, or sample's n
    params: dict  # request-level parameters (the JSON API: every key but instances)
    first: list  # encode: each image's first pixel value; decode: each z vector
    shape: tuple = ()  # encode over v2: the image tensor's shape and datatype
    dtype: str = ""


class Scripted(LatentClient):
    def __init__(self, script=(), *, served_shape=(1, 28, 28), metadata=True, **kwargs):
        kwargs.setdefault("retry", RetryPolicy(retries=3, base_delay=0.1, jitter=0.0))
        self.waits = []
        super().__init__("http://127.0.0.1:9", sleep=self.waits.append, **kwargs)
        self.script = list(script)
        self.sent: list[Sent] = []
        self.gets: list[str] = []
        self.served_shape, self.metadata = tuple(served_shape), metadata
        self.lock = threading.Lock()

    def _get_once(self, url):
        prefix = f"http://127.0.0.1:9/v2/models/{self.model}-"
        assert url.startswith(prefix), url
        operation = url.removeprefix(prefix)
        with self.lock:
            self.gets.append(operation)
        if isinstance(self.metadata, tuple):
            return self.metadata
        if isinstance(self.metadata, int) and not isinstance(self.metadata, bool):
            return self.metadata, {}, NOT_FOUND if self.metadata == 404 else NO_WORKER
        doc = self.metadata
        if doc is True:
            doc = metadata_doc(self.model, operation, self.served_shape)
        return 200, {"Content-Type": "application/json"}, json.dumps(doc).encode()

    def _post_once(self, url, body, headers):
        sent = read_sent(url, body, headers)
        with self.lock:
            self.sent.append(sent)
            step = self.script.pop(0) if self.script else None
        if isinstance(step, Exception):
            raise step
        if isinstance(step, tuple):
            return step
        if isinstance(step, int):
            return step, {}, NO_WORKER
        return 200, *self.answer(sent)

    def image_array_shape(self) -> tuple:
        c, h, w = self.served_shape
        return (h, w) if c == 1 else (h, w, c)

    def answer(self, sent: Sent) -> tuple[dict, bytes]:
        """(headers, body) of a 200 answer to `sent`."""
        n, model_name = sent.items, f"{self.model}-{sent.operation}"
        one = self.image_array_shape()
        if sent.operation == "encode":
            z_mean = np.asarray([[float(f), 0.0] for f in sent.first], np.float32)
            codes = {"z_mean": z_mean, "z_log_var": np.zeros_like(z_mean)}
            if sent.params.get("sample"):
                codes["z"] = z_mean + 1
        as_array = sent.params.get("format") == "array" or "image_datatype" in sent.params
        if self.protocol.name == "v2":
            if sent.operation != "encode":
                pixels = np.full((n, *one), 7, np.uint8)
                codes = {"image": pixels.astype(np.float32) / 255 if as_array else pixels}
            seed = sent.params.get("seed")
            body, headers = write_response(
                model_name, codes, None if seed is None else {"seed": seed}
            )
            return headers, body
        if sent.operation == "encode":
            preds = [{k: v[i].tolist() for k, v in codes.items()} for i in range(n)]
        elif as_array:
            preds = [{"pixels": np.full(one, 7 / 255).tolist()}] * n
        else:
            preds = [{"image_b64": png_b64(np.full(one, 7, np.uint8))}] * n
        return {}, json.dumps({"predictions": preds}).encode()


def png_b64(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB").save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def read_sent(url: str, body: bytes, headers: dict) -> Sent:
    operation = url.split("-")[-1].removesuffix("/infer")
    if "/v2/models/" in url:
        doc, tensors = read_request(body, headers)
        params = doc.get("parameters", {})
        shape, dtype = (), ""
        if operation == "encode":
            image = tensors["image"]
            first = image.reshape(len(image), -1)[:, 0].tolist()
            shape, dtype = image.shape, image.dtype.name
        else:
            first = tensors["z"].tolist() if operation == "decode" else []
        items = len(tensors["image" if operation == "encode" else "z"]) if tensors else params["n"]
        return Sent(url, operation, items, params, first, shape, dtype)
    payload = json.loads(body)
    params = {k: v for k, v in payload.items() if k != "instances"}
    instances = payload.get("instances", [])
    if operation == "encode":
        first = [first_pixel(inst) for inst in instances]
    else:
        first = [inst["z"] for inst in instances]
    return Sent(url, operation, len(instances) or payload["n"], params, first)


def first_pixel(instance: dict) -> float:
    if "pixels" in instance:
        value = instance["pixels"]
        while isinstance(value, list):
            value = value[0]
        return value
    img = Image.open(io.BytesIO(base64.b64decode(instance["image_b64"])))
    return float(np.asarray(img).reshape(-1)[0])
