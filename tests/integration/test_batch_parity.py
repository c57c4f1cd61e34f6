"""A batch job's rows are the live service's answers: each operation run as a job on the
session's Ray cluster (`python -m batch ...`) and asked of the session's TorchServe
over the Open Inference Protocol with a real standard client (tritonclient, binary
tensors), on the same inputs.

- encode: z_mean and z_log_var bit for bit;
- score: p-values (and the flags) of every score, as the service's float32;
- decode: reading encode's own output (Parquet z_mean), pixels as the service's FP32
  image, and the PNG files of --images;
- sample: the service's requests of the same seeds (batch.worker.request_seed).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import tritonclient.http as httpclient
from PIL import Image

from batch.worker import request_seed
from tests.support.batchjobs import fashion, manifest, read_output, run_batch

N = 200  # images: one v2 request (the service's max_items is 256)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    path = tmp_path_factory.mktemp("parity") / "images.npy"
    np.save(path, fashion(N))
    return path


@pytest.fixture(scope="module")
def vae(torchserve):
    return torchserve.model("vae")


def job(ray_cluster, vae, out, *args: str):
    proc = run_batch(
        [*args, "--model", vae.name, "--model-dir", str(vae.model_dir), "--output", str(out)],
        ray_cluster.address,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_output(out)


def infer(client, endpoint: str, inputs: dict, outputs: list[str], **params):
    tensors = []
    for name, (array, datatype) in inputs.items():
        t = httpclient.InferInput(name, list(array.shape), datatype)
        tensors.append(t.set_data_from_numpy(array, binary_data=True))
    wanted = [httpclient.InferRequestedOutput(n, binary_data=True) for n in outputs]
    return client.infer(endpoint, tensors, outputs=wanted, parameters=params or None)


@pytest.fixture(scope="module")
def encoded(ray_cluster, vae, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("parity") / "encoded"
    return out, job(ray_cluster, vae, out, "encode", "--input", str(images))


def test_encode_is_the_services_bit_for_bit(client, vae, encoded):
    _, table = encoded
    result = infer(
        client, f"{vae.name}-encode", {"image": (fashion(N), "UINT8")}, ["z_mean", "z_log_var"]
    )
    for name in ("z_mean", "z_log_var"):
        got = np.array(table.column(name).to_pylist(), dtype=np.float32)
        np.testing.assert_array_equal(got, result.as_numpy(name), err_msg=name)


def test_score_p_values_are_the_services(ray_cluster, client, vae, images, tmp_path):
    table = job(
        ray_cluster, vae, tmp_path / "out", "score", "--input", str(images), "--fpr", "0.05"
    )
    result = infer(
        client, f"{vae.name}-score", {"image": (fashion(N), "UINT8")}, ["p_values", "is_outlier"],
        fpr=0.05,
    )  # fmt: skip
    names = result.get_response()["parameters"]["scores"].split(",")
    rows = table.column("scores").to_pylist()
    assert list(rows[0]) == names
    got = np.array([[r[s]["p_value"] for s in names] for r in rows], dtype=np.float32)
    np.testing.assert_array_equal(got, result.as_numpy("p_values"))
    flags = np.array([[r[s]["is_outlier"] for s in names] for r in rows])
    np.testing.assert_array_equal(flags, result.as_numpy("is_outlier"))
    assert got.min() > 0 and got.max() <= 1


def test_decode_of_encodes_output_is_the_services(ray_cluster, client, vae, encoded, tmp_path):
    folder, codes = encoded
    pngs = tmp_path / "png"
    table = job(ray_cluster, vae, tmp_path / "out", "decode", "--input", str(folder),
                "--format", "array", "--images", str(pngs))  # fmt: skip
    assert table.column("id").to_pylist() == codes.column("id").to_pylist()
    pixels = np.array(table.column("pixels").to_pylist(), dtype=np.float32)
    z = np.array(codes.column("z_mean").to_pylist(), dtype=np.float32)
    result = infer(client, f"{vae.name}-decode", {"z": (z, "FP32")}, ["image"],
                   image_datatype="FP32")  # fmt: skip
    np.testing.assert_array_equal(pixels, result.as_numpy("image"))
    # --images: the PNG files hold the pixels as the service's PNGs do (rounded to 8 bits)
    first = np.asarray(Image.open(io.BytesIO((pngs / "00000000.png").read_bytes())))
    np.testing.assert_array_equal(first, np.rint(pixels[0] * 255).astype(np.uint8))
    assert len(list(pngs.iterdir())) == N


def test_sample_is_the_services_requests_of_its_seeds(ray_cluster, client, vae, tmp_path):
    n, seed = 300, 11
    out = tmp_path / "out"
    table = job(ray_cluster, vae, out, "sample", "--n", str(n), "--seed", str(seed),
                "--temperature", "0.8", "--format", "array")  # fmt: skip
    assert manifest(out)["rows"] == n
    got = np.array(table.column("pixels").to_pylist(), dtype=np.float32)
    want = [
        infer(client, f"{vae.name}-sample", {}, ["image"], n=k, seed=s, temperature=0.8,
              image_datatype="FP32").as_numpy("image")
        for k, s in ((256, seed), (n - 256, request_seed(seed, 1)))
    ]  # fmt: skip
    np.testing.assert_array_equal(got, np.concatenate(want))
