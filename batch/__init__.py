"""Batch jobs on Ray Data: encode, score, decode and sample whole collections.

`python -m batch <operation> ...` (`batch.cli`), or from Python::

    from batch import JobSpec, run
    manifest = run(JobSpec("encode", "fashion-vae", "model_store/fashion-vae",
                           output="out/", input="images/"))

Inputs are cut into blocks (`batch.sources`); actors (`batch.worker`) run the
handlers' own reading and operation code on each block and write one Parquet
part per block (`batch.output`); the driver (`batch.job`) plans, resumes and
watches the cluster. docs/batch.md has the formats, the output schema and
how to run on a cluster.
"""

from batch.job import JobFailed, run
from batch.spec import JobError, JobSpec

__all__ = ["JobError", "JobFailed", "JobSpec", "run"]
