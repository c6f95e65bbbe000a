"""A sink that applies a batch in one transaction (the SQLite ledger): the worker hands it a
whole receive at once, and every message still gets its own verdict."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from raasctl.envelope import Envelope
from raasctl.errors import SinkError
from raasctl.queues.base import ReceivedMessage
from raasctl.queues.sqlite import SqliteQueue
from raasctl.sinks.base import Applied
from raasctl.sinks.sqlite import SqliteLedger
from raasctl.state.base import RunRecord
from raasctl.state.sqlite import SqliteState
from raasctl.worker import Worker, WorkerOptions
from raasctl.worker.core import EMBEDDED_BATCHES_AT_ONCE
from raasctl.worker.messages import Held

DEPOSITS = "clientDepositUpdate"


class CountingQueue(SqliteQueue):
    """The embedded queue, recording how many messages each receive brought."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, fifo=True, max_receive_count=3, visibility_timeout_s=30)
        self.received: list[int] = []

    def receive(
        self, max_messages: int, wait_time_s: float, visibility_timeout_s: int | None = None
    ) -> list[ReceivedMessage]:
        messages = super().receive(max_messages, wait_time_s, visibility_timeout_s)
        self.received.append(len(messages))
        return messages


def envelope(n: int, *, run_id: str = "run-1", **payload: object) -> Envelope:
    body = {"deposit_id": f"D-{n}", "amount": f"{n}.50", "currency": "USD", **payload}
    return Envelope.new(cron=DEPOSITS, run_id=run_id, key=f"{DEPOSITS}:D-{n}:v1", payload=body)


def enqueue(queue: SqliteQueue, state: SqliteState, envelopes: Sequence[Envelope]) -> None:
    state.create_run(
        RunRecord(run_id="run-1", cron=DEPOSITS, env="t", mock=False, created_at=datetime.now(UTC))
    )
    queue.send_batch([e.to_message(e.key) for e in envelopes])
    n = len(envelopes)
    state.finish_enqueue("run-1", entries=n, enqueued=n, invalid=0, duplicates=0)


def test_a_ledger_worker_takes_a_whole_receive_at_once_and_judges_each(tmp_path: Path) -> None:
    db = tmp_path / "batches.db"
    queue, state, ledger = CountingQueue(db), SqliteState(db), SqliteLedger(db)
    most = queue.max_receive  # 500
    envelopes = [envelope(n) for n in range(2 * most + 50)]
    envelopes[7] = Envelope.new(  # no deposit_id: a permanent failure, to the DLQ
        cron=DEPOSITS, run_id="run-1", key=f"{DEPOSITS}:bad:v1", payload={"amount": "1.00"}
    )
    enqueue(queue, state, envelopes)
    ledger.apply(envelopes[3])  # applied before, by another worker
    options = WorkerOptions(concurrency=4, until_empty=True, wait_time_s=0.2, stats_interval_s=None)

    result = Worker(queue, state, ledger, options).run()

    assert sorted(count for count in queue.received if count)[-2:] == [most, most]
    good = len(envelopes) - 1
    assert (result.succeeded, result.dead_lettered) == (good, 1)
    assert ledger.counts()["applications"] == good  # D-3 once, the bad one never
    run = state.get_run("run-1")
    assert run is not None
    assert (run.succeeded, run.dead_lettered, run.status) == (good, 1, "failed")
    [dead] = queue.peek(10, dlq=True)
    assert "deposit_id" in dead.attributes["reason"]
    assert queue.depth().empty
    for closable in (queue, state, ledger):
        closable.close()


def test_the_ledger_applies_a_batch_in_one_call_and_says_how_each_went(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    first, second = envelope(1), envelope(2)
    bad = Envelope.new(cron=DEPOSITS, run_id="run-1", key="k:bad", payload={"amount": "1"})
    ledger.apply(second)

    errors = ledger.apply_batch([first, bad, second, first])

    assert errors[0] is None and errors[2] is None and errors[3] is None
    assert isinstance(errors[1], SinkError) and not errors[1].retryable
    assert ledger.counts()["applications"] == 2  # the repeats change nothing
    assert ledger.apply(first) is Applied.ALREADY_APPLIED
    ledger.close()


def test_two_entries_of_one_record_in_a_batch_leave_the_later_one_s_values(
    tmp_path: Path,
) -> None:
    # One multi-row upsert writes the batch: the second row updates the first.
    ledger = SqliteLedger(tmp_path / "ledger.db")
    older = envelope(1, amount="1.00")
    newer = Envelope.new(
        cron=DEPOSITS, run_id="run-1", key=f"{DEPOSITS}:D-1:v2", payload={**older.payload}
    )
    newer.payload["amount"] = "2.00"

    assert ledger.apply_batch([older, newer]) == [None, None]

    assert ledger.counts()["applications"] == 2 and ledger.counts()["client_deposits"] == 1
    conn = sqlite3.connect(tmp_path / "ledger.db")
    row = conn.execute("SELECT amount, entry_key FROM ledger_client_deposits").fetchone()
    conn.close()
    assert row == ("2.00", newer.key)
    ledger.close()


def test_a_batch_s_apply_and_counts_commit_together_or_not_at_all(tmp_path: Path) -> None:
    """On one embedded file the ledger's apply, the outcomes and the deletes are one
    transaction: while the outcomes cannot be written, nothing is applied either, and once
    they can, each entry is applied and counted once."""
    db = tmp_path / "together.db"
    queue, state, ledger = CountingQueue(db), SqliteState(db), SqliteLedger(db)
    envelopes = [envelope(n) for n in range(40)]
    enqueue(queue, state, envelopes)
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute(
        "CREATE TRIGGER fail BEFORE INSERT ON state_outcomes"
        " BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
    )
    options = WorkerOptions(
        concurrency=2,
        until_empty=True,
        wait_time_s=0.2,
        stats_interval_s=None,
        backoff_base_s=1.0,
        backoff_cap_s=1.0,
    )
    worker = Worker(queue, state, ledger, options)
    thread = threading.Thread(target=worker.run)
    thread.start()
    deadline = time.monotonic() + 10
    while worker.tally.snapshot().retries < len(envelopes):
        assert time.monotonic() < deadline, worker.tally.snapshot()
        time.sleep(0.01)

    assert ledger.counts()["applications"] == 0  # undone with the counts
    writer.execute("DROP TRIGGER fail")
    writer.close()
    thread.join(30)

    result = worker.result()
    assert (result.succeeded, result.retries) == (40, 40)
    assert ledger.counts()["applications"] == 40
    run = state.get_run("run-1")
    assert run is not None
    assert (run.succeeded, run.retries, run.status) == (40, 40, "complete")
    assert queue.depth().empty
    for closable in (queue, state, ledger):
        closable.close()


def test_a_batch_whose_deletes_fail_is_counted_once_and_deleted_when_it_comes_back(
    tmp_path: Path,
) -> None:
    db = tmp_path / "together.db"
    queue, state, ledger = CountingQueue(db), SqliteState(db), SqliteLedger(db)
    enqueue(queue, state, [envelope(n) for n in range(10)])
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute(
        "CREATE TRIGGER fail BEFORE DELETE ON queue_messages"
        " BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
    )
    options = WorkerOptions(
        concurrency=2, until_empty=True, wait_time_s=0.2, stats_interval_s=None, max_messages=10
    )

    Worker(queue, state, ledger, options).run()

    # Applied and counted together; the messages stay, as after any failed delete.
    assert ledger.counts()["applications"] == 10
    run = state.get_run("run-1")
    assert run is not None and run.succeeded == 10
    assert queue.depth().in_flight == 10
    writer.execute("DROP TRIGGER fail")
    writer.execute("UPDATE queue_messages SET visible_at = 0")  # their visibility ran out
    writer.close()

    result = Worker(queue, state, ledger, options).run()

    assert result.succeeded == 10  # found applied: deleted, not applied again
    assert ledger.counts()["applications"] == 10
    run = state.get_run("run-1")
    assert run is not None and (run.succeeded, run.status) == (10, "complete")
    assert queue.depth().empty
    for closable in (queue, state, ledger):
        closable.close()


def test_a_batch_prepared_ahead_applies_inside_a_transaction_of_the_state_s(
    tmp_path: Path,
) -> None:
    db = tmp_path / "together.db"
    queue, state = SqliteQueue(db), SqliteState(db)
    state.is_applied("warm up")  # the state's tables exist, as in the worker
    ledger = SqliteLedger(db)  # no connection yet: opening one sets up its schema
    good, bad = envelope(1), Envelope.new(cron=DEPOSITS, run_id="run-1", key="k", payload={})
    together = state.writes_with(queue)
    assert together is not None

    apply = ledger.prepare_batch([good, bad])
    started = time.monotonic()
    with together():
        errors = apply()

    assert time.monotonic() - started < 5  # not a wait for the transaction's own lock
    assert errors[0] is None
    assert isinstance(errors[1], SinkError) and not errors[1].retryable
    assert ledger.counts()["applications"] == 1 and state.is_applied(good.key)
    for closable in (queue, state, ledger):
        closable.close()


def test_on_one_embedded_file_few_batches_are_in_hand_at_once_whatever_the_concurrency(
    tmp_path: Path,
) -> None:
    # Their transactions on the one file take turns: more batches at once only add threads.
    # Two at once and the one read ahead (which a free slot takes up), not eight.
    db = tmp_path / "turns.db"
    queue, state, ledger = (
        SqliteQueue(db, visibility_timeout_s=30),
        SqliteState(db),
        SqliteLedger(db),
    )
    enqueue(queue, state, [envelope(n) for n in range(6 * queue.max_receive)])
    options = WorkerOptions(concurrency=8, until_empty=True, wait_time_s=0.2, stats_interval_s=None)
    worker = Worker(queue, state, ledger, options)
    lock, in_hand, most = threading.Lock(), [0], [0]
    handle_batch = worker.handler.handle_batch

    def counted(batch: list[Held]) -> None:
        with lock:
            in_hand[0] += 1
            most[0] = max(most[0], in_hand[0])
        try:
            time.sleep(0.05)  # long enough for the others to start if they may
            handle_batch(batch)
        finally:
            with lock:
                in_hand[0] -= 1

    worker.handler.handle_batch = counted  # type: ignore[method-assign]
    result = worker.run()

    assert result.succeeded == 6 * queue.max_receive
    assert most[0] == EMBEDDED_BATCHES_AT_ONCE + 1
    for closable in (queue, state, ledger):
        closable.close()
