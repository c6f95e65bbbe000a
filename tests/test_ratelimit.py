"""The worker's rate limiter: even spacing, a burst of 1, tokens before the receive."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from raasctl.ratelimit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_unlimited_grants_every_token_at_once() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    assert limiter.acquire(10) == 10
    assert limiter.start_at() == clock.now
    assert limiter.start_at() == clock.now
    assert clock.slept == []


def test_tokens_are_spaced_evenly_with_a_burst_of_one() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4, clock=clock, sleep=clock.sleep)
    granted_at = []
    for _ in range(5):
        assert limiter.acquire(10) == 1  # never more than one: no burst
        granted_at.append(clock.now)
    assert [round(b - a, 9) for a, b in itertools.pairwise(granted_at)] == [0.25] * 4


def test_idle_time_does_not_accumulate_tokens() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    limiter.acquire(1)
    clock.now += 60  # a long idle poll
    assert limiter.acquire(10) == 1
    before = clock.now
    assert limiter.acquire(10) == 1
    assert clock.now - before == pytest.approx(0.1)


def test_given_back_token_can_be_taken_again_at_once() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock, sleep=clock.sleep)
    limiter.acquire(1)
    limiter.give_back(1)  # the receive came back empty
    before = clock.now
    assert limiter.acquire(1) == 1
    assert clock.now == before


def test_starts_are_spaced_even_when_receives_finish_together() -> None:
    """Receive latency varies; starts must still be one interval apart."""
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    first = limiter.start_at()
    second = limiter.start_at()  # a second message arriving in the same instant
    third = limiter.start_at()
    assert first == clock.now
    assert second - first == pytest.approx(0.05)
    assert third - second == pytest.approx(0.05)


def test_give_back_never_brings_starts_closer() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    first = limiter.start_at()
    limiter.give_back(5)
    assert limiter.start_at() - first == pytest.approx(0.1)


def test_acquire_returns_zero_when_stopped_while_waiting() -> None:
    limiter = RateLimiter(0.5)  # one token every 2 s
    stop = threading.Event()
    assert limiter.acquire(1, stop=stop) == 1
    threading.Timer(0.05, stop.set).start()
    began = time.monotonic()
    assert limiter.acquire(1, stop=stop) == 0
    assert time.monotonic() - began < 1.0


def test_wait_until_reports_a_stop() -> None:
    limiter = RateLimiter(1)
    stop = threading.Event()
    stop.set()
    assert limiter.wait_until(time.monotonic() + 5, stop) is True
    assert limiter.wait_until(time.monotonic() - 1) is False


def test_rejects_a_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_threads_sharing_a_limiter_never_start_more_than_the_rate_in_any_second() -> None:
    """Eight threads at 50/s for about a second: starts at least 20 ms apart, and the total
    is what the rate allows."""
    limiter = RateLimiter(50)
    starts: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 1.0

    def slot() -> None:
        while time.monotonic() < deadline:
            limiter.acquire(1)
            at = limiter.start_at()
            limiter.wait_until(at)
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=slot) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    starts.sort()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.02 - 0.002
    # Tokens taken before the deadline may start after it (at most one per thread).
    assert 45 <= len(starts) <= 50 + 8
    assert max(sum(1 for s in starts if t <= s < t + 1.0) for t in starts) <= 50
