"""Batch jobs on a real local Ray cluster (`ray_cluster`: 2 CPUs), run as users run them
(`python -m batch ...` in a subprocess): the output and its manifest, the model shipped
through the job's runtime environment (how a cluster without the image gets it), and
exactly-once output when the driver or a worker is killed mid-job."""

from __future__ import annotations

import hashlib
import json
import time

from paths import STORE
from tests.support.batchjobs import (
    TEST_IMAGES,
    actor_processes,
    fashion,
    image_folder,
    kill,
    manifest,
    parts,
    read_output,
    run_batch,
    start_batch,
    wait_for_parts,
)

ROWS = 10000  # the Fashion-MNIST test set (IDX, gzipped)
BLOCK = 250  # 40 blocks: a job long enough to be killed in the middle


def assert_exactly_once(out, rows: int) -> None:
    table = read_output(out)
    assert table.num_rows == rows
    assert table.column("id").to_pylist() == list(range(rows))
    assert table.column("error_code").null_count == rows
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]


def test_folder_job_shipped_to_the_cluster(ray_cluster, tmp_path):
    """A folder with bad files: one row per image file, each bad one with its code; the
    model and code travel with the job (--ship) and the actors load that copy."""
    root, bad = image_folder(tmp_path / "in", fashion(40))
    out = tmp_path / "out"
    args = ["encode", "--model", "fashion-vae", "--input", str(root), "--output", str(out),
            "--block-items", "16", "--ship"]  # fmt: skip
    proc = run_batch(args, ray_cluster.address)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 46 and summary["errors"] == len(bad)
    assert "46 rows (5 errors)" in proc.stderr  # the one summary line
    m = manifest(out)
    sha = (STORE / "fashion-vae" / "encoder.pt").read_bytes()
    assert m["model"] == "fashion-vae" and m["operation"] == "encode"
    assert m["model_sha256"] == {"encoder.pt": hashlib.sha256(sha).hexdigest()}
    assert m["input"] == str(root) and m["input_kind"] == "folder"
    assert m["options"]["block_items"] == 16 and m["blocks"] == 3
    assert m["rows"] == 46 and m["ok"] == 41 and m["errors"] == 5
    assert m["error_codes"] == {"bad_image": 4, "payload_too_large": 1}
    for key in ("wall_seconds", "startup_seconds", "items_per_second"):
        assert m[key] > 0, key
    assert m["startup_seconds"] < m["wall_seconds"]
    assert m["ray"]["shipped"] and m["ray"]["actors"] == [2, 2]
    (model_dir,) = m["ray"]["model_dirs"]
    assert "runtime_resources" in model_dir and str(STORE) not in model_dir
    table = read_output(out)
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 46
    codes = dict(zip(ids, table.column("error_code").to_pylist(), strict=True))
    assert {k: codes[k] for k in bad} == bad
    # the same command again: every block is done, nothing runs
    again = run_batch(args, ray_cluster.address)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "3 of 3 blocks were already done" in again.stderr
    assert manifest(out)["rows"] == 46 and manifest(out)["rows_this_run"] == 0


def encode_job(out) -> list[str]:
    return ["encode", "--model", "fashion-vae", "--input", str(TEST_IMAGES), "--output",
            str(out), "--block-items", str(BLOCK)]  # fmt: skip


def test_driver_killed_then_the_same_command_gives_every_row_once(ray_cluster, tmp_path):
    out = tmp_path / "out"
    proc = start_batch([*encode_job(out), "--actors", "1"], ray_cluster.address)
    done = wait_for_parts(out, 3, proc)
    kill(proc)
    proc.wait()
    assert done < ROWS // BLOCK, "the job ended before it could be killed"
    time.sleep(1)  # Ray ends the dead driver's actors
    killed_with = len(parts(out))
    again = run_batch([*encode_job(out), "--actors", "1"], ray_cluster.address)
    assert again.returncode == 0, again.stderr[-3000:]
    m = manifest(out)
    assert m["blocks_skipped"] == killed_with and m["rows"] == ROWS
    assert m["rows_this_run"] == ROWS - killed_with * BLOCK
    assert_exactly_once(out, ROWS)


def test_a_killed_worker_is_retried_and_the_job_completes(ray_cluster, tmp_path):
    out = tmp_path / "out"
    proc = start_batch(encode_job(out), ray_cluster.address)
    wait_for_parts(out, 2, proc)
    actors = actor_processes()
    assert len(actors) == 2, actors
    kill(actors[0])
    assert len(parts(out)) < ROWS // BLOCK, "the job ended before a worker could be killed"
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr[-3000:]
    assert stdout == stderr == ""  # --quiet: Ray's own lines too
    assert not actors[0].is_running()
    assert_exactly_once(out, ROWS)
    assert manifest(out)["blocks_skipped"] == 0
