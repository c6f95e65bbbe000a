"""Two receives on their way at once, on a queue whose receive is a round trip (SQS): the
slots get the messages of one while the other is still coming back, the pool's room is never
overrun, and an error on either receiver ends the worker as it would with one."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from raasctl.codes import ErrorCode
from raasctl.envelope import Envelope
from raasctl.errors import QueueError
from raasctl.queues.base import ReceivedMessage
from raasctl.queues.sqlite import SqliteQueue
from raasctl.queues.sqs import SqsQueue
from raasctl.sinks.base import Applied, Sink
from raasctl.sinks.sqlite import SqliteLedger
from raasctl.state.base import RunRecord
from raasctl.state.sqlite import SqliteState
from raasctl.worker import Worker, WorkerOptions

DEPOSITS = "clientDepositUpdate"


class RoundTripQueue(SqliteQueue):
    """The embedded queue, standing in for a remote one: each receive takes `round_trip_s`,
    and the receives on their way at once are counted. `fail_receive`: that receive (from 0)
    raises `error` instead."""

    receives_at_once = 2

    def __init__(self, path: Path, round_trip_s: float = 0.05) -> None:
        super().__init__(path, max_receive_count=3, visibility_timeout_s=30)
        self.round_trip_s = round_trip_s
        self.on_the_way = 0
        self.most_on_the_way = 0
        self.receives = 0
        self.fail_receive: int | None = None
        self.error = QueueError("access denied to the queue", code=ErrorCode.ACCESS_DENIED)
        self._guard = threading.Lock()

    def receive(
        self, max_messages: int, wait_time_s: float, visibility_timeout_s: int | None = None
    ) -> list[ReceivedMessage]:
        with self._guard:
            number = self.receives
            self.receives += 1
            self.on_the_way += 1
            self.most_on_the_way = max(self.most_on_the_way, self.on_the_way)
        try:
            time.sleep(self.round_trip_s)
            if number == self.fail_receive:
                raise self.error
            return super().receive(max_messages, wait_time_s, visibility_timeout_s)
        finally:
            with self._guard:
                self.on_the_way -= 1


class WatchingSink(Sink):
    """The ledger, a little slow, noting the most messages the worker held at any apply."""

    def __init__(self, ledger: SqliteLedger, delay_s: float = 0.01) -> None:
        self.ledger = ledger
        self.delay_s = delay_s
        self.worker: Worker | None = None
        self.most_held = 0

    def apply(self, envelope: Envelope) -> Applied:
        if self.worker is not None:
            self.most_held = max(self.most_held, len(self.worker.pool.held()))
        time.sleep(self.delay_s)
        return self.ledger.apply(envelope)


@dataclass
class Env:
    db: Path
    queue: RoundTripQueue
    state: SqliteState
    ledger: SqliteLedger


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    db = tmp_path / "receivers.db"
    env = Env(db, RoundTripQueue(db), SqliteState(db), SqliteLedger(db))
    yield env
    for closable in (env.queue, env.state, env.ledger):
        closable.close()


def enqueue(env: Env, count: int) -> list[str]:
    env.state.create_run(
        RunRecord(run_id="run-1", cron=DEPOSITS, env="t", mock=False, created_at=datetime.now(UTC))
    )
    envelopes = [
        Envelope.new(
            cron=DEPOSITS,
            run_id="run-1",
            key=f"{DEPOSITS}:D-{n}:v1",
            payload={"deposit_id": f"D-{n}", "amount": f"{n}.50", "currency": "USD"},
        )
        for n in range(count)
    ]
    for start in range(0, count, 10):
        batch = envelopes[start : start + 10]
        assert not env.queue.send_batch([e.to_message(e.key) for e in batch]).failed
    env.state.finish_enqueue("run-1", entries=count, enqueued=count, invalid=0, duplicates=0)
    return [e.key for e in envelopes]


def worker(env: Env, sink: Sink, **overrides: object) -> Worker:
    settings: dict[str, object] = {
        "concurrency": 16,
        "until_empty": True,
        "wait_time_s": 0.2,
        "stats_interval_s": None,
        "shutdown_timeout_s": 5,
        **overrides,
    }
    return Worker(env.queue, env.state, sink, WorkerOptions(**settings))  # type: ignore[arg-type]


def applied_keys(db: Path) -> Sequence[str]:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT entry_key FROM ledger_applications").fetchall()
    return [row[0] for row in rows]


def receivers_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("raasctl-receiver")]


def test_two_receives_are_on_their_way_at_once(env: Env) -> None:
    keys = enqueue(env, 120)
    sink = WatchingSink(env.ledger)
    running = sink.worker = worker(env, sink)

    result = running.run()

    assert env.queue.most_on_the_way == 2
    assert result.succeeded == 120
    assert sorted(applied_keys(env.db)) == sorted(keys)  # each once
    run = env.state.get_run("run-1")
    assert run is not None and (run.succeeded, run.status) == (120, "complete")
    assert env.queue.depth().empty
    assert receivers_alive() == []  # `run` returned after every receiver ended


def test_two_receivers_together_never_hold_more_than_the_pool_has_room_for(env: Env) -> None:
    env.queue.round_trip_s = 0.01
    enqueue(env, 96)
    sink = WatchingSink(env.ledger, delay_s=0.2)  # the slots fill, and room comes in tens
    running = sink.worker = worker(env, sink)

    assert running.run().succeeded == 96

    # 16 slots, 16 held ahead and a batch more for the second receive on its way: each
    # receive reserves its room before it is sent.
    assert running.pool.read_ahead == 16 + 10
    assert 16 < sink.most_held <= 16 + 26


@pytest.mark.parametrize(
    "overrides", [{"rate_per_s": 200.0}, {"max_messages": 30, "until_empty": False}]
)
def test_one_receive_at_a_time_under_a_rate_limit_or_max_messages(
    env: Env, overrides: dict[str, object]
) -> None:
    enqueue(env, 30)

    result = worker(env, WatchingSink(env.ledger, delay_s=0), **overrides).run()

    assert result.succeeded == 30
    assert env.queue.most_on_the_way == 1


def test_the_embedded_queue_keeps_one_receive_at_a_time() -> None:
    assert SqliteQueue.receives_at_once == 1
    assert SqsQueue.receives_at_once == 2


def test_a_fatal_error_on_either_receiver_ends_the_worker_and_loses_nothing(env: Env) -> None:
    keys = enqueue(env, 60)
    env.queue.fail_receive = 3  # a later receive, on whichever receiver takes it
    sink = WatchingSink(env.ledger, delay_s=0.05)

    with pytest.raises(QueueError, match="access denied"):
        worker(env, sink).run()

    assert receivers_alive() == []
    applied = applied_keys(env.db)
    assert len(applied) == len(set(applied))  # none twice
    # What was not applied is still in the queue, released for the next worker.
    depth = env.queue.depth()
    assert depth.visible + depth.in_flight == len(keys) - len(applied)
    run = env.state.get_run("run-1")
    assert run is not None and run.succeeded == len(applied)
