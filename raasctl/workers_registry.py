"""The worker registry: every running worker's record in the environment's state store.

A worker writes its record as it starts (`Presence.register`), its housekeeper refreshes it
every `refresh_s` (10 s) with the messages it processed and its current rate, and a clean
stop removes it. A worker that dies (SIGKILL, a lost host) leaves its record behind: a
record not refreshed for three intervals is stale and no longer counts as live, so it drops
out of `raasctl workers` within 30 s of the death. Staleness is judged by the reader's
clock against the writer's `refreshed_at`, so hosts' clocks that differ by seconds shift
that moment by as much; nothing else depends on it.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from raasctl.errors import StateError
from raasctl.logs import event
from raasctl.state.base import RunRecord
from raasctl.state.workers import WorkerRecord, WorkerStore

REFRESH_S = 10.0
MISSED_REFRESHES = 3  # a record this many refreshes late is stale


def new_worker_id() -> str:
    return uuid.uuid4().hex[:12]


def is_live(record: WorkerRecord, now: datetime) -> bool:
    return now - record.refreshed_at <= timedelta(seconds=MISSED_REFRESHES * record.refresh_s)


def live_workers(store: WorkerStore, env: str, now: datetime) -> list[WorkerRecord]:
    """The environment's workers whose records are not stale, oldest first."""
    return [record for record in store.list_workers(env) if is_live(record, now)]


def serving(workers: Iterable[WorkerRecord], run: RunRecord) -> int:
    """How many of these (live) workers serve the run: those of its environment that take
    its cron (no --cron takes every cron). A finished run has none."""
    if run.finished_at is not None:
        return 0
    return sum(
        1
        for worker in workers
        if worker.env == run.env and (not worker.crons or run.cron in worker.crons)
    )


def worker_row(record: WorkerRecord, now: datetime) -> dict[str, Any]:
    """`raasctl workers`'s JSON row."""
    return {
        "worker_id": record.worker_id,
        "env": record.env,
        "host": record.host,
        "pid": record.pid,
        "crons": list(record.crons),
        "started_at": record.started_at.isoformat(),
        "refreshed_at": record.refreshed_at.isoformat(),
        "uptime_s": round((now - record.started_at).total_seconds()),
        "processed": record.processed,
        "per_second": round(record.per_second, 2),
        "rate_scope": record.rate_scope,
        "rate_limit": record.rate_limit,
    }


class Presence:
    """This worker's record: `register` at start, `tick` from the housekeeper (refreshes when
    due), `remove` on a clean stop. A failing store is logged and tried again at the next
    refresh: the registry is for operators and never stops the work."""

    def __init__(
        self,
        store: WorkerStore,
        env: str,
        *,
        crons: Iterable[str],
        rate_scope: str,
        rate_limit: float | None,
        processed: Callable[[], int],
        clock: Callable[[], float],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        refresh_s: float = REFRESH_S,
    ) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._processed = processed
        self._clock = clock
        self._now = now
        started = now()
        self.record = WorkerRecord(
            worker_id=new_worker_id(),
            env=env,
            host=socket.gethostname(),
            pid=os.getpid(),
            crons=tuple(sorted(crons)),
            started_at=started,
            refreshed_at=started,
            rate_scope=rate_scope,
            rate_limit=rate_limit,
            refresh_s=refresh_s,
        )
        self._next_refresh = clock() + refresh_s
        self._last = (clock(), 0)  # (monotonic time, processed) at the previous refresh

    def register(self) -> None:
        self._write(self.record)

    def tick(self, now_mono: float) -> None:
        if now_mono < self._next_refresh:
            return
        self._next_refresh = now_mono + self.refresh_s
        processed = self._processed()
        since, before = self._last
        elapsed = now_mono - since
        per_second = (processed - before) / elapsed if elapsed > 0 else 0.0
        self._last = (now_mono, processed)
        self.record = replace(
            self.record, refreshed_at=self._now(), processed=processed, per_second=per_second
        )
        self._write(self.record)

    def remove(self) -> None:
        try:
            self.store.remove_worker(self.record.env, self.record.worker_id)
        except StateError as exc:
            event(exc.code, f"removing this worker's record failed: {exc}", level=logging.WARNING)

    def _write(self, record: WorkerRecord) -> None:
        try:
            self.store.put_worker(record)
        except StateError as exc:
            event(exc.code, f"writing this worker's record failed: {exc}", level=logging.WARNING)
