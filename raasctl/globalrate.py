"""One rate limit for every worker of an environment: start slots leased from a schedule in
the state store (GCRA on one item, raasctl/state/workers.py).

The schedule is a single number, the theoretical arrival time (TAT): the start slots before
it are taken. A worker leases `k` consecutive slots at a time, `[first, first + k*interval)`
with `first = max(TAT, now)`, in one atomic write that moves TAT on to `first +
k*interval` (one UpdateItem on DynamoDB, one statement on SQLite). No two leases overlap, so
the starts of all workers together are spaced as one worker's would be: each slot is a
window `[slot, slot + interval)` and holds at most one start, and a one-second window meets
at most `ceil(rate) + 1` slots (21 at 20/s; the interval carries the process limiter's
margin, SPACING_MARGIN). A slot nobody starts in simply passes, so a worker that dies loses
at most the slots it leased (a second's worth or less) and nothing needs returning.

`k` follows the worker's demand: twice the starts it made since its previous lease, between
LEASE_MIN and three quarters of a second's worth of slots, so store requests stay near one
per `k` starts (under 0.1 per message at full demand) while a slow worker does not hold
slots it cannot use. A lease asks for no slot sooner than one receive's time from now, so the
messages received for a slot are there when it comes.

Clocks: a slot is a time on the schedule's clock (seconds since the epoch); a worker turns
its leased slots into its own monotonic clock once, when the lease comes back, by the wall
clock it read as it asked. Hosts whose clocks differ by `d` can therefore overlap by `d` at a
lease boundary: at most `d * rate` starts too many in that second, never a lasting excess
(with NTP, `d` is a few milliseconds, within the 2.5 % margin). Leases are short (under a
second) so a host's clock step matters for one lease only, and a worker never starts a slot
before its own `now`, since the store hands out nothing earlier than max(TAT, now). On one
machine (the embedded SQLite state) every process reads the same clock and there is no skew.

Same interface as raasctl/ratelimit.py's RateLimiter: `acquire` tokens before a receive
(only for leased slots due within READ_AHEAD_S, so no message waits in memory for long),
`give_back` what a receive did not use, `begin` right before each start (it waits for the
next leased slot, leasing more when there are none).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from raasctl.codes import InfoCode
from raasctl.errors import StateError
from raasctl.logs import event
from raasctl.ratelimit import RateLimiter
from raasctl.state.workers import WorkerStore

# Tokens are granted for leased slots due within this long: a message received now waits at
# most this long for its start, far inside any visibility timeout. Half a second is ten times
# a receive on SQS, and keeps the slots a worker has claimed few: those of a worker that dies
# pass unused (a second's worth held the others below the rate for about a second longer).
READ_AHEAD_S = 0.5
# The most a lease covers: three quarters of a second. Shorter leases mean more store
# requests per message (one per lease: 0.07 at 20/s); longer ones let a worker that dies take
# more of the schedule with it, and make the schedule run further ahead of now.
LEASE_S = 0.75
LEASE_MIN = 8
# A worker leases its next slots when fewer than this share of its lease is left unclaimed,
# so the lease's round trip overlaps the starts still ahead of it.
LEASE_AHEAD_SHARE = 0.5
LEASE_RETRY_PAUSES_S = (0.2, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class LimiterStats:
    leases: int
    requests: int  # store requests the leases took
    slots: int  # slots leased
    starts: int  # slots started in
    missed: int  # slots that passed with no start


class GlobalRateLimiter(RateLimiter):
    """Thread-safe. `clock` (monotonic) and `wall` (epoch seconds) are injectable, with
    `sleep`, for tests.

    A RateLimiter by type, so the worker's roles take either (its `per_second`,
    `interval_s` and `unlimited` are the base's); every method that paces is its own."""

    def __init__(
        self,
        store: WorkerStore,
        env: str,
        per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        super().__init__(per_second, clock=clock, sleep=sleep)
        self.store = store
        self.env = env
        self._wall = wall
        self._leasing = threading.Lock()  # one lease request at a time per worker
        self._slots: deque[float] = deque()  # leased slots not started in, monotonic, in order
        self._token_upto = -math.inf  # slots up to here back tokens already handed out
        self._lease_max = max(LEASE_MIN, math.ceil(per_second * LEASE_S))
        # The first lease is a full one: a worker starting up has work waiting, usually.
        self._starts_since_lease = self._lease_max // 2
        self._idle = False  # the last receive came back empty: probe without a slot
        self._last_grant = 0
        self._granted_at = 0.0
        # How long a receive takes (smoothed): leases ask for no slot sooner than this from
        # now, so the messages received for a slot are there when it comes.
        self._receive_s = 0.0
        self._leases = self._requests = self._leased = self._starts = self._missed = 0

    def stats(self) -> LimiterStats:
        with self._lock:
            return LimiterStats(
                self._leases, self._requests, self._leased, self._starts, self._missed
            )

    # ---------------------------------------------------------------- the limiter interface

    def acquire(
        self, count: int, stop: threading.Event | None = None, *, ahead_s: float = 0.0
    ) -> int:
        """Up to `count` tokens, one per leased slot due within READ_AHEAD_S not yet backing
        a token; blocks until at least one is. 0 only when `stop` is set while waiting.
        (`ahead_s` is the process limiter's read-ahead; here the leased slots set it.)

        After a receive that came back empty the worker is idle: one token is granted
        without a slot (the receive is a probe), so a worker waiting on an empty queue
        leases nothing and takes no slot from the others; the start, if a message comes,
        still waits in `begin` for a leased slot."""
        if count < 1:
            raise ValueError("count must be at least 1")
        while True:
            with self._lock:
                if self._idle:
                    self._last_grant = 1
                    return 1
                now = self._clock()
                self._prune(now)
                ahead = [slot for slot in self._slots if slot > self._token_upto]
                due = [slot for slot in ahead if slot <= now + READ_AHEAD_S][:count]
                lease_now = len(ahead) - len(due) < LEASE_AHEAD_SHARE * self._lease_size()
                if due:
                    self._token_upto = due[-1]
                    self._last_grant = len(due)
                    self._granted_at = now
                delay = ahead[0] - READ_AHEAD_S - now if ahead and not due else 0.0
            if lease_now and self._lease(stop):
                return 0
            if due:
                return len(due)
            if delay > 0 and self._wait(min(delay, READ_AHEAD_S), stop):
                return 0
            if stop is not None and stop.is_set():
                return 0

    def give_back(self, count: int) -> None:
        """Tokens a receive did not use back their slots again. A receive that used none of
        its tokens makes the worker idle (see `acquire`)."""
        with self._lock:
            if self._granted_at:  # the poller gives back right after each receive
                took = self._clock() - self._granted_at
                self._receive_s = 0.8 * self._receive_s + 0.2 * min(took, READ_AHEAD_S / 2)
                self._granted_at = 0.0
            if count <= 0:
                return
            if count >= self._last_grant:
                self._idle = True
            taken = [slot for slot in self._slots if slot <= self._token_upto]
            keep = len(taken) - count
            self._token_upto = taken[keep - 1] if keep > 0 else -math.inf

    def begin(self, stop: threading.Event | None = None) -> bool:
        """Block until the next leased slot, and start in it; True if `stop` was set first."""
        while True:
            with self._lock:
                self._idle = False
                now = self._clock()
                self._prune(now)
                if self._slots and now >= self._slots[0]:
                    self._slots.popleft()
                    self._starts += 1
                    self._starts_since_lease += 1
                    return False
                delay = self._slots[0] - now if self._slots else None
            if delay is None:
                if self._lease(stop):
                    return True
            elif self._wait(delay, stop):
                return True

    # ---------------------------------------------------------------- internals

    def _lease_size(self) -> int:
        return max(LEASE_MIN, min(self._lease_max, 2 * self._starts_since_lease))

    def _prune(self, now: float) -> None:
        """Drop the slots whose window has passed (under the lock)."""
        while self._slots and self._slots[0] + self.interval_s <= now:
            self._slots.popleft()
            self._missed += 1

    def _lease(self, stop: threading.Event | None) -> bool:
        """Lease the next slots unless another thread of this worker did meanwhile; retries a
        failing store a few times, then raises its StateError. True if `stop` was set."""
        with self._leasing:
            with self._lock:
                now = self._clock()
                self._prune(now)
                unclaimed = sum(1 for slot in self._slots if slot > self._token_upto)
                if unclaimed >= LEASE_AHEAD_SHARE * self._lease_size() and self._slots:
                    return False
                size = self._lease_size()
                lead = self._receive_s
            for pause in (*LEASE_RETRY_PAUSES_S, None):
                asked_mono, asked_wall = self._clock(), self._wall()
                try:
                    lease = self.store.lease_slots(
                        self.env, size, self.interval_s, asked_wall + lead
                    )
                    break
                except StateError as exc:
                    if pause is None:
                        raise
                    event(
                        exc.code,
                        f"leasing rate-limit slots failed, retrying in {pause:g} s: {exc}",
                        level=logging.WARNING,
                    )
                    if self._wait(pause, stop):
                        return True
            offset = lease.first_s - asked_wall + asked_mono
            with self._lock:
                after = self._slots[-1] if self._slots else -math.inf
                for n in range(lease.count):
                    slot = offset + n * lease.interval_s
                    if slot > after:  # a skewed clock step could map one before the last
                        self._slots.append(slot)
                self._leases += 1
                self._requests += lease.requests
                self._leased += lease.count
                self._starts_since_lease = 0
            return False


def rate_limiter(per_second: float | None, scope: str, store: WorkerStore, env: str) -> RateLimiter:
    """The worker's limiter: shared by the environment's workers when `scope` is global and
    there is a rate to share, this process's own otherwise."""
    if scope == "global" and per_second is not None:
        return GlobalRateLimiter(store, env, per_second)
    return RateLimiter(per_second)


def log_limiter(limiter: RateLimiter) -> None:
    """At the end of a worker with a global limit: what its leases cost (RAAS_RATE_LIMIT_SHARED)."""
    if not isinstance(limiter, GlobalRateLimiter):
        return
    stats = limiter.stats()
    per_start = stats.requests / stats.starts if stats.starts else None
    event(
        InfoCode.RATE_LIMIT_SHARED,
        f"global rate limit: {stats.leases} lease(s), {stats.requests} store request(s) for"
        f" {stats.starts} start(s)",
        leases=stats.leases,
        requests=stats.requests,
        slots=stats.slots,
        starts=stats.starts,
        missed=stats.missed,
        requests_per_start=None if per_start is None else round(per_start, 3),
    )
