"""The worker's rate limiter: starts spaced evenly, a burst of 1, shared by every slot.

Written here rather than taken from a library because none of the maintained ones fits both
halves of what the worker needs. pyrate-limiter, limits and ratelimit count requests in fixed
or sliding windows, so they allow a whole window's worth at once (a burst of `rate`), and
token-bucket libraries let a bucket of 1 refill while a slow receive is in progress, so a
start can land right after the previous one. The worker must (a) take a token *before* it
receives, so no message sits in memory waiting for permission while its visibility runs out,
and (b) still guarantee that *starts*, which happen after the receive returned and on other
threads, never exceed the rate in any one-second window whatever the receive latency and
thread scheduling. That is two small schedules and a window check behind one lock, below.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

# Starts are scheduled this much further apart than 1/rate, and `ceil(rate)` starts take at
# least this much more than a second. A start's request reaches the downstream a little
# after the limiter let it go, by a delay that varies (thread wake-up, waiting for the
# interpreter lock behind a busy thread, the HTTP client); without slack, that jitter alone
# could put rate + 1 arrivals into one second as the downstream sees it. 1 % (10 ms a
# second) was not enough on a busy two-core machine: a worker on SQS + DynamoDB at --rate 20
# put 21 requests into one second at the callback. 2.5 % keeps the average at 97.6 % of the
# rate and absorbs 25 ms of jitter.
SPACING_MARGIN = 0.025
WINDOW_S = 1.0
# Tokens (receives) that fell behind their schedule by up to this long, say behind a slow
# receive, are made up by taking several at once; further behind, the schedule restarts at
# now, so idle time never turns into a burst. Starts are paced by `begin` regardless, so a
# made-up token only means a message received early waits (at most this long) to start.
TOKEN_CATCH_UP_S = 0.5


class RateLimiter:
    """`acquire` before a receive (and `give_back` what the receive did not use), `begin`
    right before each handler starts. Thread-safe; the clock is monotonic and injectable.

    Both schedules are grids (`next += interval`), so a thread that wakes late does not push
    every later token or start back (see `acquire` and `_advance`). On top of its grid,
    `begin` checks the actual start times: a start is never less than one second (and the
    margin) after the start `ceil(rate)` places before it. With `per_second=None` every call
    returns at once."""

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
        self.interval_s = 0.0 if per_second is None else (1 + SPACING_MARGIN) / per_second
        self._clock = clock
        self._sleep = sleep  # injected in tests together with a fake clock
        self._lock = threading.Lock()
        self._next_token = -math.inf  # earliest time the next token may be taken
        self._next_start = -math.inf  # earliest time the next handler may start
        window = 0 if per_second is None else math.ceil(per_second * WINDOW_S)
        self._recent: deque[float] = deque(maxlen=max(window, 1))  # latest actual starts

    @property
    def unlimited(self) -> bool:
        return self.per_second is None

    def acquire(
        self, count: int, stop: threading.Event | None = None, *, ahead_s: float = 0.0
    ) -> int:
        """Take up to `count` tokens, blocking until they are due; return how many.

        A token is due `ahead_s` before its place on the schedule: the receive it pays for
        may come that long before the message starts (`begin` paces the starts), so that
        under a rate limit a receive brings a batch rather than one message. The call waits
        until as many tokens as fit in `ahead_s` (at most `count`) are due. With `ahead_s` 0
        that is one token, or more while making up for a receive slower than one interval
        (TOKEN_CATCH_UP_S). Without a limit, `count`. Returns 0 only when `stop` is set while
        waiting."""
        if count < 1:
            raise ValueError("count must be at least 1")
        if self.unlimited:
            return count
        batch = min(count, 1 + int(ahead_s / self.interval_s))
        while True:
            with self._lock:
                now = self._clock()
                if now - self._next_token > TOKEN_CATCH_UP_S:  # idle: start afresh
                    self._next_token = now
                # How far the batch's last token is from being due.
                behind = now + ahead_s - (self._next_token + (batch - 1) * self.interval_s)
                if behind >= 0:
                    due = min(count, batch + int(behind / self.interval_s))
                    self._next_token += due * self.interval_s
                    return due
                delay = -behind
            if self._wait(delay, stop):
                return 0

    def give_back(self, count: int) -> None:
        """Return tokens a receive did not use (it came back with fewer messages), so the
        next receive need not wait for them. Starts are unaffected: `begin` keeps its own
        schedule."""
        if self.unlimited or count <= 0:
            return
        with self._lock:
            self._next_token -= count * self.interval_s

    def begin(self, stop: threading.Event | None = None) -> bool:
        """Block until a handler may start, and record the start; True if `stop` was set
        first (the caller then releases its message instead)."""
        if self.unlimited:
            return stop is not None and stop.is_set()
        while True:
            with self._lock:
                now = self._clock()
                earliest = self._next_start
                if len(self._recent) == self._recent.maxlen:
                    earliest = max(earliest, self._recent[0] + WINDOW_S * (1 + SPACING_MARGIN))
                if now >= earliest:
                    self._next_start = _advance(self._next_start, now, self.interval_s)
                    self._recent.append(now)
                    return False
                delay = earliest - now
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


def _advance(scheduled: float, now: float, interval: float) -> float:
    """The next slot of a grid: one interval on, so a small delay (a thread waking late) is
    made up rather than pushing every later slot back; but never less than half an interval
    from now, so making up a large delay cannot bunch starts; and when `now` is past the
    next slot already (the grid went idle), one interval from now: no burst builds up."""
    following = scheduled + interval
    if now >= following:
        return now + interval
    return max(following, now + interval / 2)
