"""tritonclient's own request bytes through the engine, and its parser on our answers (no server).

`InferenceServerClient.generate_request_body` builds a body exactly as
`client.infer` sends it; `parse_response_body` reads an answer as `client.infer`
does. The live round trip is in tests/integration.
"""

from __future__ import annotations

import numpy as np
import tritonclient.http as th

from handlers.wire.request import RawRequest
from handlers.wire.v2_write import HEADER_LENGTH
from tests.handlers.tiny import LATENT, make_engine


def as_raw(inputs, outputs=None, parameters=None) -> RawRequest:
    body, json_size = th.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, parameters=parameters
    )
    headers = {"explain": "False"}
    if json_size is not None:
        headers["inference-header-content-length"] = str(json_size)
    return RawRequest(body, None, "v2", headers)


def parse(reply) -> th.InferResult:
    assert reply.status == 200, reply.body
    body = reply.body.encode() if isinstance(reply.body, str) else reply.body
    length = reply.headers.get(HEADER_LENGTH)
    return th.InferenceServerClient.parse_response_body(
        body, header_length=None if length is None else int(length)
    )


def test_tritonclient_encode_decode_sample_binary_and_json(vae_dir):
    images = np.random.default_rng(8).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    results = {}
    for binary in (True, False):
        image = th.InferInput("image", list(images.shape), "UINT8")
        image.set_data_from_numpy(images, binary_data=binary)
        outputs = [th.InferRequestedOutput(n, binary_data=binary) for n in ("z_mean", "z_log_var")]
        (reply,), _ = make_engine(vae_dir, "encode").handle([as_raw([image], outputs)])
        results[binary] = parse(reply)
    z = results[True].as_numpy("z_mean")
    assert z.shape == (5, LATENT) and z.dtype == np.float32
    assert np.array_equal(z, results[False].as_numpy("z_mean"))
    assert np.array_equal(results[True].as_numpy("z_log_var"), results[False].as_numpy("z_log_var"))

    latent = th.InferInput("z", [5, LATENT], "FP32")
    latent.set_data_from_numpy(z)  # binary by default; no outputs named: all come binary
    (reply,), _ = make_engine(vae_dir, "decode").handle([as_raw([latent])])
    assert HEADER_LENGTH in reply.headers
    pixels = parse(reply).as_numpy("image")
    assert pixels.shape == (5, 28, 28) and pixels.dtype == np.uint8

    raws = [as_raw([], parameters={"n": 3, "seed": 1, "image_datatype": "FP32"})] * 2
    (a, b), _ = make_engine(vae_dir, "sample").handle(raws)
    first, second = parse(a), parse(b)
    assert first.get_response()["parameters"] == {"seed": 1, "temperature": 1.0}
    assert first.as_numpy("image").dtype == np.float32
    # the same seed gives the same latents; a batched decoder may differ in the last bits
    assert np.allclose(first.as_numpy("image"), second.as_numpy("image"), atol=1e-6)
