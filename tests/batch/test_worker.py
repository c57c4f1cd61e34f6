"""The batch actor in-process (batch/worker.py, no Ray): a block's rows are the service's
answers, item by item, and a bad item is a row with the service's error code.

"The service" here is the handlers' own `Engine.handle` on a JSON API request, the
code a TorchServe worker runs (tests/integration/test_batch_parity.py compares a
real job with a real TorchServe over the binary v2 protocol).
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from batch.output import META, part_name
from batch.sources import IMAGES, LATENTS, plan
from batch.spec import JobSpec, check
from batch.worker import BlockWorker, png_name, request_seed
from paths import STORE
from tests.handlers.tiny import json_request, make_engine
from tests.support.batchjobs import fashion, image_folder

VAE, AE = "fashion-vae", "fashion-ae"


def worker(tmp_path, operation: str, model: str = VAE, **options) -> BlockWorker:
    spec = JobSpec(operation, model, str(STORE / model), output=str(tmp_path / "out"), **options)
    check(spec)
    (tmp_path / "out").mkdir(exist_ok=True)
    return BlockWorker(spec.to_dict())


def answer(w: BlockWorker, where: str, reads: str = IMAGES, block_items: int = 64) -> pa.Table:
    blocks = plan(where, reads, block_items).blocks
    return pa.concat_tables([w.answer(b) for b in blocks])


def service(model: str, operation: str, payload: dict) -> dict:
    """The handlers' JSON API answer to `payload` (status 200 asserted)."""
    (reply,), _ = make_engine(STORE / model, operation).handle([json_request(payload)])
    assert reply.status == 200, reply.body
    return json.loads(reply.body)


def b64(data: bytes) -> dict:
    return {"image_b64": base64.b64encode(data).decode()}


def png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp("images") / "in", fashion(12))


def test_folder_encode_rows_are_the_services_and_bad_files_fail_alone(tmp_path, folder):
    root, bad = folder
    w = worker(tmp_path, "encode", input=str(root))
    table = answer(w, str(root), block_items=7)
    rows = {r["id"]: r for r in table.to_pylist()}
    assert len(rows) == 12 + len(bad) + 1  # notes.txt is not an image file: not listed
    assert "notes.txt" not in rows
    for name, code in bad.items():
        r = rows[name]
        assert r["error_code"] == code, r
        assert r["error_message"] and r["z_mean"] is None and r["z_log_var"] is None
    good = sorted(k for k, r in rows.items() if r["error_code"] is None)
    assert len(good) == 13
    want = service(VAE, "encode", {"instances": [b64((root / k).read_bytes()) for k in good]})
    for k, p in zip(good, want["predictions"], strict=True):
        np.testing.assert_allclose(rows[k]["z_mean"], p["z_mean"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(rows[k]["z_log_var"], p["z_log_var"], rtol=1e-6, atol=1e-7)
        assert rows[k]["converted_from"] == p["converted_from"]
    assert rows["colour.jpg"]["converted_from"] == {"mode": "RGB", "width": 56, "height": 40}
    assert table.schema.field("z_mean").type == pa.list_(pa.float32(), 32)


def test_ae_encode_has_null_z_log_var(tmp_path):
    np.save(tmp_path / "x.npy", fashion(5))
    table = answer(
        worker(tmp_path, "encode", AE, input=str(tmp_path / "x.npy")), str(tmp_path / "x.npy")
    )
    assert table.column("z_log_var").null_count == 5
    want = service(
        AE, "encode", {"instances": [{"pixels": (a / 255).tolist()} for a in fashion(5)]}
    )
    got = np.array(table.column("z_mean").to_pylist())
    np.testing.assert_allclose(
        got, [p["z_mean"] for p in want["predictions"]], rtol=1e-5, atol=1e-6
    )


def test_array_items_checked_as_v2_tensors(tmp_path):
    """Float arrays: NaN -> not_finite, outside [0, 1] -> out_of_range, that row alone;
    Parquet pixels of the wrong size -> wrong_shape."""
    x = (fashion(6) / 255.0).astype(np.float32)
    x[1, 3, 4] = np.nan
    x[4, 0, 0] = 1.5
    np.save(tmp_path / "f.npy", x)
    table = answer(
        worker(tmp_path, "encode", input=str(tmp_path / "f.npy")), str(tmp_path / "f.npy")
    )
    codes = table.column("error_code").to_pylist()
    assert codes == [None, "not_finite", None, None, "out_of_range", None]
    assert "pixels[3][4]" in table.column("error_message")[1].as_py()
    # the same images as uint8: the same answers where the floats were fine
    np.save(tmp_path / "u8.npy", fashion(6))
    u8 = answer(
        worker(tmp_path, "encode", input=str(tmp_path / "u8.npy")), str(tmp_path / "u8.npy")
    )
    # (to float rounding: another batch size may take other kernels)
    same = u8.column("z_mean")[0].values, table.column("z_mean")[0].values
    np.testing.assert_allclose(*same, atol=1e-5)
    # Parquet integer pixels are 0-255 (as a PNG's), flat or H x W lists
    rows = [a.ravel().tolist() for a in fashion(3)] + [[0] * 27 * 28, [[300] * 28] * 28]
    pq.write_table(pa.table({"pixels": rows[:4]}), tmp_path / "p.parquet")
    got = answer(
        worker(tmp_path, "encode", input=str(tmp_path / "p.parquet")), str(tmp_path / "p.parquet")
    )
    assert got.column("error_code").to_pylist() == [None, None, None, "wrong_shape"]
    np.testing.assert_allclose(got.column("z_mean")[0].values, same[0], atol=1e-5)
    pq.write_table(pa.table({"pixels": [fashion(1)[0].tolist(), rows[4]]}), tmp_path / "q.parquet")
    got = answer(
        worker(tmp_path, "encode", input=str(tmp_path / "q.parquet")), str(tmp_path / "q.parquet")
    )
    assert got.column("error_code").to_pylist() == [None, "out_of_range"]


def test_score_full_and_latent(tmp_path):
    np.save(tmp_path / "x.npy", fashion(8))
    images = [{"pixels": (a / 255).tolist()} for a in fashion(8)]
    for mode in ("full", "latent"):
        w = worker(tmp_path, "score", input=str(tmp_path / "x.npy"), mode=mode, fpr=0.05)
        rows = answer(w, str(tmp_path / "x.npy")).to_pylist()
        want = service(VAE, "score", {"instances": images, "mode": mode, "fpr": 0.05})
        for r, p in zip(rows, want["predictions"], strict=True):
            assert r["scores"].keys() == p["scores"].keys()
            for name, s in p["scores"].items():
                assert r["scores"][name]["p_value"] == pytest.approx(s["p_value"], abs=1e-6)
                assert r["scores"][name]["is_outlier"] == s["is_outlier"]
            assert r["is_outlier"] == p["is_outlier"]
            for stat in ("recon_nats", "kl_nats", "neg_elbo_nats", "bits_per_dim", "png_bits"):
                if p[stat] is None:
                    assert r[stat] is None, stat
                else:
                    assert r[stat] == pytest.approx(p[stat], rel=1e-5), stat


def test_decode_latents_png_and_array(tmp_path):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((6, 32)).astype(np.float32)
    rows = [*z.tolist(), [0.0] * 31, [float("nan")] * 32, [2000.0] * 32, None]
    pq.write_table(pa.table({"z": pa.array(rows, pa.list_(pa.float32()))}), tmp_path / "z.parquet")
    where = str(tmp_path / "z.parquet")
    png = answer(worker(tmp_path, "decode", input=where), where, LATENTS).to_pylist()
    codes = [r["error_code"] for r in png]
    assert codes == [None] * 6 + ["wrong_latent_dim", "not_finite", "out_of_range", "invalid_field"]
    want = service(VAE, "decode", {"instances": [{"z": v} for v in z.tolist()]})
    for r, p in zip(png[:6], want["predictions"], strict=True):
        assert r["image"] == base64.b64decode(p["image_b64"])  # the same PNG file
    arr = answer(worker(tmp_path, "decode", input=where, format="array"), where, LATENTS)
    pixels = np.array(arr.column("pixels").to_pylist()[:6], dtype=np.float32)
    assert pixels.shape == (6, 28, 28) and pixels.min() >= 0 and pixels.max() <= 1
    np.testing.assert_array_equal(
        np.rint(pixels * 255).astype(np.uint8), [png_pixels(r["image"]) for r in png[:6]]
    )


def test_sample_rows_are_the_services_requests(tmp_path):
    """Rows [0, 256) are the service's `sample` of n=256 with the job's seed; the next
    request's seed is request_seed(seed, 1)."""
    w = worker(tmp_path, "sample", n=300, seed=7, temperature=0.8)
    (block,) = [b for b in plan_sample(w)]
    table = w.answer(block)
    assert table.num_rows == 300 and table.column("error_code").null_count == 300
    seeds = table.column("seed").to_pylist()
    assert seeds[:256] == [7] * 256 and seeds[256:] == [request_seed(7, 1)] * 44
    first = service(VAE, "sample", {"n": 256, "seed": 7, "temperature": 0.8})["predictions"]
    second = service(VAE, "sample", {"n": 44, "seed": request_seed(7, 1), "temperature": 0.8})
    images = table.column("image").to_pylist()
    for got, p in zip(images, first + second["predictions"], strict=True):
        assert got == base64.b64decode(p["image_b64"])


def plan_sample(w: BlockWorker):
    from batch.job import sample_plan

    return sample_plan(w.spec).blocks


def test_a_part_is_written_whole_with_its_summary(tmp_path):
    np.save(tmp_path / "x.npy", fashion(10))
    w = worker(tmp_path, "encode", input=str(tmp_path / "x.npy"))
    (block,) = plan(str(tmp_path / "x.npy"), IMAGES, 64).blocks
    summary = w.process(block)
    path = tmp_path / "out" / part_name(block)
    assert summary["rows"] == summary["ok"] == 10
    meta = json.loads(pq.read_schema(path).metadata[META])
    assert meta == {"block": 0, "key": block.key, "rows": 10, "ok": 10, "errors": 0}
    assert [p.name for p in (tmp_path / "out").iterdir()] == [path.name]  # no temporaries


def test_png_names_stay_inside_the_images_folder():
    assert png_name(42) == "00000042.png"
    assert png_name("shirts/new/0001.png") == "shirts/new/0001.png"
    assert png_name("a.jpg") == "a.jpg.png"  # no clash with a.png beside it
    assert png_name("../../etc/passwd") == "etc/passwd.png"
    assert png_name("/abs//x") == "abs/x.png" and png_name("..") == "_.png"
