"""The class Ray Data's actor pool runs (`map_batches`): a front for
`batch.worker.BlockWorker`, which is imported on the actor only.

Ray pickles a class by reference to its module, so the driver imports this
module and not the worker's (torch, the handlers' engine: about 3 s of a job's
start-up on this machine, spent before Ray even starts).
"""

from __future__ import annotations


class BlockActor:
    def __init__(self, job: dict) -> None:
        from batch.worker import BlockWorker

        self.worker = BlockWorker(job)

    def __call__(self, batch: dict) -> dict[str, list]:
        return self.worker(batch)
