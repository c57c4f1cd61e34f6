"""A LatentClient with a scripted transport, for the unit tests (no server).

`Scripted` plays a script of failures first (per attempt: an int status, an
exception to raise, or a ready (status, headers, body) answer), then answers
like a tiny server, in whichever protocol the client speaks: encode gives
z_mean = [first pixel, 0], decode and sample give images of 7s. Every request
is recorded as a `Sent` (the same fields for both protocols), so one test can
check both protocols' splitting, seeds and limits.
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
from tests.client.v2server import read_request, write_response

NO_WORKER = (
    b'{"code": 503, "type": "ServiceUnavailableException", '
    b'"message": "Model has no worker to serve inference request"}'
)


@dataclass
class Sent:
    url: str
    operation: str  # encode | decode | sample
    items: int  # images or vectors in the request, or sample's n
    params: dict  # request-level parameters (the JSON API: every key but instances)
    first: list  # encode: each image's first pixel; decode: each z vector


class Scripted(LatentClient):
    def __init__(self, script=(), **kwargs):
        kwargs.setdefault("retry", RetryPolicy(retries=3, base_delay=0.1, jitter=0.0))
        self.waits = []
        super().__init__("http://127.0.0.1:9", sleep=self.waits.append, **kwargs)
        self.script = list(script)
        self.sent: list[Sent] = []
        self.lock = threading.Lock()

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

    def answer(self, sent: Sent) -> tuple[dict, bytes]:
        """(headers, body) of a 200 answer to `sent`."""
        n, model_name = sent.items, f"{self.model}-{sent.operation}"
        if sent.operation == "encode":
            z_mean = np.asarray([[float(f), 0.0] for f in sent.first], np.float32)
            codes = {"z_mean": z_mean, "z_log_var": np.zeros_like(z_mean)}
            if sent.params.get("sample"):
                codes["z"] = z_mean + 1
        as_array = sent.params.get("format") == "array" or "image_datatype" in sent.params
        if self.protocol.name == "v2":
            if sent.operation != "encode":
                pixels = np.full((n, 28, 28), 7, np.uint8)
                codes = {"image": pixels.astype(np.float32) / 255 if as_array else pixels}
            seed = sent.params.get("seed")
            body, headers = write_response(
                model_name, codes, None if seed is None else {"seed": seed}
            )
            return headers, body
        if sent.operation == "encode":
            preds = [{k: v[i].tolist() for k, v in codes.items()} for i in range(n)]
        elif as_array:
            preds = [{"pixels": np.full((28, 28), 7 / 255).tolist()}] * n
        else:
            preds = [{"image_b64": png_b64(np.full((28, 28), 7, np.uint8))}] * n
        return {}, json.dumps({"predictions": preds}).encode()


def png_b64(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def read_sent(url: str, body: bytes, headers: dict) -> Sent:
    operation = url.split("-")[-1].removesuffix("/infer")
    if "/v2/models/" in url:
        doc, tensors = read_request(body, headers)
        params = doc.get("parameters", {})
        if operation == "encode":
            first = tensors["image"][:, 0, 0].tolist()
        else:
            first = tensors["z"].tolist() if operation == "decode" else []
        items = len(tensors["image" if operation == "encode" else "z"]) if tensors else params["n"]
        return Sent(url, operation, items, params, first)
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
        return instance["pixels"][0][0]
    img = Image.open(io.BytesIO(base64.b64decode(instance["image_b64"])))
    return float(np.asarray(img)[0, 0])
