"""Unit tests of splitting, ordered bounded execution and the backoff schedule."""

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from client.retry import RetryPolicy, run_ordered, split


def test_split_covers_in_order():
    assert split(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert split(8, 4) == [(0, 4), (4, 8)]
    assert split(3, 256) == [(0, 3)]
    assert split(0, 4) == []
    with pytest.raises(ValueError):
        split(5, 0)


def test_run_ordered_keeps_task_order_and_bounds_in_flight():
    in_flight, peak, lock = 0, 0, threading.Lock()

    def task(i):
        def run():
            nonlocal in_flight, peak
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0.02 * ((7 * i) % 5))  # finish out of order
            with lock:
                in_flight -= 1
            return i

        return run

    created = []

    def tasks():
        for i in range(20):
            created.append(i)
            yield task(i)

    with ThreadPoolExecutor(8) as pool:
        out = []
        for result in run_ordered(pool, tasks(), window=3):
            out.append(result)
            # lazily created: never more than `window` tasks ahead of the consumer
            assert len(created) - len(out) <= 3
    assert out == list(range(20))
    assert peak <= 3


def test_run_ordered_raises_first_failure_and_cancels_the_rest():
    started = []

    def task(i):
        def run():
            started.append(i)
            if i == 2:
                raise RuntimeError("boom 2")
            time.sleep(0.05)
            return i

        return run

    with ThreadPoolExecutor(1) as pool, pytest.raises(RuntimeError, match="boom 2"):
        list(run_ordered(pool, (task(i) for i in range(50)), window=4))
    assert len(started) < 10


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter():
    policy = RetryPolicy(retries=8, base_delay=0.1, max_delay=1.0, jitter=0.0)
    assert [policy.delay(k) for k in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    jittered = RetryPolicy(base_delay=0.4, max_delay=10.0, jitter=0.5)
    rng = random.Random(0)
    waits = [jittered.delay(2, rng=rng) for _ in range(200)]
    assert min(waits) >= 0.4 and max(waits) <= 0.8
    assert max(waits) - min(waits) > 0.2  # actually randomized


def test_retry_after_is_honoured_up_to_the_cap():
    policy = RetryPolicy(max_delay=3.0, jitter=0.0, base_delay=0.1)
    assert policy.delay(1, "2") == 2.0
    assert policy.delay(1, "60") == 3.0
    assert policy.delay(1, "Wed, 21 Oct 2015 07:28:00 GMT") == pytest.approx(0.1)


def test_should_retry_only_idempotent_failures_and_only_up_to_the_cap():
    policy = RetryPolicy(retries=2)
    assert policy.should_retry(1, None) and policy.should_retry(1, 503)
    assert policy.should_retry(2, 507)
    assert not policy.should_retry(3, 503)  # two retries done
    for status in (400, 404, 413, 500):
        assert not policy.should_retry(1, status)
    assert not RetryPolicy(retries=0).should_retry(1, None)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=2.0)
