"""SQS batch requests: how a send is cut into requests (at most 10 entries and 1 MiB each),
whether they may go at once (a FIFO message group split over two must not), and the threads
that send one call's requests at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from raasctl.queues.base import MAX_BATCH

_T = TypeVar("_T")


def groups_in_one_request(requests: list[list[dict[str, Any]]]) -> bool:
    """True when no FIFO message group is split over two requests: order inside a group is
    the order of sending, so a split group's requests must go one after the other."""
    owner: dict[str, int] = {}
    for number, request in enumerate(requests):
        for entry in request:
            if owner.setdefault(entry["MessageGroupId"], number) != number:
                return False
    return True


def split_requests(
    entries: list[tuple[int, dict[str, Any], int]], max_bytes: int
) -> list[list[dict[str, Any]]]:
    """Requests of at most 10 entries and `max_bytes` in total, in order."""
    requests: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for _, entry, entry_bytes in entries:
        if current and (len(current) == MAX_BATCH or size + entry_bytes > max_bytes):
            requests.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry_bytes
    if current:
        requests.append(current)
    return requests


class RequestPool:
    """`size` threads, started at the first call that needs them and kept, that send one
    call's requests at once (boto3 clients are thread-safe)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def map(
        self, call: Callable[[Any], _T], requests: Sequence[Any], *, together: bool = True
    ) -> list[_T]:
        """`call` for each request, the results in order: at once unless not `together`; the
        first error is raised once every request is back."""
        if len(requests) <= 1 or not together:
            return [call(request) for request in requests]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.size, thread_name_prefix="raasctl-sqs")
            pool = self._pool
        futures = [pool.submit(call, request) for request in requests]
        errors = [future.exception() for future in futures]
        for error in errors:
            if error is not None:
                raise error
        return [future.result() for future in futures]

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
