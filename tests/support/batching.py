"""Make requests share one dynamic batch on a live TorchServe, for the isolation tests.

`one_batch` occupies each of an archive's workers with a slow but valid request,
sent further apart than maxBatchDelay so that each runs alone, then releases the
test's requests together (a barrier): they queue meanwhile, and the first worker
free takes them as one batch. The scheduler may still split or join a batch, so
callers check the `X-Latentserve-Batch-*` headers and try again when it did.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from serving.workers import WorkerConfig

R = TypeVar("R")
# How often a caller builds the batch again when the scheduler split or joined it:
# with a short maxBatchDelay a request that reaches the frontend late runs on its own.
ATTEMPTS = 12
# Between two blockers of a multi-worker archive: far longer than maxBatchDelay (on a
# loaded machine two blockers sent 3 ms apart reached the frontend together, one worker
# took both and the other the test's requests, one by one), far shorter than a blocker
# runs (the encode blocker: about half a second).
SPACING = 0.025


def one_batch(
    block: Callable[[], R], sends: list[Callable[[], R]], workers: int, timeout: float = 120
) -> tuple[list[R], list[R]]:
    """-> (each of `sends`' results, in order; each blocker's result)."""
    results: list = [None] * len(sends)
    blocked: list = [None] * workers
    gate = threading.Barrier(len(sends) + 1)

    def send(i: int) -> None:
        gate.wait()
        results[i] = sends[i]()

    def hold(w: int) -> None:
        blocked[w] = block()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(sends))]
    for t in threads:
        t.start()
    blockers = []
    for w in range(workers):  # each alone in its batch: further apart than maxBatchDelay
        if w:
            time.sleep(SPACING)
        blockers.append(threading.Thread(target=hold, args=(w,)))
        blockers[-1].start()
    time.sleep(3 * WorkerConfig().max_batch_delay_ms / 1000)  # the last one picked up first
    gate.wait()
    for t in [*threads, *blockers]:
        t.join(timeout=timeout)
    return results, blocked
