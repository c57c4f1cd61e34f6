"""Splitting, ordered bounded-concurrency execution, and the retry policy.

Kept apart from the HTTP code so that each rule is a few lines with a unit test.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


def split(total: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of at most `size` items covering range(total), in order."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def run_ordered(executor: Executor, tasks: Iterator[Callable[[], T]], window: int) -> Iterator[T]:
    """Run tasks on `executor` with at most `window` in flight; yield results in task order.

    Tasks are created lazily, so at most `window` requests' worth of payload
    exists at a time however large the input is. The first failure is raised
    (in task order) after cancelling what has not started.
    """
    if window < 1:
        raise ValueError(f"concurrency must be >= 1, got {window}")
    pending: deque[Future[T]] = deque()
    tasks = iter(tasks)
    try:
        for task in tasks:
            pending.append(executor.submit(task))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for fut in pending:
            fut.cancel()


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of idempotent failures: connection errors and these statuses.

    Every operation of the API is idempotent (encode and decode are pure
    functions; the client fixes the seed of every sample request), so a retry
    cannot do harm. Attempt k (1-based) waits min(max_delay, base_delay * 2**(k-1)),
    scaled by a random factor in [1 - jitter, 1] so that many clients do not
    retry in lockstep; a server's `Retry-After` (seconds) is honoured up to
    max_delay.
    """

    retries: int = 5  # retries after the first attempt (so at most 6 attempts)
    base_delay: float = 0.2  # seconds
    max_delay: float = 5.0  # cap on one wait
    jitter: float = 0.5  # fraction of the delay that is randomized
    statuses: frozenset[int] = frozenset({503, 507})

    def __post_init__(self) -> None:
        if self.retries < 0 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("retries and delays must be >= 0")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter}")

    def delay(self, attempt: int, retry_after: str | None = None, rng=random) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        if retry_after is not None:
            try:
                return min(self.max_delay, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date or garbage: fall back to the exponential schedule
        base = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return base * (1.0 - self.jitter * rng.random())

    def should_retry(self, attempt: int, status: int | None) -> bool:
        """After failed attempt number `attempt`: retry? None = connection error or timeout."""
        if attempt > self.retries:
            return False
        return status is None or status in self.statuses


def retry_status(status: int, content: bytes) -> int:
    """The status to judge a retry by: TorchServe answers requests in flight when a
    worker dies with 507, or with 500 when it has not yet seen the process exit
    (a race); both say "Worker died." and are retried alike. A 500 from the handler
    itself (error code internal_error, a bug) is not."""
    if status == 500 and b'"Worker died."' in content:
        return 507
    return status
