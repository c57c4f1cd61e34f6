"""LatentClient and its CLI against a real TorchServe (fixture `server`, conftest.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from client import InputError, LatentClient, LatentServeError
from handlers.engine import Engine
from handlers.wire.request import RawRequest
from paths import ROOT
from tests.client.conftest import EXPLORER_MODEL, client_for


@pytest.fixture(scope="module")
def exported(server):
    """The served model's own TorchScript files, run in-process: the reference answer."""
    model_dir = server.models[0].model_dir
    enc = torch.jit.load(str(model_dir / "encoder.pt")).eval()
    dec = torch.jit.load(str(model_dir / "decoder.pt")).eval()
    return enc, dec, server.models[0].manifest


PROTOCOLS = pytest.mark.parametrize("protocol", ["v2", "json"])


def test_the_model_info_is_the_servers_or_the_shipped_fallback(server):
    """The server's metadata where it has the endpoint; an older server answers 404 and
    the shipped model is taken as 1 x 28 x 28 (client/metadata.py): either way the
    shape is the manifest's, and nothing is fetched twice."""
    manifest = server.models[0].manifest
    with client_for(server) as client:
        for operation in ("encode", "decode", "sample", "score"):
            info = client.model_info(operation)
            assert info.image_shape == tuple(manifest["image_shape"]) == (1, 28, 28)
            assert (info.kind, info.latent_dim) == (manifest["kind"], manifest["latent_dim"])
            assert info.source in ("server", "shipped"), info
            print(f"\n{info.describe()}")
        client.decode([[0.0, 0.0]])
        assert client.stats.metadata == 4


@PROTOCOLS
def test_round_trip_matches_the_exported_model_in_order(server, images, exported, protocol):
    enc, dec, manifest = exported
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    with torch.inference_mode():
        want_mean, want_log_var = (t.numpy() for t in enc(x))
    with client_for(server, batch_size=64, concurrency=4, protocol=protocol) as client:
        got = client.encode(images)
        assert client.stats.requests == 8 and client.stats.retries == 0
        np.testing.assert_allclose(got.z_mean, want_mean, atol=1e-4)
        np.testing.assert_allclose(got.z_log_var, want_log_var, atol=1e-4)
        recon = client.decode(got.z_mean, as_array=True)
        pngs = client.decode(got.z_mean[:8])
    with torch.inference_mode():
        want_recon = dec(torch.from_numpy(got.z_mean)).numpy()[:, 0]
    assert recon.shape == (512, 28, 28)
    np.testing.assert_allclose(recon, want_recon, atol=1e-5)
    # PNGs are the same pixels, 8-bit
    as8 = np.stack([np.asarray(im, dtype=np.float32) for im in pngs]) / 255.0
    np.testing.assert_allclose(as8, recon[:8], atol=1 / 255 + 1e-6)
    # a reconstruction, not noise: within 1.5x the test MSE the model recorded at training
    mse = float(np.mean((recon - images / 255.0) ** 2))
    recorded = manifest.get("metrics", {}).get("mse_per_pixel")
    assert mse < 1.5 * recorded if recorded else mse < 0.1, (mse, recorded)


@PROTOCOLS
def test_splitting_and_ordering_across_many_concurrent_requests(server, images, protocol):
    sub = images[:300]
    with client_for(server, batch_size=256, concurrency=1, protocol=protocol) as one:
        reference = one.encode(sub).z_mean
    with client_for(server, batch_size=7, concurrency=6, protocol=protocol) as many:
        done = []
        split = many.encode(sub, progress=done.append)
        assert many.stats.requests == math.ceil(300 / 7)
    assert sum(done) == 300
    np.testing.assert_allclose(split.z_mean, reference, atol=1e-5)
    # shuffling the input shuffles the answer the same way
    order = np.random.default_rng(0).permutation(300)
    with client_for(server, batch_size=13, concurrency=4, protocol=protocol) as client:
        shuffled = client.encode(sub[order]).z_mean
    np.testing.assert_allclose(shuffled, reference[order], atol=1e-5)


@PROTOCOLS
def test_every_input_kind_encodes_to_the_same_code(server, images, tmp_path, protocol):
    img = images[3]
    path = tmp_path / "img.png"
    Image.fromarray(img, "L").save(path)
    kinds = [img, img.astype(np.float32) / 255.0, Image.fromarray(img, "L"), path, str(path)]
    with client_for(server, protocol=protocol) as client:
        codes = client.encode(kinds).z_mean
        np.testing.assert_allclose(codes, np.repeat(codes[:1], len(kinds), axis=0), atol=1e-5)
        # a 56x56 RGB upload is converted (grayscale, resized: by the server over the JSON
        # API, by the client over the protocol, the same way)
        rgb = Image.fromarray(np.stack([img] * 3, axis=-1), "RGB").resize((56, 56))
        assert client.encode(rgb).z_mean.shape == (1, 2)


def test_v2_answers_equal_the_json_apis(server, images, tmp_path):
    """The same requests over both protocols: codes equal within float32 rounding, pixels
    exactly (the protocol's UINT8 image is the PNG's pixels)."""
    rgb = Image.fromarray(np.stack([images[5]] * 3, axis=-1), "RGB").resize((56, 56))
    rgb.save(tmp_path / "rgb.png")
    inputs = [images[:200], images[200:210] / 255.0, tmp_path / "rgb.png"]
    got = {}
    for protocol in ("v2", "json"):
        with client_for(server, batch_size=64, protocol=protocol) as client:
            codes = client.encode(inputs, sample=True, seed=11)
            got[protocol] = (
                codes,
                client.decode(codes.z_mean[:100]),
                client.decode(codes.z_mean[:100], as_array=True),
                client.sample(300, seed=5, temperature=0.7),
            )
    (v2, v2_png, v2_arr, v2_sample), (js, js_png, js_arr, js_sample) = got["v2"], got["json"]
    for name in ("z_mean", "z_log_var", "z"):
        np.testing.assert_allclose(getattr(v2, name), getattr(js, name), rtol=1e-6, atol=1e-6)
    assert v2.seed == js.seed == 11
    np.testing.assert_array_equal(np.stack(v2_png), np.stack(js_png))
    np.testing.assert_allclose(v2_arr, js_arr, atol=5e-7)  # the JSON API's 6 decimals
    np.testing.assert_array_equal(np.stack(v2_sample), np.stack(js_sample))
    assert all(im.mode == "L" and im.size == (28, 28) for im in v2_png + v2_sample)


@PROTOCOLS
def test_sample_is_deterministic_by_seed_and_splits_past_256(server, protocol):
    with client_for(server, protocol=protocol) as client:
        a = client.sample(12, seed=7, as_array=True)
        b = client.sample(12, seed=7, as_array=True)
        c = client.sample(12, seed=8, as_array=True)
        assert a.shape == (12, 28, 28) and np.array_equal(a, b) and not np.array_equal(a, c)
        before = client.stats.requests
        many = client.sample(300, seed=7, temperature=0.5)
        assert len(many) == 300 and client.stats.requests - before == 2
        z1 = client.encode(np.zeros((28, 28), np.uint8), sample=True, seed=3)
        z2 = client.encode(np.zeros((28, 28), np.uint8), sample=True, seed=3)
        assert z1.seed == 3 and np.array_equal(z1.z, z2.z)


def test_4xx_raise_one_error_type_with_the_servers_message_and_no_retry(server):
    with client_for(server, protocol="json") as client:
        with pytest.raises(LatentServeError) as info:
            client.decode([[0.0, 0.0, 0.0]])
        err = info.value
        assert (err.status, err.code, err.field) == (400, "wrong_latent_dim", "instances[0].z")
        assert "expected 2 values" in err.message and err.attempts == 1

        bad = np.full((28, 28), 0.5)
        bad[4, 5] = 1.5
        with pytest.raises(LatentServeError) as info:
            client.encode([np.zeros((28, 28)), bad])
        err = info.value
        assert (err.status, err.code) == (400, "out_of_range")
        assert err.field == "instances[1].pixels[4][5]" and "1.5" in err.message

        with pytest.raises(LatentServeError, match=r"at temperature: .*less than or equal to 5"):
            client.sample(2, seed=1, temperature=9.0)
        assert client.stats.retries == 0
    for protocol in ("json", "v2"):
        # a model the server does not serve: its metadata GET is answered 404 (by the
        # metadata endpoint, or by an older server that has none), said before any request
        with (
            LatentClient(server.url, model="nope", protocol=protocol) as client,
            pytest.raises(LatentServeError) as info,
        ):
            client.decode([[0.0, 0.0]])
        err = info.value
        assert err.status == 404 and "no metadata for nope-decode" in err.message, err
        assert client.stats.requests == 0


def test_v2_4xx_carry_the_servers_message_naming_the_tensor_or_parameter(server):
    with client_for(server) as client:
        with pytest.raises(LatentServeError) as info:
            client.decode([[0.0, 0.0, 0.0]])
        err = info.value
        assert (err.status, err.code, err.attempts) == (400, None, 1)
        assert "'z'" in err.message or "z:" in err.message, err.message
        assert err.url.endswith(f"/v2/models/{EXPLORER_MODEL}-decode/infer")

        bad = np.full((28, 28), 0.5)
        bad[4, 5] = 1.5
        with pytest.raises(LatentServeError) as info:  # sent as FP64: the caller's own value
            client.encode([np.zeros((28, 28)), bad])
        assert info.value.status == 400 and "image" in info.value.message
        assert "1.5" in info.value.message, info.value.message

        with pytest.raises(LatentServeError) as info:
            client.decode([[0.0, 1000.5]])
        assert info.value.status == 400 and "1000" in info.value.message

        with pytest.raises(LatentServeError, match="temperature") as info:
            client.sample(2, seed=1, temperature=9.0)
        assert info.value.status == 400
        assert client.stats.retries == 0


def _write_idx(path, arr: np.ndarray) -> None:
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(head + arr.astype(np.uint8).tobytes())


def test_cli_embed_sample_decode(server, images, tmp_path):
    _write_idx(tmp_path / "part-images-idx3-ubyte", images[:300])
    _write_idx(tmp_path / "part-labels-idx1-ubyte", np.arange(300) % 10)
    common = ["--url", server.url, "--model", EXPLORER_MODEL]

    def run(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "client", *args, *common],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    out = run(
        "embed",
        str(tmp_path / "part-images-idx3-ubyte"),
        "--out",
        str(tmp_path / "emb.npy"),
        "--labels-out",
        str(tmp_path / "labels.npy"),
        "--batch-size",
        "50",
    )
    assert "embedded 300 images" in out and "img/s (v2, 6 requests" in out
    assert np.load(tmp_path / "emb.npy").shape == (300, 2)
    assert np.load(tmp_path / "labels.npy").tolist() == (np.arange(300) % 10).tolist()
    out = run(
        "embed",
        str(tmp_path / "part-images-idx3-ubyte"),
        "--out",
        str(tmp_path / "emb-json.npy"),
        "--protocol",
        "json",
        "--quiet",
    )
    assert "img/s (json, 3 requests" in out
    np.testing.assert_allclose(
        np.load(tmp_path / "emb-json.npy"), np.load(tmp_path / "emb.npy"), rtol=1e-6, atol=1e-6
    )

    run("sample", "--n", "6", "--seed", "1", "--out", str(tmp_path / "grid.png"))
    assert Image.open(tmp_path / "grid.png").size == (3 * 28, 2 * 28)
    run("decode", "--z", "0.5,0.5", "--z", "-1,1", "--out", str(tmp_path / "img.png"))
    assert Image.open(tmp_path / "img.png").size == (2 * 28, 28)

    run("sample", "--n", "6", "--seed", "1", "--protocol", "json", "--out", str(tmp_path / "g.png"))
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "g.png")), np.asarray(Image.open(tmp_path / "grid.png"))
    )

    for protocol, says in (("json", "HTTP 400 wrong_latent_dim"), ("v2", "HTTP 400: ")):
        decode = ["decode", "--z", "1,2,3", "--out", str(tmp_path / "x.png")]
        bad = subprocess.run(
            [sys.executable, "-m", "client", *decode, "--protocol", protocol, *common],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 1 and says in bad.stderr, bad.stderr


@PROTOCOLS
@pytest.mark.parametrize("mode", ["full", "latent"])
def test_score_split_across_requests_equals_the_in_process_engine(server, images, protocol, mode):
    sub = images[:150]
    with client_for(server, batch_size=64, concurrency=2, protocol=protocol) as client:
        got = client.score(sub, fpr=0.05, mode=mode)
        assert client.stats.requests == 3
    engine = Engine.from_dir(server.models[0].model_dir, "score")
    body = {"instances": [{"pixels": (a / 255.0).tolist()} for a in sub], "fpr": 0.05}
    raw = RawRequest(json.dumps(body | {"mode": mode}).encode(), "application/json")
    want = json.loads(engine.handle([raw])[0][0].body)
    assert got.names == tuple(want["predictions"][0]["scores"]) and got.primary == want["primary"]
    assert len(got) == 150 and got.fpr == 0.05
    for i, pred in enumerate(want["predictions"]):  # in input order
        np.testing.assert_allclose(
            got.scores[i], [s["score"] for s in pred["scores"].values()], rtol=1e-4
        )
        assert got.outlier[i] == pred["is_outlier"]
    assert np.array_equal(got.is_outlier, got.p_values < 0.05)
    assert ("recon_nats" in got.statistics) == (mode == "full")
    assert "kl_nats" in got.statistics  # a VAE


def test_score_errors_name_the_problem(server, images):
    with client_for(server) as client:
        with pytest.raises(LatentServeError, match="fpr") as err:
            client.score(images[:2], fpr=0.9)
        assert err.value.status == 400
        with pytest.raises(InputError, match="mode"):
            client.score(images[:2], mode="fast")


def test_cli_score_over_both_protocols_equals_the_client(server, images, tmp_path):
    source = tmp_path / "part-images-idx3-ubyte"
    _write_idx(source, images[:150])
    _write_idx(tmp_path / "part-labels-idx1-ubyte", np.arange(150) % 10)
    labels = tmp_path / "labels.npy"
    common = ["--url", server.url, "--model", EXPLORER_MODEL, "--batch-size", "64", "--quiet"]

    def run(out, *args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "client", "score", str(source), "--out", str(out)]
        return subprocess.run(
            [*cmd, *args, *common], cwd=ROOT, capture_output=True, text=True, timeout=120
        )

    with client_for(server) as client:
        want = client.score(images[:150], fpr=0.05)
        latent = client.score(images[:150], fpr=0.05, mode="latent")
    for protocol in ("v2", "json"):
        out = tmp_path / f"{protocol}.npz"
        proc = run(out, "--fpr", "0.05", "--protocol", protocol, "--labels-out", str(labels))
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0].startswith(f"scored 150 images with {EXPLORER_MODEL} (full)")
        assert f"img/s ({protocol}, 3 requests of <= 64 images" in lines[0]
        hits = int(want.outlier.sum())
        assert lines[1].startswith(f"flagged {hits} of 150 (") and "at fpr 0.05 by" in lines[1]
        with np.load(out) as got:
            assert tuple(got["names"]) == want.names and got["primary"] == want.primary
            assert got["fpr"] == 0.05 and got["mode"] == "full"
            np.testing.assert_allclose(got["scores"], want.scores, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(got["p_values"], want.p_values, atol=1e-6)
            assert np.array_equal(got["outlier"], want.outlier)
            assert set(want.statistics) <= set(got.files)
        assert np.load(labels).tolist() == (np.arange(150) % 10).tolist()

        out = tmp_path / f"{protocol}-latent.csv"
        proc = run(out, "--mode", "latent", "--fpr", "0.05", "--protocol", protocol)
        assert proc.returncode == 0, proc.stderr
        rows = out.read_text().splitlines()
        assert rows[0].startswith("index,latent,latent_p_value,latent_is_outlier,outlier")
        assert len(rows) == 151
        got_latent = [float(row.split(",")[1]) for row in rows[1:]]
        np.testing.assert_allclose(got_latent, latent.scores[:, 0], rtol=1e-4, atol=1e-6)

        bad = run(tmp_path / "x.npz", "--fpr", "0.9", "--protocol", protocol)  # server: <= 0.5
        assert bad.returncode == 1 and "HTTP 400" in bad.stderr and "fpr" in bad.stderr, bad.stderr
        bad = run(tmp_path / "x.npz", "--fpr", "1.5", "--protocol", protocol)
        assert bad.returncode == 2 and "--fpr takes a number in (0, 1)" in bad.stderr
        assert not (tmp_path / "x.npz").exists()
