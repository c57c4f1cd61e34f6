"""What the client knows of a model's endpoint: `ModelInfo`, from the server's metadata.

The server answers `GET /v2/models/<model>-<op>` with the Open Inference
Protocol's model metadata; latentserve puts the model's facts in its
`parameters` (`kind`, `latent_dim`, `image_shape` [C, H, W], `pixel_scale`) and
describes the image tensor as [-1, H, W] (one channel) or [-1, H, W, C] (colour).
`parse` reads such a document and checks it, so that a wrong one is a clear
`LatentServeError` instead of requests of the wrong shape.

A server older than the metadata endpoint answers 404. `fallback` then decides:
the shape the caller gave (`LatentClient(image_shape=...)`), else, for one of the
shipped models (`SHIPPED`, all 1 x 28 x 28), what the client knows of it; any
other model is an error saying that the server gives no metadata.
`read_answer` turns the GET's answer into a ModelInfo: `parse` for a 200, `fallback`
for a 404 or 405, a `LatentServeError` for any other status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from client.errors import LatentServeError
from client.limits import CHANNELS
from client.pixels import MODES, array_shape

OPERATIONS = ("encode", "decode", "sample", "score")
# The shipped models (model_store/): kind and latent_dim, all 1 x 28 x 28 grayscale.
# A copy, like client/limits.py: tests/client/test_metadata.py ties it to the manifests.
SHIPPED_SHAPE = (1, 28, 28)
SHIPPED = {
    "fashion-vae": ("vae", 32),
    "fashion-vae-2d": ("vae", 2),
    "fashion-ae": ("ae", 32),
    "mnist-vae-2d": ("vae", 2),
}
NO_METADATA = (404, 405)  # statuses of a server without the endpoint


@dataclass(frozen=True)
class ModelInfo:
    """One endpoint's model: `image_shape` is (C, H, W), C 1 (mode L) or 3 (RGB)."""

    model: str
    operation: str
    kind: str | None  # "ae" | "vae"; None when unknown (an old server, image_shape given)
    latent_dim: int | None
    image_shape: tuple[int, int, int]
    pixel_scale: float = 255.0  # uint8 / pixel_scale = the model's input
    source: str = "server"  # "server", "shipped" (old server, a shipped model) or "given"

    @property
    def channels(self) -> int:
        return self.image_shape[0]

    @property
    def hw(self) -> tuple[int, int]:
        return self.image_shape[1], self.image_shape[2]

    @property
    def mode(self) -> str:
        """The PIL mode of the model's images: L or RGB."""
        return MODES[self.channels]

    @property
    def array_shape(self) -> tuple[int, ...]:
        """One image as an array (as image libraries hold it): (H, W) or (H, W, C)."""
        return array_shape(self.image_shape)

    def describe(self) -> str:
        c, h, w = self.image_shape
        facts = [f"image {c}x{h}x{w} ({self.mode})"]
        if self.kind:
            facts.insert(0, self.kind)
        if self.latent_dim:
            facts.insert(1 if self.kind else 0, f"latent_dim {self.latent_dim}")
        where = {
            "server": "the server's metadata",
            "shipped": "assumed: the server gives no metadata and this is a shipped model",
            "given": "given by the caller: the server gives no metadata",
        }[self.source]
        return f"{self.model}-{self.operation}: {', '.join(facts)} ({where})"


def check_shape(shape, what: str = "image_shape") -> tuple[int, int, int]:
    """(C, H, W) with C in CHANNELS and positive sizes, or ValueError saying why."""
    if (
        not isinstance(shape, list | tuple)
        or len(shape) != 3
        or not all(type(d) is int and d >= 1 for d in shape)  # noqa: E721 (bool is no size)
    ):
        raise ValueError(f"{what} must be [C, H, W] of positive sizes, got {shape!r}")
    if shape[0] not in CHANNELS:
        raise ValueError(f"{what} {list(shape)}: C must be 1 (grayscale) or 3 (RGB)")
    return tuple(shape)


def parse(doc, model: str, operation: str, url: str | None = None) -> ModelInfo:
    """A metadata answer -> ModelInfo, checked; a wrong one raises LatentServeError."""

    def bad(why: str) -> LatentServeError:
        return LatentServeError(
            f"the server's metadata for {model}-{operation} is not usable: {why}",
            status=200,
            url=url,
        )

    # The names in the document are not checked: the server looks the document up by the
    # name asked for, and a model may be served under another name than its manifest's.
    if not isinstance(doc, dict):
        raise bad("not a JSON object")
    params = doc.get("parameters")
    if not isinstance(params, dict):
        raise bad("no 'parameters' object")
    if "operation" in params and params["operation"] != operation:
        raise bad(f"parameters.operation is {params['operation']!r}, expected {operation!r}")
    try:
        shape = check_shape(params.get("image_shape"), "parameters.image_shape")
    except ValueError as err:
        raise bad(str(err)) from None
    kind, dim = params.get("kind"), params.get("latent_dim")
    if kind is not None and not (isinstance(kind, str) and kind):
        raise bad(f"parameters.kind {kind!r} is not a name")
    if dim is not None and not (type(dim) is int and dim >= 1):  # noqa: E721
        raise bad(f"parameters.latent_dim {dim!r} is not a positive size")
    scale = params.get("pixel_scale", 255.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise bad(f"parameters.pixel_scale {scale!r} is not a positive number")
    c, h, w = shape
    image = [-1, h, w] if c == 1 else [-1, h, w, c]
    for side in ("inputs", "outputs"):
        tensors = doc.get(side, [])
        if not isinstance(tensors, list) or not all(isinstance(t, dict) for t in tensors):
            raise bad(f"'{side}' is not a list of tensors")
        for tensor in tensors:
            name, got = tensor.get("name"), tensor.get("shape")
            if name == "image" and got != image:
                raise bad(
                    f"tensor 'image' has shape {got}, but image_shape {list(shape)} means {image}"
                )
            if name in ("z", "z_mean", "z_log_var") and dim is not None and got != [-1, dim]:
                raise bad(f"tensor {name!r} has shape {got}, but latent_dim is {dim}")
    return ModelInfo(model, operation, kind, dim, shape, float(scale))


def fallback(
    model: str,
    operation: str,
    given: tuple[int, int, int] | None,
    error: LatentServeError,
) -> ModelInfo:
    """The info of a model whose server has no metadata endpoint (`error`, its 404):
    the shape the caller gave, else a shipped model's; else raises."""
    kind, dim = SHIPPED.get(model, (None, None))
    if given is not None:
        return ModelInfo(model, operation, kind, dim, given, source="given")
    if model in SHIPPED:
        return ModelInfo(model, operation, kind, dim, SHIPPED_SHAPE, source="shipped")
    raise LatentServeError(
        f"the server gives no metadata for {model}-{operation} ({error.message}), so the "
        "client cannot tell the model's image shape: the server predates the metadata "
        "endpoint or does not serve this model. Pass image_shape=(C, H, W) "
        "(--image-shape C,H,W) to use an old server; only the shipped models "
        f"({', '.join(SHIPPED)}) are known to be 1x28x28",
        status=error.status,
        code=error.code,
        url=error.url,
        attempts=error.attempts,
    )


def read_answer(
    status: int,
    content: bytes,
    url: str,
    attempts: int,
    model: str,
    operation: str,
    given: tuple[int, int, int] | None,
) -> ModelInfo:
    """The answer to `GET <url>` (after `attempts`) -> ModelInfo: `parse`d, else the
    `fallback` of a server without the endpoint; `given`, the caller's image_shape,
    must agree with the server's. Any other answer raises LatentServeError."""
    if status in NO_METADATA:
        error = LatentServeError.from_response(status, content, url, attempts)
        return fallback(model, operation, given, error)
    if status != 200:
        raise LatentServeError.from_response(status, content, url, attempts)
    try:
        doc = json.loads(content)
    except ValueError:
        doc = None
    info = parse(doc, model, operation, url)
    if given is not None and info.image_shape != given:
        raise LatentServeError(
            f"the server says {model}-{operation} has image_shape "
            f"{list(info.image_shape)}, the client was given {list(given)}",
            status=200,
            url=url,
        )
    return info
