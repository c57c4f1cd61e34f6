"""A Ray node lost mid-job, on a local cluster of two nodes whose second node is removed
while its actor works. The job completes or fails within 60 s with an error that says
what happened and what to do; the same command then completes, every row once.

- one node left (1 CPU each): the pool goes on with the actor that is left;
- no room left (a head of 0 CPUs, as a KubeRay head is): nothing can run, so the driver's
  watch (batch/cluster.py, --stall-timeout: 30 s by default, 10 s here to keep the test
  short) fails the job; a node is added back and the rerun completes.
"""

from __future__ import annotations

import time

import pytest

from tests.support.batchjobs import (
    TEST_IMAGES,
    manifest,
    parts,
    read_output,
    run_batch,
    start_batch,
    start_cluster,
    wait_for_parts,
)

ROWS, BLOCK = 10000, 250
DEADLINE = 60  # seconds from the node's loss to the job's end


@pytest.mark.parametrize("head_cpus", [1, 0], ids=["one-node-left", "no-room-left"])
def test_node_lost_mid_job_then_rerun(tmp_path, head_cpus):
    cluster = start_cluster(num_cpus=1, nodes=2, head_cpus=head_cpus)
    try:
        out = tmp_path / "out"
        args = ["encode", "--model", "fashion-vae", "--input", str(TEST_IMAGES), "--output",
                str(out), "--block-items", str(BLOCK), "--stall-timeout", "10"]  # fmt: skip
        proc = start_batch(args, cluster.address)
        wait_for_parts(out, 2, proc)
        (worker,) = cluster.worker_nodes
        cluster.remove_node(worker)
        lost = time.monotonic()
        _, stderr = proc.communicate(timeout=DEADLINE + 30)
        took = time.monotonic() - lost
        assert took < DEADLINE, f"the job went on {took:.0f} s after its node was lost"
        written = len(parts(out))
        if head_cpus == 0:
            assert proc.returncode == 1, stderr[-3000:]
            assert "1 Ray node(s) lost" in stderr and "run the same command again" in stderr
            assert written < ROWS // BLOCK
            start_cluster_node(cluster)
        elif proc.returncode != 0:
            assert proc.returncode == 1 and "node(s) lost" in stderr, stderr[-3000:]
        again = run_batch(args, cluster.address)
        assert again.returncode == 0, again.stderr[-3000:]
        m = manifest(out)
        assert m["rows"] == ROWS and m["blocks_skipped"] == written
        table = read_output(out)
        assert table.column("id").to_pylist() == list(range(ROWS))
    finally:
        cluster.shutdown()


def start_cluster_node(cluster) -> None:
    cluster.add_node(num_cpus=1, object_store_memory=256 * 2**20)
    cluster.wait_for_nodes()
