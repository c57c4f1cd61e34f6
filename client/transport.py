"""`Transport`: the HTTP side of `LatentClient`: sessions, request threads, retries.

Requests are sent by `concurrency` threads, each with its own keep-alive
`requests.Session`, and their results come back in input order. Connection
errors, timeouts, 503/507 answers and TorchServe's 500 "Worker died." are
retried (see `RetryPolicy`, client/retry.py); a failure after the last retry is
a `LatentServeError`. Timeouts are retried because TorchServe 0.12 can leave a
request unanswered when its worker dies (loadtests/README.md, "Worker kill");
every operation is idempotent, so a retry is safe.

What is sent where (the model, its protocol, its operations) is `LatentClient`'s
(client/api.py), which is a `Transport`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Self, TypeVar

import requests

from client.errors import LatentServeError
from client.results import Stats
from client.retry import RetryPolicy, retry_status, run_ordered

T = TypeVar("T")


class Transport:
    """Connections and retries of one client. `_post_once` and `_get_once` are the
    single HTTP attempts (the unit tests' scripted servers override them); the rest
    retries them, counts them in `stats` and runs chunks on the thread pool. Use it
    as a context manager or call `close()` to release the connections."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        timeout: float,
        *,
        concurrency: int,
        retry: RetryPolicy | None,
        sleep: Callable[[float], None],
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.timeout, self.concurrency = timeout, concurrency
        self.retry = retry or RetryPolicy()
        self.stats = Stats()
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._sleep = sleep
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    # ---- life cycle -----------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:  # outside the lock: running tasks may still open sessions
            pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            sessions, self._sessions = self._sessions, []
            self._local = threading.local()
        for session in sessions:
            session.close()

    def _session(self) -> requests.Session:
        """One keep-alive session per thread (requests.Session is not thread-safe)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=1)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers.update(self._headers)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="latentclient")
            return self._pool

    def _map(self, chunks: list[Callable[[], T]]) -> list[T]:
        if len(chunks) == 1:  # no thread hop for a single request
            return [chunks[0]()]
        return list(run_ordered(self._executor(), iter(chunks), self.concurrency))

    # ---- one request, with retries --------------------------------------------
    def _post_once(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict, bytes]:
        """One HTTP attempt -> (status, headers, body); raises requests' connection errors."""
        resp = self._session().post(url, data=body, headers=headers, timeout=self.timeout)
        return resp.status_code, resp.headers, resp.content

    def _get_once(self, url: str) -> tuple[int, dict, bytes]:
        """One HTTP GET -> (status, headers, body); raises requests' connection errors."""
        resp = self._session().get(url, timeout=self.timeout)
        return resp.status_code, resp.headers, resp.content

    def _attempts(
        self, url: str, once: Callable[[], tuple[int, dict, bytes]], counter: str
    ) -> tuple[int, dict, bytes, int]:
        """`once` until it answers something not to retry -> (status, headers, body,
        attempts); connection errors after the last retry raise LatentServeError."""
        attempt = 0
        while True:
            attempt += 1
            self.stats.add(**{counter: 1})
            try:
                status, reply_headers, content = once()
            except (
                requests.Timeout,
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
            ) as err:
                if not self.retry.should_retry(attempt, None):
                    why = (
                        f"no answer within {self.timeout} s"
                        if isinstance(err, requests.Timeout)  # ConnectTimeout is both
                        else f"cannot reach the server: {err}"
                    )
                    raise LatentServeError(why, url=url, attempts=attempt) from err
                self._backoff(attempt, None)
                continue
            if status != 200 and self.retry.should_retry(attempt, retry_status(status, content)):
                self._backoff(attempt, reply_headers.get("Retry-After"))
                continue
            return status, reply_headers, content, attempt

    def _backoff(self, attempt: int, retry_after: str | None) -> None:
        self.stats.add(retries=1)
        self._sleep(self.retry.delay(attempt, retry_after))
