"""The worker's rate limiter: starts spaced evenly, a burst of 1, shared by every slot.

Written here rather than taken from a library because none of the maintained ones fits both
halves of what the worker needs. pyrate-limiter, limits and ratelimit count requests in fixed
or sliding windows, so they allow a whole window's worth at once (a burst of `rate`), and
token-bucket libraries let a bucket of 1 refill while a slow receive is in progress, so a
start can land right after the previous one. The worker must (a) take a token *before* it
receives, so no message sits in memory waiting for permission while its visibility runs out,
and (b) still guarantee that *starts*, which happen after the receive returned, are at least
1/rate apart, so `--rate 20` never starts more than 20 in any one-second window whatever the
receive latency. That is two small schedules behind one lock, below.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """`acquire` before a receive, `start_at` for each message received, `give_back` for
    tokens the receive did not use. Thread-safe; the clock is monotonic and injectable.

    With `per_second=None` every call returns at once (no limit)."""

    def __init__(
        self,
        per_second: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        if per_second is not None and per_second <= 0:
            raise ValueError("per_second must be positive or None")
        self.per_second = per_second
        self.interval_s = 0.0 if per_second is None else 1.0 / per_second
        self._clock = clock
        self._sleep = sleep  # injected in tests together with a fake clock
        self._lock = threading.Lock()
        self._next_token = float("-inf")  # earliest time the next token may be taken
        self._next_start = float("-inf")  # earliest time the next message may start

    @property
    def unlimited(self) -> bool:
        return self.per_second is None

    def acquire(self, count: int, stop: threading.Event | None = None) -> int:
        """Take up to `count` tokens, blocking until at least one is due; return how many.

        A burst of 1 means tokens never accumulate while nobody asks for them, so under a
        limit this returns 1 (one message per receive) and, without one, `count`. Returns 0
        only when `stop` is set while waiting."""
        if count < 1:
            raise ValueError("count must be at least 1")
        if self.unlimited:
            return count
        while True:
            with self._lock:
                now = self._clock()
                if now >= self._next_token:
                    self._next_token = now + self.interval_s
                    return 1
                delay = self._next_token - now
            if self._wait(delay, stop):
                return 0

    def give_back(self, count: int) -> None:
        """Return tokens a receive did not use (it came back with fewer messages), so the
        next receive need not wait for them. Never lets two starts come closer together:
        that is `start_at`'s schedule, which a returned token does not touch."""
        if self.unlimited or count <= 0:
            return
        with self._lock:
            self._next_token -= count * self.interval_s

    def start_at(self) -> float:
        """Reserve the next start and return its time on the limiter's clock: now, or one
        interval after the previous start, whichever is later. The caller waits until then
        (at most one interval, since a token was due before the receive)."""
        with self._lock:
            now = self._clock()
            at = max(now, self._next_start + self.interval_s)
            if not self.unlimited:
                self._next_start = at
            return at

    def wait_until(self, at: float, stop: threading.Event | None = None) -> bool:
        """Sleep until the clock reads `at`; True if `stop` was set first."""
        while True:
            delay = at - self._clock()
            if delay <= 0:
                return stop is not None and stop.is_set()
            if self._wait(delay, stop):
                return True

    def _wait(self, delay: float, stop: threading.Event | None) -> bool:
        if self._sleep is not None:
            self._sleep(delay)
            return stop is not None and stop.is_set()
        if stop is not None:
            return stop.wait(delay)
        time.sleep(delay)
        return False
