"""How the worker command answers SIGINT and SIGTERM.

The first signal asks for a graceful stop and says so at once; a second one quits now (exit
130) after printing the summary so far. coreutils `timeout` (and some supervisors) send
SIGTERM twice in quick succession, so a SIGTERM within `SAME_REQUEST_S` of the first is the
same request. The decision is a pure function of the signal history (`SignalGate`); the
handler only hands the work to a thread, since the main thread it interrupts may hold the
very locks that counting in-flight work needs.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from types import FrameType
from typing import Any

from raasctl.codes import InfoCode
from raasctl.logs import event
from raasctl.worker import Worker

SAME_REQUEST_S = 2.0
QUIT_EXIT_CODE = 130  # 128 + SIGINT, what shells report for an interrupted command


class Answer(StrEnum):
    STOP = "stop"  # the first request: stop receiving, finish in-flight work
    SAME = "same"  # a repeat of the first request: nothing more to do
    QUIT = "quit"  # a second request: exit now


@dataclass
class SignalGate:
    """The pure decision: what a signal arriving at `now` means."""

    same_request_s: float = SAME_REQUEST_S
    _first: tuple[int, float] | None = field(default=None, init=False)
    _quitting: bool = field(default=False, init=False)

    def on_signal(self, signum: int, now: float) -> Answer:
        if self._quitting:
            return Answer.SAME
        if self._first is None:
            self._first = (signum, now)
            return Answer.STOP
        first_signum, first_at = self._first
        if (
            signum == signal.SIGTERM
            and first_signum == signal.SIGTERM
            and now - first_at < self.same_request_s
        ):
            return Answer.SAME
        self._quitting = True
        return Answer.QUIT


def stopping_message(in_flight: int, signum: int) -> str:
    again = "Ctrl-C again" if signum == signal.SIGINT else "Ctrl-C, or SIGTERM again after 2 s,"
    return f"stopping: finishing {in_flight} in flight ({again} to quit now)"


@contextmanager
def stop_on_signals(
    running: Worker,
    *,
    show_summary: Callable[[], None],
    on_terminal: bool,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[None]:
    """While the block runs: the first SIGTERM/SIGINT stops `running` gracefully; a second
    prints the summary so far (`show_summary`) and exits 130 at once."""
    gate = SignalGate()
    numbers = (signal.SIGTERM, signal.SIGINT)
    previous: dict[int, Any] = {number: signal.getsignal(number) for number in numbers}

    def first_stop(signum: int) -> None:
        running.stop()
        message = stopping_message(running.stats().in_flight, signum)
        if on_terminal:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()
        else:
            event(InfoCode.WORKER_STOPPING, message, reason="signal", signal=signum)

    def quit_now() -> None:
        # In-flight messages are left to their visibility timeout (another worker takes
        # them; a repeated apply is harmless, the sinks are idempotent).
        try:
            show_summary()
            if on_terminal:
                # The live progress bar hid the cursor; os._exit skips its cleanup.
                sys.stderr.write("\x1b[?25h")
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(QUIT_EXIT_CODE)

    def handle(signum: int, _frame: FrameType | None) -> None:
        answer = gate.on_signal(signum, clock())
        if answer is Answer.STOP:
            threading.Thread(target=first_stop, args=(signum,), daemon=True).start()
        elif answer is Answer.QUIT:
            threading.Thread(target=quit_now, daemon=True).start()

    for signum in numbers:
        signal.signal(signum, handle)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
