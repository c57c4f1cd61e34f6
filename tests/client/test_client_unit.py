"""LatentClient's own logic with a scripted transport (no server): splitting,
ordering, retries, backoff waits, error parsing. The real server is exercised
in test_client_live.py."""

import base64
import io
import json
import threading

import numpy as np
import pytest
import requests
from PIL import Image

from client import LatentClient, LatentServeError, RetryPolicy


class Scripted(LatentClient):
    """Answers encode from the request itself: z_mean = [first pixel, item index]."""

    def __init__(self, script=(), **kwargs):
        kwargs.setdefault("retry", RetryPolicy(retries=3, base_delay=0.1, jitter=0.0))
        self.waits = []
        super().__init__("http://127.0.0.1:9", sleep=self.waits.append, **kwargs)
        self.script = list(script)  # per attempt: None = answer, int = status, Exception
        self.bodies = []
        self.lock = threading.Lock()

    def _post_once(self, url, body):
        with self.lock:
            self.bodies.append((url, json.loads(body)))
            step = self.script.pop(0) if self.script else None
        if isinstance(step, Exception):
            raise step
        if isinstance(step, tuple):
            return step
        if isinstance(step, int):
            return (
                step,
                {},
                b'{"code": %d, "type": "ServiceUnavailableException", ' % step
                + (b'"message": "Model has no worker to serve inference request"}'),
            )
        payload = json.loads(body)
        if url.endswith("-encode"):
            preds = []
            for inst in payload["instances"]:
                img = Image.open(io.BytesIO(base64.b64decode(inst["image_b64"])))
                first = float(np.asarray(img)[0, 0])
                preds.append({"z_mean": [first, 0.0], "z_log_var": [0.0, 0.0]})
            return 200, {}, json.dumps({"predictions": preds}).encode()
        n = len(payload.get("instances", [])) or payload.get("n")
        img = Image.new("L", (28, 28), 7)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        b64 = base64.b64encode(buf.getvalue()).decode()
        return 200, {}, json.dumps({"predictions": [{"image_b64": b64}] * n}).encode()


def numbered(n):
    """n uint8 images whose first pixel is their index (mod 256)."""
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 0, 0] = np.arange(n) % 256
    return images


def test_splits_into_requests_of_batch_size_and_keeps_input_order():
    client = Scripted(batch_size=7, concurrency=3)
    out = client.encode(numbered(50))
    sizes = sorted(len(b["instances"]) for _, b in client.bodies)
    assert sizes == [1] + [7] * 7
    assert out.z_mean[:, 0].tolist() == list(range(50))
    assert out.z_mean.dtype == np.float32 and out.z_log_var.shape == (50, 2)
    assert client.stats.requests == 8 and client.stats.items == 50 and client.stats.retries == 0
    assert all(
        url == "http://127.0.0.1:9/predictions/fashion-vae-encode" for url, _ in client.bodies
    )


def test_progress_counts_every_item():
    done = []
    Scripted(batch_size=16).encode(numbered(40), progress=done.append)
    assert sorted(done) == [8, 16, 16]


def test_retries_503_507_and_connection_errors_with_growing_waits():
    script = [503, requests.ConnectionError("refused"), 507]
    client = Scripted(script, batch_size=256)
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


def test_retry_after_header_sets_the_wait():
    client = Scripted([(503, {"Retry-After": "1.5"}, b"busy")])
    client.decode([0.0, 0.0])
    assert client.waits == [1.5]


def test_non_json_error_body_is_kept_as_message():
    client = Scripted([(404, {}, b"<html>nope</html>")], model="nope")
    with pytest.raises(LatentServeError, match="HTTP 404: <html>nope</html>"):
        client.decode([0.0, 0.0])


def test_wrong_item_count_in_answer_is_an_error():
    client = Scripted([(200, {}, b'{"predictions": []}')])
    with pytest.raises(LatentServeError, match="asked for 1 items, the answer has 0"):
        client.decode([0.0, 0.0])


def test_sample_splits_at_256_with_consecutive_seeds():
    client = Scripted(concurrency=2)
    images = client.sample(600, seed=41, temperature=0.5)
    assert len(images) == 600 and images[0].size == (28, 28)
    sent = sorted((b["seed"], b["n"], b["temperature"]) for _, b in client.bodies)
    assert sent == [(41, 256, 0.5), (42, 256, 0.5), (43, 88, 0.5)]


def test_sample_without_seed_draws_and_reports_one():
    client = Scripted()
    client.sample(3)
    assert client.last_seed == client.bodies[0][1]["seed"]


def test_decode_splits_and_sends_vectors():
    client = Scripted(batch_size=2)
    z = np.arange(10, dtype=np.float32).reshape(5, 2)
    assert len(client.decode(z)) == 5
    sent = [
        inst["z"]
        for _, b in sorted(client.bodies, key=lambda ub: ub[1]["instances"][0]["z"])
        for inst in b["instances"]
    ]
    assert sent == z.tolist()
    assert all(b["format"] == "png" for _, b in client.bodies)


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
        def _post_once(self, url, body):
            n = len(json.loads(body)["instances"])
            preds = [{"z_mean": [1.0, 2.0, 3.0], "z_log_var": None}] * n
            return 200, {}, json.dumps({"predictions": preds}).encode()

    out = AE(batch_size=2).encode(numbered(3))
    assert out.z_mean.shape == (3, 3) and out.z_log_var is None and out.z is None


def test_cli_takes_negative_latents():
    from client.cli import _glue_z, build_parser

    argv = _glue_z(["decode", "--z", "-1,0.5", "--z", "2,-3", "--out", "x.png"])
    assert build_parser().parse_args(argv).z == [[-1.0, 0.5], [2.0, -3.0]]
