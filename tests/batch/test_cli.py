"""`python -m batch` refuses what it cannot run at once, before Ray starts: exit 2 and a
message that says what to change (batch/cli.py, batch/spec.py). Each case is the real
CLI in a fresh interpreter, which reports whether it imported Ray."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from paths import ROOT
from tests.support.batchjobs import fashion

# main(argv), then whether Ray (or torch: the driver needs neither to say no) was imported
PROBE = """
import json, sys
from batch.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "ray": "ray" in sys.modules, "torch": "torch" in sys.modules}))
"""


def refuse(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr  # main returned: its exit code is in the probe
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"rc": 2, "ray": False, "torch": False}, (got, proc.stderr)
    return proc.stderr


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    np.save(d / "x.npy", fashion(4))
    np.save(d / "small.npy", fashion(4)[:, :27, :])
    np.save(d / "z8.npy", np.zeros((3, 8), np.float32))
    (d / "a-file").write_text("")
    return d


@pytest.mark.parametrize(
    "args, message",
    [
        (["encode", "--model", "nope", "--input", "{d}/x.npy"], "unknown model 'nope'"),
        (["encode", "--model", "fashion-vae", "--input", "{d}/missing"], "does not exist"),
        (
            ["encode", "--model", "fashion-vae", "--input", "{d}/small.npy"],
            "images of shape [27, 28]; fashion-vae reads [28, 28] or [1, 28, 28]",
        ),
        (
            ["decode", "--model", "fashion-vae", "--input", "{d}/z8.npy"],
            "latents of shape [8]; fashion-vae reads [32]",
        ),
        (["score", "--model", "fashion-vae", "--input", "{d}/x.npy", "--fpr", "0.9"], "--fpr"),
        (["sample", "--model", "fashion-vae", "--n", "0"], "--n >= 1"),
        (["sample", "--model", "fashion-vae", "--n", "5", "--temperature", "99"], "--temperature"),
        (
            ["encode", "--model", "fashion-vae", "--input", "{d}/x.npy", "--batch-size", "0"],
            "--batch-size",
        ),
        (
            ["encode", "--model", "fashion-vae", "--input", "{d}/x.npy", "--max-errors", "-1"],
            "--max-errors",
        ),
        (  # nothing listens there: refused in seconds, not after Ray's minutes of retries
            [
                "encode",
                "--model",
                "fashion-vae",
                "--input",
                "{d}/x.npy",
                "--address",
                "127.0.0.1:1",
            ],
            "no Ray cluster answers at 127.0.0.1:1",
        ),
    ],
    ids=[
        "unknown-model",
        "missing-input",
        "image-shape",
        "latent-dim",
        "fpr",
        "n",
        "temperature",
        "batch-size",
        "max-errors",
        "unreachable-cluster",
    ],  # fmt: skip
)
def test_refused_before_ray(inputs, tmp_path, args, message):
    args = [a.format(d=inputs) for a in args] + ["--output", str(tmp_path / "out")]
    assert message in refuse(*args)
    assert not (tmp_path / "out").exists()  # nothing written either


def test_output_of_another_job_is_refused(inputs, tmp_path):
    out = tmp_path / "out"
    (out).mkdir()
    (out / "_job.json").write_text(json.dumps({"operation": "decode"}))
    err = refuse(
        "encode", "--model", "fashion-vae", "--input", f"{inputs}/x.npy", "--output", str(out)
    )
    assert "holds another job's output" in err and "--overwrite" in err
    err = refuse("encode", "--model", "fashion-vae", "--input", f"{inputs}/x.npy",
                 "--output", f"{inputs}/a-file")  # fmt: skip
    assert "is a file" in err


@pytest.mark.parametrize("actors", ["0", "3,2", "x"])
def test_bad_actor_counts_are_usage_errors(inputs, tmp_path, actors):
    proc = subprocess.run(
        [sys.executable, "-m", "batch", "encode", "--model", "fashion-vae", "--input",
         f"{inputs}/x.npy", "--output", str(tmp_path), "--actors", actors],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "--actors" in proc.stderr


def test_pool_size_fits_the_cluster():
    from batch.cluster import pool_size
    from batch.spec import JobError, JobSpec

    def spec(**kw):
        return JobSpec("encode", "m", "d", output="o", **kw)

    assert pool_size(spec(), {"CPU": 8.0}, 100) == (8, 8)  # one per CPU by default
    assert pool_size(spec(cpus_per_actor=2), {"CPU": 8.0}, 3) == (3, 3)  # no more than blocks
    assert pool_size(spec(actors=(1, 16)), {"CPU": 4.0}, 100) == (1, 16)  # max may wait
    assert pool_size(spec(gpus_per_actor=1), {"CPU": 8.0, "GPU": 2.0}, 100) == (2, 2)
    with pytest.raises(JobError, match="holds 2 actor"):
        pool_size(spec(actors=(3, 3)), {"CPU": 2.0}, 100)
    with pytest.raises(JobError, match="0 GPUs"):
        pool_size(spec(gpus_per_actor=1), {"CPU": 8.0}, 100)
