"""Batch jobs on Ray Data: encode, score, decode and sample whole collections.

`python -m batch <operation> ...` (`batch.cli`), or from Python::

    from batch import JobSpec, run
    manifest = run(JobSpec("encode", "fashion-vae", "model_store/fashion-vae",
                           output="out/", input="images/"))

Inputs are cut into blocks (`batch.sources`); actors (`batch.worker`) read
them (`batch.reading`), run the handlers' own reading and operation code and
write one Parquet part per block (`batch.output`); the driver (`batch.job`)
plans and resumes, and runs the blocks on Ray (`batch.cluster`). docs/batch.md
has the formats, the output schema and how to run on a cluster.
"""

from batch.job import run
from batch.spec import JobError, JobFailed, JobSpec

__all__ = ["JobError", "JobFailed", "JobSpec", "run"]
