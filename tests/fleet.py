"""Several `python -m raasctl worker` processes on one environment, and the figures the
global rate limit is judged by (shared by tests/test_global_rate_processes.py and
benchmarks/global_rate.py).

A start is the sink's apply being called: every environment here writes to a SQLite ledger,
whose `applied_at` stamps the moment each handler called it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from raasctl.envelope import Envelope
from raasctl.queues.base import Queue
from raasctl.state.base import RunRecord, State

CRON = "clientDepositUpdate"


def write_config(path: Path, env_name: str, env: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"default_env": env_name, "environments": {env_name: env}}))
    return path


def enqueue(queue: Queue, state: State, run_id: str, count: int, env: str) -> None:
    """`count` deposit messages of one run, each its own FIFO group."""
    state.create_run(
        RunRecord(run_id=run_id, cron=CRON, env=env, mock=True, created_at=datetime.now(UTC))
    )
    batch = []
    for n in range(count):
        payload = {"deposit_id": f"D-{n:06d}", "amount": f"{n % 1000}.25", "currency": "USD"}
        envelope = Envelope.new(
            cron=CRON, run_id=run_id, key=f"{CRON}:{n}:{run_id}", payload=payload
        )
        batch.append(envelope.to_message(f"D-{n:06d}"))
        if len(batch) == queue.max_batch_size:
            queue.send_batch(batch)
            batch = []
    if batch:
        queue.send_batch(batch)
    state.finish_enqueue(run_id, entries=count, enqueued=count, invalid=0, duplicates=0)


@dataclass
class Fleet:
    """Worker processes started together, each `worker --format json ARGS`."""

    config: Path
    args: Sequence[str]
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def start(self, count: int) -> None:
        self.env.pop("RAASCTL_ENV", None)
        for _ in range(count):
            self.processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "raasctl",
                        "--config",
                        str(self.config),
                        "worker",
                        "--format",
                        "json",
                        *self.args,
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=self.env,
                )
            )

    def kill(self, index: int) -> None:
        self.processes[index].send_signal(signal.SIGKILL)

    def finish(self, timeout_s: float = 120) -> list[tuple[int, dict[str, Any], str]]:
        """Every process's (exit code, summary, stderr), each waited for."""
        results = []
        for process in self.processes:
            try:
                stdout, stderr = process.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            summary = json.loads(stdout) if stdout.strip().startswith("{") else {}
            results.append((process.returncode, summary, stderr))
        return results

    def stop_all(self) -> None:
        """For a test's `finally`: no process outlives it."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


def log_events(stderr: str, code: str) -> list[dict[str, Any]]:
    return [
        event
        for event in (json.loads(line) for line in stderr.splitlines() if line.startswith("{"))
        if event.get("code") == code
    ]


def ledger_starts(db: Path) -> list[float]:
    """The ledger's apply times (epoch seconds), in order; none before a worker made it."""
    with sqlite3.connect(db) as conn:
        try:
            rows = conn.execute("SELECT applied_at FROM ledger_applications ORDER BY applied_at")
            return [datetime.fromisoformat(at).timestamp() for (at,) in rows]
        except sqlite3.OperationalError:  # no such table yet
            return []


def max_in_window(starts: Sequence[float], window_s: float = 1.0) -> int:
    """The most starts in any half-open window [t, t + window_s)."""
    best, low = 0, 0
    for high, at in enumerate(starts):
        while starts[low] <= at - window_s:
            low += 1
        best = max(best, high - low + 1)
    return best


def steady_rate(starts: Sequence[float], skip_s: float = 1.0) -> float:
    """Starts per second from `skip_s` after the first to `skip_s` before the last: the
    processes start and stop a little apart (interpreter start-up, --max-runtime), so the
    edges are not all of them at work."""
    if len(starts) < 2:
        return 0.0
    kept = [at for at in starts if starts[0] + skip_s <= at <= starts[-1] - skip_s]
    if len(kept) < 2:
        return 0.0
    return (len(kept) - 1) / (kept[-1] - kept[0])


def per_second_windows(starts: Sequence[float]) -> list[int]:
    """Starts in each whole second from the first start."""
    if not starts:
        return []
    counts = [0] * (int(starts[-1] - starts[0]) + 1)
    for at in starts:
        counts[int(at - starts[0])] += 1
    return counts


def recovery_s(
    starts: Sequence[float], killed_at: float, rate: float, share: float = 0.95, step_s: float = 0.1
) -> float | None:
    """How long after `killed_at` the starts in every sliding one-second window reach
    `share` of `rate` again (and stay there until the last full window); None if never."""
    last_low = killed_at
    end = starts[-1] - 1.0 if starts else killed_at
    t = killed_at
    ordered = list(starts)
    low = 0
    while t <= end:
        while low < len(ordered) and ordered[low] < t:
            low += 1
        high = low
        while high < len(ordered) and ordered[high] < t + 1.0:
            high += 1
        if high - low < share * rate:
            last_low = t + 1.0
        t += step_s
    if last_low > end:
        return None
    return last_low - killed_at
