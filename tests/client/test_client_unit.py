"""LatentClient's own logic with a scripted transport (no server, tests/client/fake.py):
splitting, ordering, retries, backoff waits, error parsing, for both protocols.
The real server is exercised in test_client_live.py."""

import json
from dataclasses import replace

import numpy as np
import pytest
import requests

from client import LatentClient, LatentServeError, RetryPolicy
from tests.client.fake import Scripted
from tests.client.v2server import write_response

PROTOCOLS = pytest.mark.parametrize("protocol", ["v2", "json"])


def numbered(n):
    """n uint8 images whose first pixel is their index (mod 256)."""
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 0, 0] = np.arange(n) % 256
    return images


@pytest.mark.parametrize(
    "protocol, path",
    [("v2", "/v2/models/fashion-vae-encode/infer"), ("json", "/predictions/fashion-vae-encode")],
)
def test_splits_into_requests_of_batch_size_and_keeps_input_order(protocol, path):
    client = Scripted(batch_size=7, concurrency=3, protocol=protocol)
    out = client.encode(numbered(50))
    assert sorted(s.items for s in client.sent) == [1] + [7] * 7
    assert out.z_mean[:, 0].tolist() == list(range(50))
    assert out.z_mean.dtype == np.float32 and out.z_log_var.shape == (50, 2) and out.z is None
    assert out.z_mean.flags.writeable and out.seed is None
    assert client.stats.requests == 8 and client.stats.items == 50 and client.stats.retries == 0
    assert {s.url for s in client.sent} == {"http://127.0.0.1:9" + path}


@PROTOCOLS
def test_progress_counts_every_item(protocol):
    done = []
    Scripted(batch_size=16, protocol=protocol).encode(numbered(40), progress=done.append)
    assert sorted(done) == [8, 16, 16]


@PROTOCOLS
def test_retries_503_507_and_connection_errors_with_growing_waits(protocol):
    script = [503, requests.ConnectionError("refused"), 507]
    client = Scripted(script, batch_size=256, protocol=protocol)
    out = client.encode(numbered(3))
    assert out.z_mean[:, 0].tolist() == [0, 1, 2]
    assert client.waits == pytest.approx([0.1, 0.2, 0.4])
    assert client.stats.retries == 3 and client.stats.requests == 4


def test_a_timeout_is_retried_and_the_last_one_is_reported():
    # TorchServe 0.12 never answers requests gathered for a worker that died
    client = Scripted([requests.ReadTimeout("read timed out")], batch_size=256)
    assert client.encode(numbered(2)).z_mean[:, 0].tolist() == [0, 1]
    assert client.stats.retries == 1 and client.waits == pytest.approx([0.1])
    client = Scripted([requests.ReadTimeout("read timed out")] * 10, batch_size=256)
    with pytest.raises(LatentServeError, match="no answer within 30.0 s") as info:
        client.decode([[0.0, 0.0]])
    assert info.value.attempts == 4


def test_torchserves_500_worker_died_is_retried_but_a_handler_500_is_not():
    died = (500, {}, b'{"code": 500, "type": "InternalServerException", "message": "Worker died."}')
    client = Scripted([died], batch_size=256)
    assert client.encode(numbered(2)).z_mean[:, 0].tolist() == [0, 1]
    assert client.stats.retries == 1
    bug = {"error": {"status": 500, "code": "internal_error", "field": "body", "message": "x"}}
    client = Scripted([(500, {}, json.dumps(bug).encode())], batch_size=256)
    with pytest.raises(LatentServeError) as info:
        client.encode(numbered(2))
    assert (info.value.status, info.value.code, info.value.attempts) == (500, "internal_error", 1)


def test_gives_up_after_the_cap_with_the_servers_message():
    client = Scripted([503] * 10, batch_size=256)
    with pytest.raises(LatentServeError) as info:
        client.encode(numbered(2))
    err = info.value
    assert err.status == 503 and err.attempts == 4
    assert err.code == "ServiceUnavailableException"
    assert "no worker" in str(err) and "4 attempts" in str(err)
    assert len(client.waits) == 3


def test_connection_failure_after_the_cap_is_a_latentserve_error():
    client = Scripted([requests.ConnectionError("refused")] * 10, batch_size=256)
    with pytest.raises(LatentServeError, match="cannot reach the server") as info:
        client.decode([[0.0, 0.0]])
    assert info.value.status is None and info.value.attempts == 4


def test_4xx_is_not_retried_and_carries_field_code_and_message():
    body = {
        "error": {
            "status": 400,
            "code": "wrong_latent_dim",
            "field": "instances[0].z",
            "message": "expected 2 values (the model's latent_dim), got 3",
        }
    }
    client = Scripted([(400, {}, json.dumps(body).encode())])
    with pytest.raises(LatentServeError) as info:
        client.decode([[0.0, 0.0, 0.0]])
    err = info.value
    assert (err.status, err.code, err.field) == (400, "wrong_latent_dim", "instances[0].z")
    assert err.attempts == 1 and client.waits == []
    assert str(err).startswith("HTTP 400 wrong_latent_dim at instances[0].z: expected 2 values")


def test_a_v2_error_is_carried_with_its_message_and_not_retried():
    body = {"error": "input 'z': shape [1, 3], expected [N, 2]"}
    client = Scripted([(400, {}, json.dumps(body).encode())])
    with pytest.raises(LatentServeError) as info:
        client.decode([[0.0, 0.0, 0.0]])
    err = info.value
    assert (err.status, err.code, err.field, err.attempts) == (400, None, None, 1)
    assert err.message == body["error"] and client.waits == []
    assert str(err) == (
        "HTTP 400: input 'z': shape [1, 3], expected [N, 2] "
        "[http://127.0.0.1:9/v2/models/fashion-vae-decode/infer]"
    )


def test_retry_after_header_sets_the_wait():
    client = Scripted([(503, {"Retry-After": "1.5"}, b"busy")])
    client.decode([0.0, 0.0])
    assert client.waits == [1.5]


def test_non_json_error_body_is_kept_as_message():
    client = Scripted([(404, {}, b"<html>nope</html>")], model="nope")
    with pytest.raises(LatentServeError, match="HTTP 404: <html>nope</html>"):
        client.decode([0.0, 0.0])


def test_wrong_item_count_in_answer_is_an_error():
    client = Scripted([(200, {}, b'{"predictions": []}')], protocol="json")
    with pytest.raises(LatentServeError, match="asked for 1 items, the answer has 0"):
        client.decode([0.0, 0.0])
    two = write_response("fashion-vae-decode", {"image": np.zeros((2, 28, 28), np.uint8)})
    client = Scripted([(200, two[1], two[0])])
    with pytest.raises(LatentServeError, match=r"shape \[2, 28, 28\], expected \[1, 28, 28\]"):
        client.decode([0.0, 0.0])


@PROTOCOLS
def test_sample_splits_at_256_with_consecutive_seeds(protocol):
    client = Scripted(concurrency=2, protocol=protocol)
    images = client.sample(600, seed=41, temperature=0.5)
    assert len(images) == 600 and images[0].size == (28, 28) and images[0].mode == "L"
    sent = sorted((s.params["seed"], s.items, s.params["temperature"]) for s in client.sent)
    assert sent == [(41, 256, 0.5), (42, 256, 0.5), (43, 88, 0.5)]
    pixels = client.sample(3, seed=1, as_array=True)
    assert pixels.shape == (3, 28, 28) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels, 7 / 255, atol=1e-6)


@PROTOCOLS
def test_sample_without_seed_draws_and_reports_one(protocol):
    client = Scripted(protocol=protocol)
    client.sample(3)
    assert client.last_seed == client.sent[0].params["seed"]


def test_a_v2_answer_with_another_seed_is_refused():
    client = Scripted()
    client.answer = lambda sent: Scripted.answer(
        client, replace(sent, params={**sent.params, "seed": 5})
    )
    with pytest.raises(LatentServeError, match="seed 5, sent 4"):
        client.sample(1, seed=4)
    with pytest.raises(LatentServeError, match="seed 5, sent 4"):
        client.encode(numbered(1), sample=True, seed=4)


@PROTOCOLS
def test_decode_splits_and_sends_vectors(protocol):
    client = Scripted(batch_size=2, protocol=protocol)
    z = np.arange(10, dtype=np.float32).reshape(5, 2)
    assert len(client.decode(z)) == 5
    assert sorted(v for s in client.sent for v in s.first) == z.tolist()
    assert sorted(s.items for s in client.sent) == [1, 2, 2]
    if protocol == "json":
        assert all(s.params["format"] == "png" for s in client.sent)
    else:
        assert all("image_datatype" not in s.params for s in client.sent)
    client.decode(z, as_array=True)
    if protocol == "json":
        assert client.sent[-1].params["format"] == "array"
    else:
        assert client.sent[-1].params["image_datatype"] == "FP32"


@PROTOCOLS
def test_encode_with_sample_sends_consecutive_seeds(protocol):
    client = Scripted(batch_size=2, protocol=protocol)
    out = client.encode(numbered(5), sample=True, seed=10)
    assert sorted(s.params["seed"] for s in client.sent) == [10, 11, 12]
    assert all(s.params["sample"] is True for s in client.sent)
    assert out.seed == 10 and np.array_equal(out.z, out.z_mean + 1)


def test_token_goes_in_the_bearer_header():
    client = LatentClient(token="s3cret")
    assert client._session().headers["Authorization"] == "Bearer s3cret"
    client.close()


def test_bad_arguments_fail_before_sending():
    with pytest.raises(ValueError):
        LatentClient(batch_size=257)
    with pytest.raises(LatentServeError, match="N x D"):
        Scripted().decode(np.zeros((2, 2, 2)))


def test_ae_answers_have_no_log_var():
    class AE(Scripted):
        def answer(self, sent):
            if self.protocol.name == "v2":  # an AE's answer has no z_log_var output
                z = np.tile(np.float32([1, 2, 3]), (sent.items, 1))
                body, headers = write_response("fashion-vae-encode", {"z_mean": z})
                return headers, body
            preds = [{"z_mean": [1.0, 2.0, 3.0], "z_log_var": None}] * sent.items
            return {}, json.dumps({"predictions": preds}).encode()

    for protocol in ("v2", "json"):
        out = AE(batch_size=2, protocol=protocol).encode(numbered(3))
        assert out.z_mean.shape == (3, 3) and out.z_log_var is None and out.z is None


def test_unknown_protocol_is_refused():
    with pytest.raises(ValueError, match="protocol must be one of"):
        LatentClient(protocol="grpc")


def test_cli_takes_negative_latents():
    from client.cli import _glue_z, build_parser

    argv = _glue_z(["decode", "--z", "-1,0.5", "--z", "2,-3", "--out", "x.png"])
    assert build_parser().parse_args(argv).z == [[-1.0, 0.5], [2.0, -3.0]]


def test_the_json_api_requests_are_the_same_bytes_as_before_the_protocol_choice():
    client = Scripted(protocol="json", retry=RetryPolicy(retries=0))
    bodies = []

    def refuse(url, body, headers):  # keep what was sent; answer 503, no retry
        bodies.append((body, headers))
        return 503, {}, b""

    client._post_once = refuse
    for call in (
        lambda: client.decode([[0.5, -1.0]]),
        lambda: client.sample(3, seed=7),
        lambda: client.encode(np.full((1, 1), 0.25), sample=True, seed=2),
    ):
        with pytest.raises(LatentServeError):
            call()
    assert bodies == [
        (b'{"instances":[{"z":[0.5,-1.0]}],"format":"png"}', {}),
        (b'{"n":3,"seed":7,"temperature":1.0,"format":"png"}', {}),
        (b'{"instances":[{"pixels":[[0.25]]}],"sample":true,"seed":2}', {}),
    ]
    session = client._session()
    assert session.headers["Content-Type"] == "application/json"
