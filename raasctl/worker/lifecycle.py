"""Whether the worker is stopping, why, and the error that ended it: one small object behind
one lock, shared by every role."""

from __future__ import annotations

import threading
from enum import StrEnum


class StopReason(StrEnum):
    QUEUE_EMPTY = "queue_empty"
    MAX_MESSAGES = "max_messages"
    MAX_RUNTIME = "max_runtime"
    SIGNAL = "signal"
    ERROR = "error"


class Lifecycle:
    """`stopping` is set once a stop is asked for (the poller stops receiving); `abandoning`
    too when it is a signal or a fatal error (messages received but not started are
    released). The first reason and the first fatal error are kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self.abandoning = threading.Event()
        self._reason: StopReason | None = None
        self._fatal: BaseException | None = None

    def stop(self, reason: StopReason = StopReason.SIGNAL) -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason
        if reason is StopReason.SIGNAL:
            self.abandoning.set()
        self.stopping.set()

    def fail(self, exc: BaseException) -> None:
        """End the worker with this error (the first one wins): `Worker.run` raises it.
        Messages received but not started are released, as at a signal: the worker will
        not handle them."""
        with self._lock:
            if self._fatal is None:
                self._fatal = exc
        self.abandoning.set()
        self.stop(StopReason.ERROR)

    @property
    def reason(self) -> StopReason | None:
        with self._lock:
            return self._reason

    @property
    def fatal(self) -> BaseException | None:
        with self._lock:
            return self._fatal
