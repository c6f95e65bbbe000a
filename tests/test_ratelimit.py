"""The worker's rate limiter: even spacing, a burst of 1, tokens before the receive, and never
more than the rate in any one-second window."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from support import FakeClock

from raasctl.ratelimit import SPACING_MARGIN, RateLimiter


def spaced(per_second: float) -> float:
    return (1 + SPACING_MARGIN) / per_second


def test_unlimited_grants_every_token_and_start_at_once() -> None:
    clock = FakeClock(100.0)
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    assert limiter.acquire(10) == 10
    assert limiter.begin() is False
    assert limiter.begin() is False
    assert clock.slept == []


def test_tokens_are_spaced_evenly_with_a_burst_of_one() -> None:
    clock = FakeClock(100.0)
    limiter = RateLimiter(4, clock=clock, sleep=clock.sleep)
    granted_at = []
    for _ in range(5):
        assert limiter.acquire(10) == 1  # never more than one: no burst
        granted_at.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(granted_at)]
    assert gaps == pytest.approx([spaced(4)] * 4)


def test_idle_time_does_not_accumulate_tokens_or_starts() -> None:
    clock = FakeClock(100.0)
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    limiter.acquire(1)
    limiter.begin()
    clock.now += 60  # a long idle poll
    assert limiter.acquire(10) == 1
    assert limiter.begin() is False
    before = clock.now
    assert limiter.acquire(10) == 1
    limiter.begin()
    assert clock.now - before == pytest.approx(spaced(10))


def test_a_late_wake_up_does_not_push_later_starts_back() -> None:
    """The schedule is a grid: one start 30 ms late leaves the next on time."""
    clock = FakeClock(100.0)
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    limiter.begin()
    first = clock.now
    clock.now = first + spaced(10) + 0.03  # woke 30 ms late
    limiter.begin()
    limiter.begin()
    assert clock.now == pytest.approx(first + 2 * spaced(10))


def test_making_up_a_large_delay_never_halves_the_spacing() -> None:
    clock = FakeClock(100.0)
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    limiter.begin()
    late = clock.now + spaced(10) + 0.09  # 90 ms late: nearly a whole interval
    clock.now = late
    limiter.begin()
    limiter.begin()
    assert clock.now == pytest.approx(late + spaced(10) / 2)


def test_tokens_behind_a_slow_receive_are_made_up_at_once() -> None:
    clock = FakeClock(100.0)
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    assert limiter.acquire(10) == 1
    clock.now += spaced(20) + 0.2  # a 200 ms receive: the next token and 3 more are due
    assert limiter.acquire(10) == 4
    before = clock.now
    assert limiter.acquire(10) == 1  # back on schedule: the next one is 5 intervals on
    assert clock.now - before == pytest.approx(5 * spaced(20) - (spaced(20) + 0.2))


def test_made_up_tokens_are_bounded_by_the_count_asked_for() -> None:
    clock = FakeClock(100.0)
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    limiter.acquire(1)
    clock.now += spaced(20) + 0.2
    assert limiter.acquire(2) == 2
    assert limiter.acquire(10) == 2  # the rest of those due


def test_given_back_token_can_be_taken_again_at_once() -> None:
    clock = FakeClock(100.0)
    limiter = RateLimiter(2, clock=clock, sleep=clock.sleep)
    limiter.acquire(1)
    limiter.give_back(1)  # the receive came back empty
    before = clock.now
    assert limiter.acquire(1) == 1
    assert clock.now == before


def test_starts_are_spaced_even_when_messages_arrive_together() -> None:
    """Receive latency varies; three messages ready at the same instant still start one
    interval apart."""
    clock = FakeClock(100.0)
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(3):
        limiter.begin()
        starts.append(clock.now)
    assert [b - a for a, b in itertools.pairwise(starts)] == pytest.approx([spaced(20)] * 2)


def test_give_back_never_brings_starts_closer() -> None:
    clock = FakeClock(100.0)
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    limiter.begin()
    first = clock.now
    limiter.give_back(5)
    limiter.begin()
    assert clock.now - first == pytest.approx(spaced(10))


def test_window_check_holds_even_when_the_grid_lets_starts_bunch() -> None:
    """Late wake-ups followed by on-time ones bunch starts on the grid; the check on actual
    start times still keeps any one-second window at the rate."""
    clock = FakeClock(100.0)
    limiter = RateLimiter(5, clock=clock, sleep=clock.sleep)
    starts = []
    for n in range(30):
        if n % 5 == 0:
            clock.now += 0.15  # a slow thread, now and then
        limiter.begin()
        starts.append(clock.now)
    assert max(sum(1 for s in starts if t <= s < t + 1.0) for t in starts) <= 5


def test_acquire_returns_zero_when_stopped_while_waiting() -> None:
    limiter = RateLimiter(0.5)  # one token every 2 s
    stop = threading.Event()
    assert limiter.acquire(1, stop=stop) == 1
    threading.Timer(0.05, stop.set).start()
    began = time.monotonic()
    assert limiter.acquire(1, stop=stop) == 0
    assert time.monotonic() - began < 1.0


def test_begin_reports_a_stop_while_waiting() -> None:
    limiter = RateLimiter(0.5)
    stop = threading.Event()
    assert limiter.begin(stop) is False
    threading.Timer(0.05, stop.set).start()
    began = time.monotonic()
    assert limiter.begin(stop) is True
    assert time.monotonic() - began < 1.0


def test_rejects_a_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_threads_sharing_a_limiter_never_start_more_than_the_rate_in_any_second() -> None:
    """Eight threads at 50/s for about 1.5 s: at most 50 starts in any one-second window,
    and close to the rate on average."""
    limiter = RateLimiter(50)
    starts: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 1.5

    def slot() -> None:
        while time.monotonic() < deadline:
            limiter.acquire(1)
            limiter.begin()
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=slot) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    starts.sort()
    assert max(sum(1 for s in starts if t <= s < t + 1.0) for t in starts) <= 50
    assert len(starts) >= 0.9 * 50 * 1.5
