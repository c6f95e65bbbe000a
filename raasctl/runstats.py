"""Per-second run statistics: the rows the worker records, and the report built from them.

A worker writes one `StatsRow` per run, per second it handled messages of that run: its
outcome counts and a histogram of its sink calls' latency over fixed log-spaced buckets
(`bucket_of`). Rows from every worker merge by adding (counts and buckets alike), so the
report of a run drained by many workers is exact in its counts, and its percentiles are
within one bucket (`BUCKET_RATIO`, about 12 %) of the true ones.

`build_report` merges a run's rows into its timeline, latency percentiles and the bound the
run could reach: min(rate limit, concurrency / p50 latency).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from raasctl.state.base import RunRecord

# 20 buckets a decade from 0.1 ms: bucket i holds [MIN_MS * r**i, MIN_MS * r**(i+1)). Fixed,
# so rows from any worker or version merge bucket by bucket.
BUCKETS_PER_DECADE = 20
BUCKET_RATIO = 10 ** (1 / BUCKETS_PER_DECADE)
MIN_MS = 0.1
BUCKETS = 8 * BUCKETS_PER_DECADE  # up to 10,000 s; slower calls land in the last bucket
PERCENTILES = (50, 90, 95, 99)


def bucket_of(ms: float) -> int:
    """The histogram bucket of a latency in milliseconds."""
    if ms <= MIN_MS:
        return 0
    return min(BUCKETS - 1, int(math.log10(ms / MIN_MS) * BUCKETS_PER_DECADE))


def bucket_bounds(index: int) -> tuple[float, float]:
    """A bucket's lower and upper edge in milliseconds."""
    return MIN_MS * BUCKET_RATIO**index, MIN_MS * BUCKET_RATIO ** (index + 1)


@dataclass
class StatsRow:
    """One worker's second of one run. `second` is a Unix time (whole seconds, UTC)."""

    run_id: str
    second: int
    worker: str
    cron: str = ""
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    dead_lettered: int = 0
    superseded: int = 0
    latency: dict[int, int] = field(default_factory=dict)  # bucket -> sink calls
    latency_max_ms: float = 0.0
    concurrency: int = 0  # the worker's slots
    rate_per_s: float | None = None  # the worker's rate limit (None: unlimited)

    def add_latency(self, ms: float, calls: int = 1) -> None:
        """`calls` sink calls of `ms` each (a batch's entries share one call's time)."""
        bucket = bucket_of(ms)
        self.latency[bucket] = self.latency.get(bucket, 0) + calls
        self.latency_max_ms = max(self.latency_max_ms, ms)

    @property
    def empty(self) -> bool:
        return not (self.latency or self.handled)

    @property
    def handled(self) -> int:
        return self.succeeded + self.failed + self.retries + self.dead_lettered + self.superseded


def percentile(histogram: Mapping[int, int], q: float) -> float | None:
    """The q-th percentile (0-100) in milliseconds, interpolated geometrically inside its
    bucket; None for an empty histogram."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = q / 100 * total
    seen = 0
    for index in sorted(histogram):
        count = histogram[index]
        if seen + count >= rank:
            low, high = bucket_bounds(index)
            inside = (rank - seen) / count if count else 0.0
            return float(low * (high / low) ** inside)
        seen += count
    return bucket_bounds(max(histogram))[1]  # pragma: no cover - rank <= total always


def merge(histograms: Iterable[Mapping[int, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for histogram in histograms:
        for index, count in histogram.items():
            merged[index] = merged.get(index, 0) + count
    return merged


@dataclass(frozen=True)
class Second:
    """One second of a run, every worker's rows added: `t` counts from the run's first."""

    t: int
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    dead_lettered: int = 0
    superseded: int = 0
    workers: int = 0
    latency: Mapping[int, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, int]:
        return {
            "t": self.t,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "retries": self.retries,
            "dead_lettered": self.dead_lettered,
            "workers": self.workers,
        }


@dataclass(frozen=True)
class RunReport:
    run: RunRecord
    elapsed_s: float | None
    per_second: float | None
    bound_per_second: float | None
    rate_limit: float | None  # the summed rate limit of the workers at their busiest
    concurrency: int  # the summed slots of the workers at their busiest
    latency_ms: dict[str, float | None]
    sink_calls: int
    timeline: list[Second]

    @property
    def per_hour(self) -> float | None:
        return None if self.per_second is None else self.per_second * 3600

    @property
    def of_bound(self) -> float | None:
        """How close the run came to its bound (1.0: at it)."""
        if self.per_second is None or not self.bound_per_second:
            return None
        return self.per_second / self.bound_per_second

    def as_json(self) -> dict[str, Any]:
        """The documented shape of `runs report --format json`."""
        return {
            "run_id": self.run.run_id,
            "cron": self.run.cron,
            "status": self.run.status,
            "elapsed_s": _rounded(self.elapsed_s, 3),
            "per_second": _rounded(self.per_second, 3),
            "per_hour": _rounded(self.per_hour, 1),
            "bound_per_second": _rounded(self.bound_per_second, 3),
            "latency_ms": {name: _rounded(value, 2) for name, value in self.latency_ms.items()},
            "timeline": [second.as_json() for second in self.timeline],
        }


def build_report(run: RunRecord, rows: Iterable[StatsRow], now: datetime) -> RunReport:
    """Merge a run's rows (any workers, any order) into its report. Elapsed time runs from
    the run's first processed message to its end (or `now` while it runs); rates count the
    messages accounted for (`RunRecord.done`)."""
    by_second: dict[int, list[StatsRow]] = {}
    for row in rows:
        by_second.setdefault(row.second, []).append(row)
    timeline = _timeline(by_second)
    latency = merge(second.latency for second in timeline)
    maximum = max((row.latency_max_ms for group in by_second.values() for row in group), default=0)
    latency_ms: dict[str, float | None] = {}
    for q in PERCENTILES:
        estimate = percentile(latency, q)
        # A bucket's estimate can pass the largest value seen; no percentile is above it.
        latency_ms[f"p{q}"] = None if estimate is None else min(estimate, maximum)
    latency_ms["max"] = maximum if latency else None
    concurrency, rate_limit = _capacity(by_second)
    p50 = latency_ms["p50"]
    candidates = [rate_limit] if rate_limit is not None else []
    if p50 and concurrency:
        candidates.append(concurrency / (p50 / 1000))
    elapsed = _elapsed(run, now)
    per_second = run.done / elapsed if elapsed and run.done else None
    return RunReport(
        run=run,
        elapsed_s=elapsed,
        per_second=per_second,
        bound_per_second=min(candidates) if candidates else None,
        rate_limit=rate_limit,
        concurrency=concurrency,
        latency_ms=latency_ms,
        sink_calls=sum(latency.values()),
        timeline=timeline,
    )


def _timeline(by_second: Mapping[int, list[StatsRow]]) -> list[Second]:
    """Every second from the first row's to the last's; seconds nobody wrote are zeros."""
    if not by_second:
        return []
    first, last = min(by_second), max(by_second)
    timeline = []
    for second in range(first, last + 1):
        group = by_second.get(second, [])
        timeline.append(
            Second(
                t=second - first,
                succeeded=sum(row.succeeded for row in group),
                failed=sum(row.failed for row in group),
                retries=sum(row.retries for row in group),
                dead_lettered=sum(row.dead_lettered for row in group),
                superseded=sum(row.superseded for row in group),
                workers=len({row.worker for row in group}),
                latency=merge(row.latency for row in group),
            )
        )
    return timeline


def _capacity(by_second: Mapping[int, list[StatsRow]]) -> tuple[int, float | None]:
    """The workers' summed slots and rate limits in their busiest second (None: some worker
    ran unlimited, so the rate bounds nothing)."""
    concurrency, rate, unlimited = 0, 0.0, False
    for group in by_second.values():
        workers = {row.worker: row for row in group}.values()
        slots = sum(row.concurrency for row in workers)
        if slots > concurrency:
            concurrency = slots
        if any(row.rate_per_s is None for row in workers):
            unlimited = True
        else:
            rate = max(rate, sum(row.rate_per_s or 0.0 for row in workers))
    return concurrency, None if unlimited or not by_second else rate


def _elapsed(run: RunRecord, now: datetime) -> float | None:
    if run.started_at is None:
        return None
    return max(0.0, ((run.finished_at or now) - run.started_at).total_seconds())


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
