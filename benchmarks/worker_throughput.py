"""Benchmark: how fast `raasctl worker` drains the queue, against its theoretical bound.

    .venv/bin/python benchmarks/worker_throughput.py [--only a b c] [--c-runs N] [--c-messages N]

The bound is min(rate limit, concurrency / sink latency). One run of each scenario:

(a) latency-bound: a callback sink answering in 200 ms (tests/callback_server.py, a
    ThreadingHTTPServer in this process), concurrency 16, no rate limit, 800 messages on the
    embedded queue. Bound 16 / 0.2 s = 80 msg/s; target at least 99 % of it.
(b) rate-bound: --rate 20 for 30 s into the SQLite ledger, whose applied_at stamps the
    moment each handler called the sink. Target: on average at least 95 % of 20/s, and never
    more than 20 starts in any one-second window.
(c) zero-latency sink on the embedded queue, one worker process: the SQLite ledger through
    `raasctl worker` (c1), and a no-op sink object in-process (c2, queue and state costs
    only), 50,000 messages each by default. Targets: at least 15,000 msg/s for (c1), the
    ledger applying each receive (up to 500 messages) in one transaction, and 2,000 for (c2).
    On a shared machine one run says little: `--c-runs N` repeats (c) and judges the
    medians. Requests per message on SQS and DynamoDB: benchmarks/worker_requests.py.

The worker runs as a `python -m raasctl worker --until-empty` subprocess except in (c2).
Throughput is the steady rate between the first and the last message started (taken from
the server's arrival times or the ledger's applied_at, stamped once for a batch: the starts
at the last instant are not counted, the last batch's apply being outside the span), which
leaves out interpreter start and the final empty long poll that --until-empty waits for; the
worker's own summary figure (processed / elapsed, both included) is printed beside it.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from callback_server import CallbackServer  # noqa: E402
from fleet import enqueue as enqueue_run  # noqa: E402

from raasctl.envelope import Envelope  # noqa: E402
from raasctl.queues.sqlite import SqliteQueue  # noqa: E402
from raasctl.sinks.base import Applied, Sink  # noqa: E402
from raasctl.state.sqlite import SqliteState  # noqa: E402
from raasctl.worker import Worker, WorkerOptions  # noqa: E402

CRON = "clientDepositUpdate"
C_TARGET = 15_000  # (c1): one worker process, embedded queue, ledger sink, no latency


# ---------------------------------------------------------------- set-up


def enqueue(db: Path, count: int, run_id: str = "bench") -> None:
    queue, state = SqliteQueue(db), SqliteState(db)
    enqueue_run(queue, state, run_id, count, "bench")
    queue.close()
    state.close()


def write_config(folder: Path, db: Path, sink: dict[str, Any]) -> Path:
    env = {
        "queue": {"kind": "sqlite", "path": str(db), "visibility_timeout_s": 60},
        "state": {"kind": "sqlite", "path": str(db)},
        "sink": sink,
    }
    path = folder / "raasctl.yaml"
    path.write_text(json.dumps({"default_env": "bench", "environments": {"bench": env}}))
    return path


def run_worker(config: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "raasctl",
        "--config",
        str(config),
        "-q",
        "worker",
        "--format",
        "json",
        *args,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode not in (0, 3):
        raise SystemExit(f"worker failed ({result.returncode}): {result.stderr}")
    summary: dict[str, Any] = json.loads(result.stdout)
    # The worker process's own CPU (user + system), start-up included.
    summary["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return summary


def per_cpu(summary: dict[str, Any]) -> str:
    """Messages per CPU-second of the worker process."""
    return f"   {summary['processed'] / summary['cpu_s']:,.0f} msg per worker CPU-s"


def steady_rate(starts: Sequence[float]) -> float:
    """Messages per second between the first start and the last (sorted `starts`). The
    starts at the last instant are not counted: a batch's entries share one start (the
    ledger stamps a batch once), and the last batch's time to apply is not in the span."""
    before_last = bisect.bisect_left(starts, starts[-1]) if starts else 0
    if before_last == 0:
        return 0.0
    return before_last / (starts[-1] - starts[0])


def max_in_window(starts: Sequence[float], window_s: float = 1.0) -> int:
    """The most starts in any half-open window [t, t + window_s)."""
    best, low = 0, 0
    for high, at in enumerate(starts):
        while starts[low] <= at - window_s:
            low += 1
        best = max(best, high - low + 1)
    return best


def tightest_span(starts: Sequence[float], count: int) -> float:
    """The shortest time any `count` consecutive starts took (sorted `starts`): under a rate
    limit of `count - 1` a second, how far inside one second the closest of them came."""
    spans = [starts[n + count - 1] - starts[n] for n in range(len(starts) - count + 1)]
    return min(spans, default=float("inf"))


def report(name: str, measured: float, bound: float | None, target: float, extra: str = "") -> bool:
    """One line: measured rate, the theoretical bound (None: no bound but the machine's)."""
    ok = measured >= target
    against = (
        f"bound {bound:8.1f} msg/s   {measured / bound:6.1%} of bound" if bound else "no bound"
    )
    print(
        f"{name}: {measured:8.1f} msg/s   {against}   target >= {target:.0f}   "
        f"{'PASS' if ok else 'MISS'}{extra}"
    )
    return ok


# ---------------------------------------------------------------- scenarios


def scenario_a(folder: Path) -> bool:
    count, concurrency, latency = 800, 16, 0.2
    db = folder / "a.db"
    enqueue(db, count)
    with CallbackServer(latency_s=latency) as server:
        sink = {"kind": "http", "base_url": server.base_url, "token": "env:CALLBACK_TOKEN"}
        config = write_config(folder, db, sink)
        env = dict(os.environ, CALLBACK_TOKEN=server.token)
        summary = run_worker(config, "--until-empty", "--concurrency", str(concurrency), env=env)
        starts = server.starts()
    assert summary["succeeded"] == count == len(starts), summary
    bound = concurrency / latency
    # The last `concurrency` starts are still to finish when the last one starts; the steady
    # rate over the starts is what the bound describes.
    return report(
        "(a) 200 ms sink, concurrency 16, no rate limit, 800 msgs",
        steady_rate(starts),
        bound,
        0.99 * bound,
        f"   (worker summary {summary['per_hour'] / 3600:.1f} msg/s incl. start-up and final poll)"
        + per_cpu(summary),
    )


def scenario_b(folder: Path) -> bool:
    rate, seconds, concurrency = 20.0, 30.0, 8
    db = folder / "b.db"
    enqueue(db, int(rate * seconds * 1.5))
    config = write_config(folder, db, {"kind": "sqlite", "path": str(db)})
    summary = run_worker(
        config,
        "--rate",
        str(rate),
        "--max-runtime",
        str(seconds),
        "--concurrency",
        str(concurrency),
    )
    # A start is the sink's apply being called: the ledger stamps it on entry.
    starts = ledger_times(db)
    average = len(starts) / seconds
    peak = max_in_window(starts)
    print(f"    {len(starts)} starts in {seconds:g} s; worker summary {summary}")
    ok_peak = peak <= rate
    ok = report(
        "(b) --rate 20 for 30 s, SQLite ledger sink",
        average,
        rate,
        0.95 * rate,
        f"   most starts in any 1 s window: {peak} (limit {rate:g}) "
        f"{'PASS' if ok_peak else 'MISS'}" + per_cpu(summary),
    )
    return ok and ok_peak


def ledger_times(db: Path) -> list[float]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT applied_at FROM ledger_applications ORDER BY applied_at")
        return [datetime.fromisoformat(at).timestamp() for (at,) in rows]


class NoOpSink(Sink):
    def apply(self, envelope: Envelope) -> Applied:
        return Applied.APPLIED


def scenario_c(folder: Path, count: int, concurrency: int) -> tuple[float, float]:
    """One run of (c1) and (c2): their rates."""
    for old in folder.glob("c[12].db*"):
        old.unlink()
    db = folder / "c1.db"
    enqueue(db, count)
    config = write_config(folder, db, {"kind": "sqlite", "path": str(db)})
    summary = run_worker(config, "--until-empty", "--concurrency", str(concurrency))
    applied = ledger_times(db)
    assert summary["succeeded"] == count == len(applied), summary
    ledger_rate = steady_rate(applied)
    report(
        f"(c1) SQLite ledger sink, `raasctl worker`, concurrency {concurrency}, {count} msgs",
        ledger_rate,
        None,
        C_TARGET,
        f"   (worker summary {summary['per_hour'] / 3600:.0f} msg/s incl. start-up and final poll)"
        + per_cpu(summary),
    )

    db = folder / "c2.db"
    enqueue(db, count)
    queue, state = SqliteQueue(db), SqliteState(db)
    options = WorkerOptions(
        concurrency=concurrency, until_empty=True, wait_time_s=0.2, stats_interval_s=None
    )
    worker = Worker(queue, state, NoOpSink(), options)
    started, cpu = time.perf_counter(), time.process_time()
    result = worker.run()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    queue.close()
    state.close()
    assert result.succeeded == count, result
    noop_rate = count / elapsed
    report(
        f"(c2) no-op sink, in-process Worker, concurrency {concurrency}, {count} msgs",
        noop_rate,
        None,
        2000,
        f"   {count / cpu:,.0f} msg per CPU-s",
    )
    return ledger_rate, noop_rate


def scenario_c_repeated(folder: Path, count: int, concurrency: int, runs: int) -> bool:
    """(c) `runs` times: on a shared, noisy machine one run says little. Passes on the medians."""
    rates = [scenario_c(folder, count, concurrency) for _ in range(runs)]
    ok = True
    for name, values in (
        ("(c1) ledger", [r[0] for r in rates]),
        ("(c2) no-op", [r[1] for r in rates]),
    ):
        middle = statistics.median(values)
        target = C_TARGET if name.startswith("(c1)") else 2000
        ok &= middle >= target
        if runs > 1:
            print(
                f"{name}: median {middle:,.0f} msg/s of {runs} runs "
                f"(min {min(values):,.0f}, max {max(values):,.0f})   target >= {target:,}   "
                f"{'PASS' if middle >= target else 'MISS'}"
            )
    return ok


def load_average() -> str:
    """The machine's 1, 5 and 15-minute load averages: figures from a busy machine are low."""
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=["a", "b", "c"], default=["a", "b", "c"])
    parser.add_argument("--c-messages", type=int, default=50_000)
    parser.add_argument("--c-concurrency", type=int, default=8)
    parser.add_argument("--c-runs", type=int, default=1, help="repeat (c) and judge the medians")
    args = parser.parse_args(argv)
    print(f"load average at the start: {load_average()} ({os.cpu_count()} CPUs)")
    results = []
    with tempfile.TemporaryDirectory(prefix="raasctl-bench-") as tmp:
        folder = Path(tmp)
        if "a" in args.only:
            results.append(scenario_a(folder))
        if "b" in args.only:
            results.append(scenario_b(folder))
        if "c" in args.only:
            results.append(
                scenario_c_repeated(folder, args.c_messages, args.c_concurrency, args.c_runs)
            )
    print(f"load average at the end: {load_average()}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
