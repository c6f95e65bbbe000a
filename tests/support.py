"""Test doubles and waiting helpers shared by several test modules."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class FakeClock:
    """A clock that moves only when told: `advance`, or `sleep` (recorded in `slept`)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def wait_until(condition: Callable[[], T], timeout_s: float = 10.0, every_s: float = 0.01) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail the test
    after `timeout_s`. Waiting on a condition, never on a guess of how long something takes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {condition}")
        time.sleep(every_s)
