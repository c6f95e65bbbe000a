"""The worker's recorder: per-second run statistics for `runs report`, and the Prometheus
metrics of `worker --metrics-port`, fed by a few hooks in the roles.

- `sink_call(run_id, cron)` times one sink call (the handler wraps `sink.apply` in it);
- `outcomes(items)` counts settled messages (the settler, where it counts them in runs);
- `limiter_wait()` times a start's wait for the rate limiter (the handler).

Counts gather in memory, one `StatsRow` per run and second, and a thread of the recorder's
own writes the seconds that are over every `flush_every_s`, so State sees a few rows per
second per worker whatever the message rate, never a write per message. A write that fails
is tried again at the next flush; the statistics never stop the worker.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from raasctl.codes import ErrorCode, InfoCode
from raasctl.config import CRON_NAMES
from raasctl.errors import RaasctlError
from raasctl.logs import event
from raasctl.runstats import StatsRow
from raasctl.state.stats_base import RunStatsStore
from raasctl.worker.messages import Settled

if TYPE_CHECKING:
    from raasctl.state.base import State
    from raasctl.worker.metrics import WorkerMetrics
    from raasctl.worker.options import WorkerOptions

FLUSH_EVERY_S = 1.0
# Rows kept for a store that keeps failing: about ten minutes of one busy run, then the
# oldest go (with a warning), so memory stays bounded.
MAX_PENDING_ROWS = 600
LIMITER_WAIT_MIN_S = 0.001  # shorter is no wait, only the limiter's bookkeeping
UNKNOWN_CRON = "unknown"


def worker_name() -> str:
    """`host:pid:4 hex`: unique across machines and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


def cron_of(key: str) -> str:
    """An entry key starts with its cron (`<cron>:<entity id>:...`, DESIGN.md "Message
    envelope"); a message that is no envelope is known by its id and has none."""
    prefix = key.split(":", 1)[0]
    return prefix if prefix in CRON_NAMES else UNKNOWN_CRON


class Recorder:
    """Thread-safe: every slot and the settler call in. With no store and no metrics it
    records nothing (a Worker built without them, as in tests of other roles)."""

    def __init__(
        self,
        store: RunStatsStore | None = None,
        metrics: WorkerMetrics | None = None,
        *,
        worker: str | None = None,
        concurrency: int = 0,
        rate_per_s: float | None = None,
        clock: Callable[[], float] = time.time,
        flush_every_s: float = FLUSH_EVERY_S,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.worker = worker or worker_name()
        self.concurrency = concurrency
        self.rate_per_s = rate_per_s
        self._clock = clock
        self._flush_every_s = flush_every_s
        self._lock = threading.Lock()
        self._open: dict[tuple[str, int], StatsRow] = {}  # (run, second) -> its row so far
        self._unwritten: list[StatsRow] = []  # rows whose write failed, tried again
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raasctl-recorder", daemon=True)

    # ------------------------------------------------------------ hooks

    @contextmanager
    def sink_call(self, run_id: str, cron: str) -> Iterator[None]:
        """Time the sink call in the block, failed or not."""
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.sink_latency.labels(cron).observe(seconds)
            if self.store is not None:
                with self._lock:
                    self._row(run_id, cron).add_latency(seconds * 1000)

    @contextmanager
    def sink_calls(self, entries: Sequence[tuple[str, str]]) -> Iterator[None]:
        """Time one sink call that applies several entries ((run_id, cron) each): each
        entry's latency is its share of the call, what the entry costs the slot, so that
        concurrency ÷ p50 stays the bound of a worker whose sink applies batches. The
        entries of one run and cron are added together (a batch is mostly one run)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds = (time.perf_counter() - started) / max(1, len(entries))
            per_run = Counter(entries)
            if self.metrics is not None:
                for (_, cron), calls in per_run.items():
                    for _ in range(calls):
                        self.metrics.sink_latency.labels(cron).observe(seconds)
            if self.store is not None:
                with self._lock:
                    for (run_id, cron), calls in per_run.items():
                        self._row(run_id, cron).add_latency(seconds * 1000, calls)

    def outcomes(self, items: Sequence[Settled]) -> None:
        """Count settled messages: each one's outcome (the run's counter names), added up
        per run, cron and outcome first, so a batch takes the lock once."""
        counts = Counter((item.run_id, cron_of(item.key), item.outcome.value) for item in items)
        if self.metrics is not None:
            for (_, cron, outcome), count in counts.items():
                self.metrics.messages.labels(outcome, cron).inc(count)
        if self.store is None:
            return
        with self._lock:
            for (run_id, cron, outcome), count in counts.items():
                if run_id is not None:
                    row = self._row(run_id, cron)
                    setattr(row, outcome, getattr(row, outcome) + count)

    @contextmanager
    def limiter_wait(self) -> Iterator[None]:
        """Time a wait for the rate limiter in the block."""
        started = time.perf_counter()
        try:
            yield
        finally:
            waited = time.perf_counter() - started
            if self.metrics is not None and waited >= LIMITER_WAIT_MIN_S:
                self.metrics.limiter_waits.inc()
                self.metrics.limiter_wait_seconds.inc(waited)

    def watch_in_flight(self, in_flight: Callable[[], int]) -> None:
        if self.metrics is not None:
            self.metrics.watch_in_flight(in_flight)

    # ------------------------------------------------------------ flushing

    def start(self) -> None:
        if self.store is not None:
            self._thread.start()

    def stop(self) -> None:
        """Write every row, the current second's too: nothing more comes after a stop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.flush(final=True)

    def flush(self, *, final: bool = False) -> None:
        """Write the rows of seconds that are over (`final`: all of them)."""
        if self.store is None:
            return
        now = int(self._clock())
        with self._lock:
            done = [key for key in self._open if final or key[1] < now]
            rows = self._unwritten + [self._open.pop(key) for key in done]
            self._unwritten = []
        if not rows:
            return
        try:
            self.store.write(rows)
        except RaasctlError as exc:
            self._keep_unwritten(rows, exc)

    def _keep_unwritten(self, rows: list[StatsRow], exc: RaasctlError) -> None:
        dropped = max(0, len(rows) - MAX_PENDING_ROWS)
        event(
            ErrorCode.STATE_FAILED,
            f"writing {len(rows)} run statistics row(s) failed: {exc}"
            + (f"; {dropped} oldest dropped" if dropped else "; tried again in a second"),
            level=logging.WARNING,
        )
        with self._lock:
            self._unwritten = rows[dropped:] + self._unwritten

    def _run(self) -> None:
        while not self._stop.wait(self._flush_every_s):
            self.flush()

    def _row(self, run_id: str, cron: str) -> StatsRow:
        """This second's row of a run (the caller holds the lock)."""
        second = int(self._clock())
        row = self._open.get((run_id, second))
        if row is None:
            row = StatsRow(
                run_id=run_id,
                second=second,
                worker=self.worker,
                cron=cron,
                concurrency=self.concurrency,
                rate_per_s=self.rate_per_s,
            )
            self._open[(run_id, second)] = row
        elif row.cron == UNKNOWN_CRON:
            row.cron = cron
        return row


@contextmanager
def open_recorder(state: State, options: WorkerOptions) -> Iterator[Recorder]:
    """The recorder of a worker on `state`: its statistics kept with the state, and metrics
    served when `options.metrics_port` is set (closed afterwards)."""
    store = state.stats()
    metrics = None
    try:
        if options.metrics_port is not None:
            # prometheus_client is loaded only by a worker that serves metrics.
            from raasctl.worker.metrics import WorkerMetrics

            metrics = WorkerMetrics()
            port = metrics.serve(options.metrics_host, options.metrics_port)
            event(
                InfoCode.METRICS_SERVING,
                f"serving metrics on http://{options.metrics_host}:{port}/metrics",
                host=options.metrics_host,
                port=port,
            )
        yield Recorder(
            store, metrics, concurrency=options.concurrency, rate_per_s=options.rate_per_s
        )
    finally:
        if metrics is not None:
            metrics.close()
        store.close()
