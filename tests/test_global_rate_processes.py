"""The global rate limit and the worker registry as real processes: several `python -m
raasctl worker --rate-scope global` on one environment (the embedded default, and SQS +
DynamoDB over moto's server), one SIGKILLed in the middle.

Kept short (a few seconds of starts each); benchmarks/global_rate.py measures longer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
from callback_server import CallbackServer
from fleet import (
    Fleet,
    enqueue,
    ledger_starts,
    log_events,
    max_in_window,
    recovery_s,
    steady_rate,
    write_config,
)
from support import moto_deployment, wait_until

from raasctl.queues.sqlite import SqliteQueue
from raasctl.queues.sqs import SqsQueue
from raasctl.state.dynamodb import DynamoState
from raasctl.state.sqlite import SqliteState

RATE = 20.0


def embedded(db: Path, visibility_s: int = 30) -> dict[str, Any]:
    return {
        "queue": {"kind": "sqlite", "path": str(db), "visibility_timeout_s": visibility_s},
        "state": {"kind": "sqlite", "path": str(db)},
        "sink": {"kind": "sqlite", "path": str(db)},
        "concurrency": 4,
        "rate_limit": RATE,
        "rate_limit_scope": "global",
    }


def workers_json(config: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "raasctl", "--config", str(config), "workers", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def test_four_workers_on_sqs_and_dynamodb_share_one_rate(tmp_path: Path) -> None:
    with moto_deployment("global-rate", visibility_s=30, max_receive=5) as (env, _, url):
        endpoint = env["aws"]["endpoint_url"]
        queue = SqsQueue(boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint), url)
        dynamodb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint)
        state = DynamoState(dynamodb, env["state"]["table"])
        enqueue(queue, state, "shared", 240, "moto")
        ledger = tmp_path / "ledger.db"
        config = write_config(
            tmp_path / "raasctl.yaml",
            "moto",
            {
                **env,
                "sink": {"kind": "sqlite", "path": str(ledger)},
                # Each receive brings up to 10: moto's server answers a receive in a few
                # hundred ms when four workers share it.
                "concurrency": 16,
                "rate_limit": RATE,
                "rate_limit_scope": "global",
            },
        )
        fleet = Fleet(config, ["--max-runtime", "8"])
        try:
            fleet.start(4)
            results = fleet.finish()
        finally:
            fleet.stop_all()
    assert [code for code, _, _ in results] == [0, 0, 0, 0], [r[2][-500:] for r in results]
    starts = ledger_starts(ledger)
    assert max_in_window(starts) <= RATE + 1
    # moto's one server process, sharing two cores with four workers (and, here, the rest
    # of the suite), cannot hand out messages at the rate: this only checks that the shared
    # schedule keeps them all going (benchmarks/global_rate.py measures the rate itself).
    assert steady_rate(starts) >= 0.5 * RATE, (len(starts), steady_rate(starts))
    leases = [log_events(stderr, "RAAS_RATE_LIMIT_SHARED")[0] for _, _, stderr in results]
    assert sum(e["requests"] for e in leases) / len(starts) <= 0.2


def test_three_embedded_workers_share_one_rate_and_a_killed_ones_share_returns(
    tmp_path: Path,
) -> None:
    """Three workers on the embedded default, each able to start far more than 20/s alone,
    start 20/s together; one SIGKILLed soon after the start leaves its share to the other
    two within 5 s and drops out of `raasctl workers`; the two that stop cleanly remove
    their records."""
    db = tmp_path / "bench.db"
    queue, state = SqliteQueue(db), SqliteState(db)
    enqueue(queue, state, "shared", 400, "bench")
    queue.close()
    state.close()
    config = write_config(tmp_path / "raasctl.yaml", "bench", embedded(db))
    fleet = Fleet(config, ["--max-runtime", "10", "--registry-every", "0.5"])
    try:
        fleet.start(3)
        wait_until(lambda: len(workers_json(config)) == 3, timeout_s=20)
        wait_until(lambda: len(ledger_starts(db)) >= 20, timeout_s=20)
        victim = fleet.processes[0].pid
        fleet.kill(0)
        killed_at = time.time()
        # Three missed refreshes (1.5 s here; 30 s at the default 10 s) and it is gone.
        wait_until(lambda: victim not in [row["pid"] for row in workers_json(config)], timeout_s=5)
        stale_after = time.time() - killed_at
        results = fleet.finish()
    finally:
        fleet.stop_all()
    assert stale_after <= 3 * 0.5 + 1.5
    assert [code for code, _, _ in results[1:]] == [0, 0]
    starts = ledger_starts(db)
    assert max_in_window(starts) <= RATE + 1
    # The two others go on until --max-runtime, well past the five seconds judged here.
    recovered = recovery_s([at for at in starts if at <= killed_at + 6], killed_at, RATE)
    assert recovered is not None and recovered <= 5.0, recovered
    after = [at for at in starts if at >= killed_at + recovered]
    assert steady_rate(after) >= 0.95 * RATE, (len(after), steady_rate(after))
    leases = [log_events(stderr, "RAAS_RATE_LIMIT_SHARED")[0] for _, _, stderr in results[1:]]
    assert sum(e["requests"] for e in leases) / sum(e["starts"] for e in leases) <= 0.2
    # A clean stop removes the worker's record; the killed one's stays, stale.
    state = SqliteState(db)
    assert [r.pid for r in state.workers().list_workers("bench")] == [victim]
    state.close()


def test_a_worker_waiting_on_a_dead_workers_messages_says_so(tmp_path: Path) -> None:
    """Worker A takes ten messages (four in its slots, the rest read ahead) into a downstream
    that answers only after 30 s and is SIGKILLed; worker B drains the rest, then waits on
    A's ten, saying how many and about how long, until their visibility runs out and it
    applies them."""
    db = tmp_path / "bench.db"
    queue, state = SqliteQueue(db), SqliteState(db)
    enqueue(queue, state, "shared", 20, "bench")
    state.close()
    base = {
        "queue": {"kind": "sqlite", "path": str(db), "visibility_timeout_s": 6},
        "state": {"kind": "sqlite", "path": str(db)},
        "concurrency": 4,
    }
    with CallbackServer(latency_s=30) as server:
        slow = write_config(
            tmp_path / "slow.yaml",
            "bench",
            {**base, "sink": {"kind": "http", "base_url": server.base_url, "token": "env:CB"}},
        )
        holder = Fleet(slow, [], env=dict(os.environ, CB=server.token))
        drainer = Fleet(
            write_config(
                tmp_path / "fast.yaml",
                "bench",
                {**base, "sink": {"kind": "sqlite", "path": str(db)}},
            ),
            ["--until-empty", "--stats-every", "0.5"],
        )
        try:
            holder.start(1)
            wait_until(lambda: queue.depth().in_flight == 10, timeout_s=20)
            holder.kill(0)
            drainer.start(1)
            ((code, summary, stderr),) = drainer.finish(timeout_s=30)
        finally:
            holder.stop_all()
            drainer.stop_all()
            queue.close()
    assert code == 0 and summary["succeeded"] == 20, stderr[-2000:]
    waiting = [e for e in log_events(stderr, "RAAS_WORKER_STATS") if e["in_flight_elsewhere"]]
    assert waiting, stderr[-2000:]
    assert waiting[0]["in_flight_elsewhere"] == 10 and 0 <= waiting[0]["visible_again_s"] <= 6
    assert "10 in flight elsewhere, visible again in about" in waiting[0]["msg"]
