"""Messages in flight elsewhere: what a worker is waiting on when its receives come back
empty while the queue still holds messages.

Those messages are held by another worker: a live one that will finish them, or one that
died, whose messages become visible again once their visibility timeout runs out. A worker
cannot see when that is (the queue does not say when a message was last extended), so the
estimate is an upper bound for a holder that stopped by the time this worker first saw the
messages waiting: `visibility_timeout_s` from that moment, counting down. Their holder
extended them at most a third of the timeout before it stopped (raasctl/worker/heartbeat.py),
so they are usually back sooner. When the countdown reaches 0 and they are still held, a
live holder is extending them, and it starts again.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Elsewhere:
    count: int  # messages in flight that this worker does not hold
    visible_in_s: float  # the upper-bound estimate above


class ElsewhereWatch:
    """Fed by the poller after each empty receive (`saw`) and each non-empty one (`clear`);
    read by the progress report (`current`). Thread-safe."""

    def __init__(self, visibility_timeout_s: float, clock: Callable[[], float]) -> None:
        self.visibility_timeout_s = visibility_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._count = 0
        self._since: float | None = None

    def saw(self, in_flight: int, held: int) -> None:
        """A receive came back empty while the queue had `in_flight` messages in flight, of
        which this worker holds `held`."""
        count = max(0, in_flight - held)
        with self._lock:
            self._count = count
            if count == 0:
                self._since = None
            elif self._since is None:
                self._since = self._clock()

    def clear(self) -> None:
        with self._lock:
            self._count, self._since = 0, None

    def current(self) -> Elsewhere | None:
        with self._lock:
            if self._since is None or self._count == 0:
                return None
            waited = self._clock() - self._since
            if waited >= self.visibility_timeout_s:  # still held: a live holder extends them
                cycles = math.floor(waited / self.visibility_timeout_s)
                self._since += cycles * self.visibility_timeout_s
                waited -= cycles * self.visibility_timeout_s
            return Elsewhere(self._count, self.visibility_timeout_s - waited)
