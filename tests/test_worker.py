"""The worker in-process, on the embedded adapters (real SQLite files in tmp_path)."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws
from support import wait_until

from raasctl.cli import main
from raasctl.cli.worker_cmd import progress_detail
from raasctl.codes import ErrorCode, InfoCode
from raasctl.envelope import Envelope
from raasctl.errors import QueueError, SinkError, StateError, UsageError
from raasctl.queues.base import OutgoingMessage, Queue, ReceivedMessage
from raasctl.queues.sqlite import SqliteQueue
from raasctl.queues.sqs import SqsQueue
from raasctl.ratelimit import RateLimiter
from raasctl.runs import run_lock
from raasctl.sinks.base import Applied, Sink
from raasctl.sinks.sqlite import SqliteLedger
from raasctl.state.base import AppliedEntry, Entry, EntryStatus, Known, RunRecord
from raasctl.state.sqlite import SqliteState
from raasctl.worker import (
    StopReason,
    Worker,
    WorkerOptions,
    WorkerStats,
    backoff_s,
    run_progress,
)
from raasctl.worker.served import RunsServed

DEPOSITS = "clientDepositUpdate"
PAID = "clientBillPaidStatus"

# ---------------------------------------------------------------- helpers


@dataclass
class Env:
    db: Path
    queue: SqliteQueue
    state: SqliteState
    ledger: SqliteLedger


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    db = tmp_path / "worker.db"
    queue = SqliteQueue(db, fifo=True, max_receive_count=3, visibility_timeout_s=30)
    state = SqliteState(db)
    ledger = SqliteLedger(db)
    yield Env(db, queue, state, ledger)
    for closable in (queue, state, ledger):
        closable.close()


@pytest.fixture
def events() -> Iterator[list[logging.LogRecord]]:
    """Every raasctl log record, whatever the CLI's logging setup did to propagation."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("raasctl")
    handler = Collect(level=logging.DEBUG)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def coded(records: list[logging.LogRecord], code: InfoCode | ErrorCode) -> list[dict[str, Any]]:
    return [
        {"msg": r.getMessage(), **getattr(r, "fields", {})}
        for r in records
        if getattr(r, "code", None) == str(code)
    ]


def deposit(n: int, **extra: Any) -> dict[str, Any]:
    return {"deposit_id": f"D-{n}", "amount": f"{n}.50", "currency": "USD", **extra}


def enqueue(
    queue: Queue,
    state: SqliteState,
    payloads: Sequence[dict[str, Any]],
    *,
    cron: str = DEPOSITS,
    run_id: str = "run-1",
    finish: bool = True,
) -> list[str]:
    """Create the run and send one message per payload; return the entry keys."""
    state.create_run(
        RunRecord(run_id=run_id, cron=cron, env="test", mock=False, created_at=datetime.now(UTC))
    )
    keys = []
    messages = []
    for n, payload in enumerate(payloads):
        key = f"{cron}:{run_id}:{n}"
        keys.append(key)
        envelope = Envelope.new(cron=cron, run_id=run_id, key=key, payload=payload)
        messages.append(envelope.to_message(f"{run_id}-{n}"))
    for start in range(0, len(messages), 10):
        result = queue.send_batch(messages[start : start + 10])
        assert not result.failed
    if finish:
        state.finish_enqueue(
            run_id, entries=len(payloads), enqueued=len(payloads), invalid=0, duplicates=0
        )
    return keys


def send_raw(queue: Queue, body: str, *, run_id: str | None = None, group: str = "g") -> None:
    attributes = {"cron": DEPOSITS, "run_id": run_id} if run_id else {}
    queue.send_batch(
        [OutgoingMessage(body=body, group_id=group, dedup_id=f"raw-{body}", attributes=attributes)]
    )


def options(**overrides: Any) -> WorkerOptions:
    defaults: dict[str, Any] = {
        "concurrency": 4,
        "until_empty": True,
        "wait_time_s": 0.2,
        "visibility_timeout_s": 30,
        "backoff_base_s": 0,
        "backoff_cap_s": 0,
        "stats_interval_s": None,
        "shutdown_timeout_s": 5,
    }
    defaults.update(overrides)
    return WorkerOptions(**defaults)


class ScriptedSink(Sink):
    """Applies to the real ledger unless a key is scripted to fail; records every call."""

    def __init__(self, ledger: SqliteLedger | None = None, delay_s: float = 0.0) -> None:
        self.ledger = ledger
        self.delay_s = delay_s
        self.failures: dict[str, list[SinkError]] = {}
        self.calls: list[tuple[str, float]] = []
        self.lock = threading.Lock()
        self.running = 0
        self.max_running = 0

    def fail(self, key: str, *errors: SinkError) -> None:
        self.failures[key] = list(errors)

    def apply(self, envelope: Envelope) -> Applied:
        with self.lock:
            self.calls.append((envelope.key, time.monotonic()))
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            pending = self.failures.get(envelope.key)
            error = pending.pop(0) if pending else None
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            if error is not None:
                raise error
            return self.ledger.apply(envelope) if self.ledger else Applied.APPLIED
        finally:
            with self.lock:
                self.running -= 1

    def keys(self) -> list[str]:
        return [key for key, _ in self.calls]


@dataclass
class RecordingQueue(Queue):
    """Delegates to a real queue and records receives and visibility changes."""

    inner: Queue
    receives: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)  # how many each receive brought
    visibility: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.name = self.inner.name
        self.fifo = self.inner.fifo

    def max_message_bytes(self) -> int:
        return self.inner.max_message_bytes()

    def max_receive_count(self) -> int | None:
        return self.inner.max_receive_count()

    def send_batch(self, messages: Any) -> Any:
        return self.inner.send_batch(messages)

    def receive(
        self, max_messages: int, wait_time_s: float, visibility_timeout_s: int | None = None
    ) -> list[ReceivedMessage]:
        self.receives.append(max_messages)
        messages = self.inner.receive(max_messages, wait_time_s, visibility_timeout_s)
        self.received.append(len(messages))
        return messages

    def delete(self, receipt_handles: Sequence[str]) -> None:
        self.inner.delete(receipt_handles)

    def change_visibility(self, receipt_handle: str, timeout_s: int) -> None:
        self.visibility.append((receipt_handle, timeout_s))
        self.inner.change_visibility(receipt_handle, timeout_s)

    def dead_letter(self, message: ReceivedMessage, reason: str) -> None:
        self.inner.dead_letter(message, reason)

    def depth(self) -> Any:
        return self.inner.depth()

    def peek(self, limit: int, *, dlq: bool = False) -> Any:
        return self.inner.peek(limit, dlq=dlq)

    def purge(self, *, dlq: bool = False) -> Any:
        return self.inner.purge(dlq=dlq)

    def redrive(self) -> Any:
        return self.inner.redrive()


def run_worker(env: Env, sink: Sink, queue: Queue | None = None, **overrides: Any) -> Any:
    worker = Worker(queue or env.queue, env.state, sink, options(**overrides))
    return worker.run()


def in_background(worker: Worker) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = worker.run()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out


@pytest.fixture
def sqs() -> Iterator[Any]:
    """moto's SQS in-process (the isolated fixture set fake credentials and the region)."""
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def sqs_fifo_queue(sqs: Any, name: str, *, max_receive: int | None) -> SqsQueue:
    """A FIFO queue on moto, with a DLQ after `max_receive` receives (None: no DLQ)."""
    attributes = {"FifoQueue": "true", "VisibilityTimeout": "30"}
    if max_receive is not None:
        dlq = sqs.create_queue(QueueName=f"{name}-dlq.fifo", Attributes={"FifoQueue": "true"})
        arn = sqs.get_queue_attributes(QueueUrl=dlq["QueueUrl"], AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receive)}
        )
    url = sqs.create_queue(QueueName=f"{name}.fifo", Attributes=attributes)["QueueUrl"]
    return SqsQueue(sqs, url, visibility_timeout_s=30, wait_time_s=1)


def deposit_versions(
    queue: Queue, state: SqliteState, versions: Sequence[str], *, run_id: str = "run-1"
) -> list[str]:
    """Versions of deposit D-1 (one message group, in this order) and one message of D-2;
    return the keys of D-1's versions."""
    payloads = [deposit(1, deposit_reference=version) for version in versions]
    state.create_run(
        RunRecord(run_id=run_id, cron=DEPOSITS, env="t", mock=False, created_at=datetime.now(UTC))
    )
    envelopes = [
        Envelope.new(cron=DEPOSITS, run_id=run_id, key=f"{DEPOSITS}:D-1:{version}", payload=p)
        for version, p in zip(versions, payloads, strict=True)
    ]
    other = Envelope.new(cron=DEPOSITS, run_id=run_id, key=f"{DEPOSITS}:D-2:a", payload=deposit(2))
    result = queue.send_batch([e.to_message("D-1") for e in envelopes] + [other.to_message("D-2")])
    assert not result.failed
    total = len(envelopes) + 1
    state.finish_enqueue(run_id, entries=total, enqueued=total, invalid=0, duplicates=0)
    return [e.key for e in envelopes]


def ledger_row(db: Path, deposit_id: str) -> tuple[str, str]:
    """The ledger's (entry_key, deposit_reference) for a deposit: the version in place."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT entry_key, deposit_reference FROM ledger_client_deposits WHERE deposit_id = ?",
            (deposit_id,),
        ).fetchone()
    assert row is not None
    return row[0], row[1]


# ---------------------------------------------------------------- draining


def test_drains_every_entry_exactly_once_and_completes_the_run(
    env: Env, events: list[logging.LogRecord]
) -> None:
    keys = enqueue(env.queue, env.state, [deposit(n) for n in range(30)])
    sink = ScriptedSink(env.ledger)

    result = run_worker(env, sink)

    assert result.stopped is StopReason.QUEUE_EMPTY
    assert (result.processed, result.succeeded, result.failed, result.dead_lettered) == (
        30,
        30,
        0,
        0,
    )
    assert sorted(sink.keys()) == sorted(keys)
    assert env.ledger.counts()["applications"] == 30
    assert env.ledger.counts()["client_deposits"] == 30
    assert env.queue.depth().empty
    run = env.state.get_run("run-1")
    assert run is not None
    assert (run.succeeded, run.done, run.total, run.status) == (30, 30, 30, "complete")
    assert all(env.state.is_applied(key) for key in keys)
    completes = coded(events, InfoCode.RUN_COMPLETE)
    assert [c["run_id"] for c in completes] == ["run-1"]
    assert len(coded(events, InfoCode.QUEUE_EMPTY)) == 1
    assert set(result.summary()) == {
        "processed",
        "succeeded",
        "failed",
        "dead_lettered",
        "superseded",
        "elapsed_s",
        "per_second",
        "per_hour",
    }
    assert result.summary()["per_hour"] > 0
    assert result.ok


def test_an_entry_already_applied_is_deleted_without_applying(env: Env) -> None:
    keys = enqueue(env.queue, env.state, [deposit(1), deposit(2)])
    env.state.record_applied(keys[0], "earlier-run", datetime.now(UTC))
    sink = ScriptedSink(env.ledger)

    result = run_worker(env, sink)

    assert sink.keys() == [keys[1]]
    assert result.succeeded == 2
    run = env.state.get_run("run-1")
    assert run is not None and run.succeeded == 2 and run.status == "complete"
    assert env.queue.depth().empty


def test_already_applied_answer_from_the_sink_counts_as_success(env: Env) -> None:
    keys = enqueue(env.queue, env.state, [deposit(1)])

    class Conflict(Sink):
        def apply(self, envelope: Envelope) -> Applied:
            return Applied.ALREADY_APPLIED  # e.g. HTTP 409

    result = run_worker(env, Conflict())

    assert result.succeeded == 1
    assert env.state.is_applied(keys[0])
    assert env.queue.depth().empty


def test_stops_at_once_on_an_empty_queue_with_until_empty(
    env: Env, events: list[logging.LogRecord]
) -> None:
    began = time.monotonic()
    result = run_worker(env, ScriptedSink())
    assert result.stopped is StopReason.QUEUE_EMPTY
    assert result.processed == 0
    assert time.monotonic() - began < 2
    assert len(coded(events, InfoCode.QUEUE_EMPTY)) == 1


def test_every_slot_connects_its_sink_as_it_starts_before_its_first_apply(env: Env) -> None:
    keys = enqueue(env.queue, env.state, [deposit(n) for n in range(6)])

    class Connecting(ScriptedSink):
        def __init__(self, ledger: SqliteLedger) -> None:
            super().__init__(ledger)
            self.connected: dict[int, float] = {}

        def connect(self) -> None:
            with self.lock:
                self.connected[threading.get_ident()] = time.monotonic()

        def apply(self, envelope: Envelope) -> Applied:
            assert threading.get_ident() in self.connected  # this slot connected first
            return super().apply(envelope)

    sink = Connecting(env.ledger)
    result = run_worker(env, sink, concurrency=3)

    assert result.succeeded == 6 and sorted(sink.keys()) == sorted(keys)
    assert len(sink.connected) == 3  # once on each slot's thread
    assert max(sink.connected.values()) <= min(at for _, at in sink.calls)


# ---------------------------------------------------------------- failures


def test_retryable_failure_backs_off_then_succeeds_and_counts_the_retry(
    env: Env, events: list[logging.LogRecord]
) -> None:
    keys = enqueue(env.queue, env.state, [deposit(1), deposit(2)])
    sink = ScriptedSink(env.ledger)
    sink.fail(keys[0], SinkError("HTTP 503", retryable=True))
    queue = RecordingQueue(env.queue)

    result = run_worker(env, sink, queue=queue)

    assert (result.succeeded, result.retries, result.failed) == (2, 1, 0)
    assert result.processed == 3
    assert sink.keys().count(keys[0]) == 2
    assert env.ledger.counts()["applications"] == 2
    run = env.state.get_run("run-1")
    assert run is not None
    assert (run.succeeded, run.retries, run.status) == (2, 1, "complete")
    retries = coded(events, InfoCode.MESSAGE_RETRY)
    assert len(retries) == 1 and retries[0]["key"] == keys[0] and retries[0]["attempt"] == 1
    assert ("HTTP 503" in retries[0]["msg"]) and retries[0]["delay_s"] == 0


def test_backoff_doubles_from_the_base_caps_and_honours_retry_after() -> None:
    assert [backoff_s(n, 2, 60) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]
    assert backoff_s(1, 2, 60, retry_after_s=7.2) == 8  # whole seconds, never shorter
    assert backoff_s(3, 2, 60, retry_after_s=1) == 8  # a shorter Retry-After does not shorten
    assert backoff_s(1, 2, 60, retry_after_s=10**6) == 43_200  # SQS's maximum


def test_backoff_sets_the_message_visibility(env: Env) -> None:
    keys = enqueue(env.queue, env.state, [deposit(1)])
    sink = ScriptedSink(env.ledger)
    sink.fail(keys[0], SinkError("HTTP 429", retryable=True, retry_after_s=3))
    queue = RecordingQueue(env.queue)

    worker = Worker(
        queue,
        env.state,
        sink,
        options(backoff_base_s=1, backoff_cap_s=60, until_empty=False, max_runtime_s=0.6),
    )
    result = worker.run()

    assert result.retries == 1 and result.succeeded == 0
    assert [timeout for _, timeout in queue.visibility] == [3]  # Retry-After beat 1 s
    depth = env.queue.depth()
    assert depth.in_flight == 1  # invisible for its backoff


def test_retries_exhausted_count_as_failed_and_the_redrive_moves_it_to_the_dlq(
    env: Env, events: list[logging.LogRecord]
) -> None:
    keys = enqueue(env.queue, env.state, [deposit(1), deposit(2)])
    sink = ScriptedSink(env.ledger)
    sink.fail(keys[0], *[SinkError("HTTP 500", retryable=True)] * 5)

    result = run_worker(env, sink)

    # max_receive_count 3: two retries, then the third attempt is the last.
    assert (result.succeeded, result.retries, result.failed) == (1, 2, 1)
    assert sink.keys().count(keys[0]) == 3
    assert not result.ok
    dlq = env.queue.peek(10, dlq=True)
    assert [json.loads(m.body)["key"] for m in dlq] == [keys[0]]
    assert "max_receive_count" in dlq[0].attributes["reason"]
    run = env.state.get_run("run-1")
    assert run is not None
    assert (run.succeeded, run.failed, run.retries, run.status) == (1, 1, 2, "failed")
    failed = coded(events, ErrorCode.MESSAGE_FAILED)
    assert len(failed) == 1 and failed[0]["key"] == keys[0]
    assert not env.state.is_applied(keys[0])


def test_permanent_failure_goes_to_the_dlq_at_once_with_its_reason(
    env: Env, events: list[logging.LogRecord]
) -> None:
    keys = enqueue(env.queue, env.state, [deposit(1), deposit(2, amount="twelve")])

    result = run_worker(env, ScriptedSink(env.ledger))

    assert (result.succeeded, result.dead_lettered, result.retries) == (1, 1, 0)
    dlq = env.queue.peek(10, dlq=True)
    assert [json.loads(m.body)["key"] for m in dlq] == [keys[1]]
    assert dlq[0].receive_count == 1
    assert "amount" in dlq[0].attributes["reason"]
    logged = coded(events, InfoCode.MESSAGE_DEAD_LETTERED)
    assert len(logged) == 1 and "amount" in logged[0]["reason"]
    assert logged[0]["key"] == keys[1]
    run = env.state.get_run("run-1")
    assert run is not None and run.dead_lettered == 1 and run.status == "failed"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"v": 2, "cron": DEPOSITS}), "unknown envelope version 2"),
        (
            json.dumps(
                {
                    "v": 1,
                    "cron": "clientRefund",
                    "run_id": "run-1",
                    "key": "k",
                    "payload": {},
                    "mock": False,
                    "enqueued_at": "",
                }
            ),
            "unknown cron 'clientRefund'",
        ),
    ],
)
def test_unusable_messages_go_to_the_dlq_with_the_reason(
    env: Env, events: list[logging.LogRecord], body: str, reason: str
) -> None:
    env.state.create_run(
        RunRecord(run_id="run-1", cron=DEPOSITS, env="t", mock=False, created_at=datetime.now(UTC))
    )
    env.state.finish_enqueue("run-1", entries=1, enqueued=1, invalid=0, duplicates=0)
    send_raw(env.queue, body, run_id="run-1")
    sink = ScriptedSink(env.ledger)

    result = run_worker(env, sink)

    assert result.dead_lettered == 1 and sink.calls == []
    dlq = env.queue.peek(10, dlq=True)
    assert len(dlq) == 1 and reason in dlq[0].attributes["reason"]
    assert reason in coded(events, InfoCode.MESSAGE_DEAD_LETTERED)[0]["reason"]
    run = env.state.get_run("run-1")  # counted to the run named in the message attributes
    assert run is not None and run.dead_lettered == 1 and run.status == "failed"


def test_a_message_of_an_unknown_run_is_still_applied(env: Env) -> None:
    envelope = Envelope.new(cron=DEPOSITS, run_id="gone", key="k-1", payload=deposit(1))
    env.queue.send_batch([envelope.to_message("D-1")])

    result = run_worker(env, ScriptedSink(env.ledger))

    assert result.succeeded == 1
    assert env.ledger.counts()["applications"] == 1


def test_repeated_state_failures_stop_the_worker_with_the_error(env: Env) -> None:
    enqueue(env.queue, env.state, [deposit(n) for n in range(15)])

    class BrokenState(SqliteState):
        def known(self, entries: Sequence[Entry]) -> dict[str, Known]:
            raise StateError("DynamoDB throttled")

    state = BrokenState(env.db)
    worker = Worker(env.queue, state, ScriptedSink(env.ledger), options(concurrency=1))
    with pytest.raises(StateError, match="throttled"):
        worker.run()
    assert worker.result().errors == 10
    assert worker.result().stopped is StopReason.ERROR
    assert env.ledger.counts()["applications"] == 0
    state.close()


class FlakyReceives(RecordingQueue):
    """Receives fail `failures` times in a row first."""

    failures: int = 0

    def receive(
        self, max_messages: int, wait_time_s: float, visibility_timeout_s: int | None = None
    ) -> list[ReceivedMessage]:
        if self.failures > 0:
            self.failures -= 1
            raise QueueError("SQS ReceiveMessage: connection reset")
        return super().receive(max_messages, wait_time_s, visibility_timeout_s)


def test_a_failed_receive_is_retried_after_a_pause(
    env: Env, events: list[logging.LogRecord]
) -> None:
    enqueue(env.queue, env.state, [deposit(n) for n in range(3)])
    queue = FlakyReceives(env.queue)
    queue.failures = 2

    result = run_worker(env, ScriptedSink(env.ledger), queue=queue)

    assert result.succeeded == 3 and result.errors == 2
    assert sum("receiving failed" in e["msg"] for e in coded(events, ErrorCode.QUEUE_FAILED)) == 2


def test_receives_failing_in_a_row_stop_the_worker_with_the_error(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("raasctl.worker.decision.MAX_CONSECUTIVE_ERRORS", 3)
    queue = FlakyReceives(env.queue)
    queue.failures = 100
    worker = Worker(queue, env.state, ScriptedSink(), options())

    with pytest.raises(QueueError, match="connection reset"):
        worker.run()
    assert worker.result().stopped is StopReason.ERROR


# ---------------------------------------------------------------- message groups (SQS FIFO)


def test_versions_of_one_record_apply_in_order_when_the_first_fails_once(
    env: Env, sqs: Any, events: list[logging.LogRecord]
) -> None:
    # SQS (and moto) return several messages of one group in one receive.
    queue = sqs_fifo_queue(sqs, "versions", max_receive=5)
    keys = deposit_versions(queue, env.state, ["v1", "v2", "v3"])
    sink = ScriptedSink(env.ledger)
    sink.fail(keys[0], SinkError("HTTP 503", retryable=True))

    result = run_worker(env, sink, queue=queue, concurrency=4)

    group_calls = [key for key in list(sink.keys()) if ":D-1:" in key]
    # v2 and v3 never ran before v1 succeeded: they were released, unhandled, and came back.
    assert group_calls == [keys[0], keys[0], keys[1], keys[2]]
    assert ledger_row(env.db, "D-1") == (keys[2], "v3")  # the latest version is in place
    assert (result.succeeded, result.retries, result.failed) == (4, 1, 0)
    assert result.released == 2
    released = [e for e in coded(events, InfoCode.MESSAGE_RETRY) if "released 2" in e["msg"]]
    assert len(released) == 1 and released[0]["group_id"] == "D-1"
    run = env.state.get_run("run-1")
    assert run is not None and (run.succeeded, run.status) == (4, "complete")
    assert queue.depth().empty


def test_a_group_released_on_its_last_receive_counts_failed_and_the_run_completes(
    env: Env, sqs: Any
) -> None:
    queue = sqs_fifo_queue(sqs, "exhausted", max_receive=2)
    keys = deposit_versions(queue, env.state, ["v1", "v2", "v3"])
    sink = ScriptedSink(env.ledger)
    sink.fail(keys[0], *[SinkError("HTTP 503", retryable=True)] * 5)

    result = run_worker(env, sink, queue=queue)

    # v1 failed on both its receives. When the receive handed over v2 and v3 with it, they
    # were released both times and reach the DLQ with v1 (failed 3); when it did not, they
    # wait behind v1 and are applied in order once v1 has gone to the DLQ. Either way order
    # holds and the run completes.
    calls = [key for key in list(sink.keys()) if ":D-1:" in key]
    assert calls in ([keys[0], keys[0]], [keys[0], keys[0], keys[1], keys[2]])
    applied_later = len(calls) - 2
    assert result.failed == 3 - applied_later
    run = env.state.get_run("run-1")
    assert run is not None
    assert (run.succeeded, run.failed, run.done, run.total) == (
        1 + applied_later,
        3 - applied_later,
        4,
        4,
    )
    assert run.status == "failed"  # complete, with failed entries: not stuck `running`
    assert queue.depth().dlq_visible == 3 - applied_later


class DeniedReceives(RecordingQueue):
    def receive(
        self, max_messages: int, wait_time_s: float, visibility_timeout_s: int | None = None
    ) -> list[ReceivedMessage]:
        raise QueueError(
            "access denied: sqs:ReceiveMessage on q (AccessDenied)", code=ErrorCode.ACCESS_DENIED
        )


def assert_stops_at_once(
    env: Env, queue: Queue, code: ErrorCode, events: list[logging.LogRecord]
) -> None:
    # --max-runtime only bounds the test should the worker retry instead.
    worker = Worker(queue, env.state, ScriptedSink(), options(max_runtime_s=4))
    began = time.monotonic()

    with pytest.raises(QueueError) as raised:
        worker.run()

    assert raised.value.code is code
    assert time.monotonic() - began < 1.5
    assert worker.result().stopped is StopReason.ERROR and worker.result().errors == 0
    assert not any("retrying" in record.getMessage() for record in events)


def test_a_queue_that_does_not_exist_stops_the_worker_at_once(
    env: Env, sqs: Any, events: list[logging.LogRecord]
) -> None:
    url = sqs_fifo_queue(sqs, "real", max_receive=None).name
    missing = SqsQueue(sqs, url.replace("real.fifo", "missing.fifo"))
    assert_stops_at_once(env, missing, ErrorCode.QUEUE_NOT_FOUND, events)


def test_denied_access_stops_the_worker_at_once(env: Env, events: list[logging.LogRecord]) -> None:
    assert_stops_at_once(env, DeniedReceives(env.queue), ErrorCode.ACCESS_DENIED, events)


def test_missing_credentials_stop_the_worker_at_once(
    env: Env, events: list[logging.LogRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    # Signing fails before any connection, so nothing needs to listen there.
    client = boto3.client("sqs", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
    queue = SqsQueue(client, "http://127.0.0.1:9/123456789012/q.fifo")
    assert_stops_at_once(env, queue, ErrorCode.CREDENTIALS_MISSING, events)


def test_worker_command_on_a_queue_that_does_not_exist_exits_1_at_once(
    runner: CliRunner, isolated: Path, sqs: Any
) -> None:
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/raas-cron-jobs-nowhere.fifo"
    config = isolated / "raasctl.yaml"
    config.write_text(
        json.dumps(
            {
                "default_env": "work-uat",
                "environments": {
                    "work-uat": {
                        "aws": {"region": "us-east-1"},
                        "queue": {"kind": "sqs", "url": url, "wait_time_s": 1},
                        "state": {"kind": "sqlite"},
                        "sink": {"kind": "sqlite"},
                    }
                },
            }
        )
    )
    began = time.monotonic()

    result = runner.invoke(
        main, ["--config", str(config), "--env", "work-uat", "worker", "--until-empty"]
    )

    assert time.monotonic() - began < 5
    assert result.exit_code == 1, result.stderr
    assert result.stdout == ""
    lines = _json_lines(result.stderr)
    assert lines[-1]["code"] == "RAAS_QUEUE_NOT_FOUND"
    assert "raas-cron-jobs-nowhere" in lines[-1]["msg"] and "\n" not in lines[-1]["msg"]
    assert not any("retrying" in json.dumps(line) for line in lines)


# ---------------------------------------------------------------- pool, rate, filters


def test_concurrency_bounds_the_handlers_and_a_batch_is_read_ahead(env: Env) -> None:
    enqueue(env.queue, env.state, [deposit(n) for n in range(24)])
    sink = ScriptedSink(env.ledger, delay_s=0.05)
    queue = RecordingQueue(env.queue)

    result = run_worker(env, sink, queue=queue, concurrency=3)

    assert result.succeeded == 24
    assert sink.max_running == 3
    # A whole batch beyond the busy slots: receives stay full, each taken when there was
    # room for ten (3 slots + 10 ahead), never more.
    assert set(queue.receives) == {10}


def test_as_many_messages_as_slots_are_held_ahead(env: Env) -> None:
    enqueue(env.queue, env.state, [deposit(n) for n in range(60)])
    queue = RecordingQueue(env.queue)
    received_at_first_finish: list[int] = []

    class FirstFinish(ScriptedSink):
        def apply(self, envelope: Envelope) -> Applied:
            applied = super().apply(envelope)
            with self.lock:
                if not received_at_first_finish:
                    received_at_first_finish.append(sum(queue.received))
            return applied

    result = run_worker(env, FirstFinish(env.ledger, delay_s=0.5), queue=queue, concurrency=16)

    assert result.succeeded == 60
    # Slots that start together finish together: 16 busy and up to 16 more waiting for them,
    # in whole receives of ten, so three receives before the first apply ends (not two).
    assert received_at_first_finish == [30]


def test_receives_at_most_ten_at_once(env: Env) -> None:
    enqueue(env.queue, env.state, [deposit(n) for n in range(30)])
    queue = RecordingQueue(env.queue)

    result = run_worker(env, ScriptedSink(env.ledger), queue=queue, concurrency=32)

    assert result.succeeded == 30
    assert queue.receives[0] == 10 and max(queue.receives) == 10


def test_rate_limit_spaces_starts_evenly(env: Env) -> None:
    enqueue(env.queue, env.state, [deposit(n) for n in range(21)])
    sink = ScriptedSink(env.ledger)
    queue = RecordingQueue(env.queue)

    result = run_worker(env, sink, queue=queue, concurrency=8, rate_per_s=20)

    assert result.succeeded == 21
    starts = sorted(at for _, at in sink.calls)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # Evenly spaced: a start late by scheduling jitter is made up, never by less than half
    # an interval (the sink's clock reads a little after the limiter's).
    assert min(gaps) >= 0.025 - 0.005
    assert 1.0 - 0.01 <= starts[-1] - starts[0] < 1.5  # 21 starts span about a second
    # Tokens are taken before the receive, a batch's worth once they are all due within
    # half a second (ten intervals): three receives, not 21.
    assert set(queue.receives) == {10}
    assert [count for count in queue.received if count] == [10, 10, 1]


def test_max_messages_stops_after_that_many(env: Env) -> None:
    enqueue(env.queue, env.state, [deposit(n) for n in range(25)])
    queue = RecordingQueue(env.queue)

    result = run_worker(
        env, ScriptedSink(env.ledger), queue=queue, concurrency=4, max_messages=7, until_empty=False
    )

    assert result.stopped is StopReason.MAX_MESSAGES
    assert result.processed == 7
    assert sum(queue.receives) <= 7 + 4  # never asked for more than it may take
    assert env.queue.depth().visible == 18


def test_max_runtime_bounds_an_idle_worker(env: Env) -> None:
    began = time.monotonic()
    result = run_worker(env, ScriptedSink(), until_empty=False, max_runtime_s=0.5, wait_time_s=20)
    assert result.stopped is StopReason.MAX_RUNTIME
    assert time.monotonic() - began < 2.0


def test_cron_filter_is_refused_on_a_queue_that_dead_letters_and_touches_nothing(
    env: Env,
) -> None:
    # The default max_receive_count: every release of another cron's message is a receive,
    # so a filtering worker would move them all to the DLQ after a few polls.
    queue = SqliteQueue(env.db, fifo=True)
    assert queue.max_receive_count() is not None
    enqueue(queue, env.state, [deposit(n) for n in range(2)])
    enqueue(queue, env.state, [{"invoice_id": "I-1"}], cron=PAID, run_id="run-2")
    sink = ScriptedSink(env.ledger)
    worker = Worker(
        queue,
        env.state,
        sink,
        options(
            crons=frozenset({DEPOSITS}), until_empty=False, max_runtime_s=2.0, foreign_pause_s=0
        ),
    )

    with pytest.raises(UsageError, match="one queue per cron") as refused:
        worker.run()

    assert refused.value.exit_code == 2
    assert "maxReceiveCount" in str(refused.value) and queue.name in str(refused.value)
    assert sink.calls == []
    depth = queue.depth()
    assert (depth.visible, depth.in_flight, depth.dlq_visible) == (3, 0, 0)
    assert [m.receive_count for m in queue.peek(10)] == [0, 0, 0]
    queue.close()


def test_cron_filter_releases_other_crons_uncounted_on_a_queue_without_a_dlq(
    env: Env, sqs: Any
) -> None:
    queue = sqs_fifo_queue(sqs, "no-dlq", max_receive=None)
    deposits = enqueue(queue, env.state, [deposit(n) for n in range(5)])
    bills = enqueue(
        queue,
        env.state,
        [{"invoice_id": f"I-{n}", "currency": "USD"} for n in range(3)],
        cron=PAID,
        run_id="run-2",
    )
    sink = ScriptedSink(env.ledger)
    worker = Worker(
        queue,
        env.state,
        sink,
        options(
            crons=frozenset({DEPOSITS}), until_empty=False, max_runtime_s=2.0, foreign_pause_s=0.2
        ),
    )

    result = worker.run()

    assert sorted(sink.keys()) == sorted(deposits)
    assert result.succeeded == 5 and result.released >= 3 and result.failed == 0
    assert queue.depth().visible == 3  # the bills wait, visible, for their own worker
    other = env.state.get_run("run-2")
    assert other is not None and other.done == 0
    assert not any(env.state.is_applied(key) for key in bills)


# ---------------------------------------------------------------- visibility and stopping


def test_heartbeat_keeps_a_slow_message_invisible(env: Env) -> None:
    queue = SqliteQueue(env.db, fifo=False, max_receive_count=5, visibility_timeout_s=1)
    keys = enqueue(queue, env.state, [deposit(1)])
    recording = RecordingQueue(queue)
    sink = ScriptedSink(env.ledger, delay_s=2.2)
    worker = Worker(recording, env.state, sink, options(visibility_timeout_s=1))
    thread, out = in_background(worker)

    began = wait_until(lambda: sink.calls)[0][1]
    # Past the 1 s visibility: without a heartbeat it would be visible again.
    wait_until(lambda: time.monotonic() - began >= 1.4)
    thief = queue.receive(10, 0)
    thread.join(10)

    assert thief == []
    assert out["result"].succeeded == 1
    assert sink.keys() == keys
    extensions = [timeout for _, timeout in recording.visibility]
    assert len(extensions) >= 3 and set(extensions) == {1}
    queue.close()


class NoHeartbeat(RecordingQueue):
    """Every visibility extension fails (a release, to 0, still works)."""

    def change_visibility(self, receipt_handle: str, timeout_s: int) -> None:
        if timeout_s > 0:
            raise QueueError("SQS ChangeMessageVisibility: connection reset")
        super().change_visibility(receipt_handle, timeout_s)


def test_a_message_whose_visibility_ran_out_before_its_delete_is_counted_once(
    env: Env, events: list[logging.LogRecord]
) -> None:
    queue = SqliteQueue(env.db, fifo=False, max_receive_count=5, visibility_timeout_s=1)
    keys = enqueue(queue, env.state, [deposit(1)])
    sink = ScriptedSink(env.ledger, delay_s=1.6)  # longer than the 1 s visibility
    worker = Worker(
        NoHeartbeat(queue),
        env.state,
        sink,
        # One slot and no read-ahead: its own poller waits for it, and cannot take the
        # message back itself.
        options(
            concurrency=1,
            read_ahead=0,
            visibility_timeout_s=1,
            until_empty=False,
            max_runtime_s=2.5,
        ),
    )
    thread, out = in_background(worker)
    # The heartbeat failed, so another worker receives the message while it is applied;
    # the first worker's delete then holds a stale receipt handle and deletes nothing.
    wait_until(lambda: sink.running == 1)
    [taken] = wait_until(lambda: queue.receive(10, 0, visibility_timeout_s=30))
    assert sink.running == 1, "taken while the first worker was still applying it"
    thread.join(10)

    first = out["result"]
    assert first.succeeded == 1 and first.errors >= 1
    assert any("visibility timeout" in e["msg"] for e in coded(events, ErrorCode.QUEUE_FAILED))
    assert queue.depth().in_flight == 1  # not deleted: the other worker holds it
    # The entry is applied, and its outcome is recorded once (issue: exact accounting): the
    # count comes before the delete, and recording it again changes nothing.
    run = env.state.get_run("run-1")
    assert run is not None and (run.succeeded, run.done) == (1, 1)

    # The other worker gives it back; the next worker finds it applied and deletes it; the
    # run still counts it once.
    queue.change_visibility(taken.receipt_handle, 0)
    second = run_worker(env, sink, queue=queue)

    assert second.succeeded == 1
    assert sink.keys() == keys  # applied once
    run = env.state.get_run("run-1")
    assert run is not None and (run.succeeded, run.done, run.status) == (1, 1, "complete")
    queue.close()


def test_a_signal_finishes_in_flight_work_and_stops_receiving(env: Env) -> None:
    enqueue(env.queue, env.state, [deposit(n) for n in range(20)])
    sink = ScriptedSink(env.ledger, delay_s=0.3)
    worker = Worker(env.queue, env.state, sink, options(concurrency=2, until_empty=False))
    thread, out = in_background(worker)
    wait_until(lambda: sink.running == 2)

    worker.stop()
    thread.join(5)

    result = out["result"]
    assert result.stopped is StopReason.SIGNAL
    assert result.succeeded == 2  # the two in flight finished
    assert env.ledger.counts()["applications"] == 2
    assert env.queue.depth().visible == 18  # nothing else was taken
    assert env.queue.depth().in_flight == 0


class FarStart(RateLimiter):
    """Every start is far off, so a stop always comes first."""

    def __init__(self) -> None:
        super().__init__(None)

    def begin(self, stop: threading.Event | None = None) -> bool:
        assert stop is not None
        return stop.wait(60)


def receive_and_release(queue: Queue, times: int) -> None:
    """Use up receives of the (only) message, as earlier workers would have."""
    for _ in range(times):
        [message] = queue.receive(1, 0)
        queue.change_visibility(message.receipt_handle, 0)


def test_a_signal_releases_messages_not_yet_started(env: Env) -> None:
    enqueue(env.queue, env.state, [deposit(1)])

    sink = ScriptedSink(env.ledger)
    worker = Worker(env.queue, env.state, sink, options(until_empty=False), limiter=FarStart())
    thread, out = in_background(worker)
    wait_until(lambda: env.queue.depth().in_flight)

    worker.stop()
    thread.join(5)

    assert not thread.is_alive()
    # Released once, after polling ended: the poller's last long poll could not catch it
    # and use up another of its receives.
    assert out["result"].released == 1 and out["result"].processed == 0
    assert sink.calls == []
    depth = env.queue.depth()
    assert (depth.visible, depth.in_flight) == (1, 0)  # visible again at once
    [again] = env.queue.receive(1, 0)
    assert again.receive_count == 2


def test_a_message_released_at_a_stop_on_its_last_receive_counts_failed(
    env: Env, events: list[logging.LogRecord]
) -> None:
    keys = enqueue(env.queue, env.state, [deposit(1)])
    receive_and_release(env.queue, 2)  # max_receive_count 3: the worker's is the last
    worker = Worker(
        env.queue,
        env.state,
        ScriptedSink(env.ledger),
        options(until_empty=False),
        limiter=FarStart(),
    )
    thread, out = in_background(worker)
    wait_until(lambda: env.queue.depth().in_flight)

    worker.stop()
    thread.join(5)

    assert out["result"].failed == 1 and out["result"].released >= 1
    failed = coded(events, ErrorCode.MESSAGE_FAILED)
    assert len(failed) == 1 and failed[0]["key"] == keys[0] and failed[0]["attempt"] == 3
    run = env.state.get_run("run-1")
    assert run is not None
    assert (run.failed, run.done, run.total, run.status) == (1, 1, 1, "failed")
    # As counted: its next receive moves it to the DLQ.
    assert env.queue.receive(10, 0) == []
    assert env.queue.depth().dlq_visible == 1


def test_a_message_released_at_a_stop_before_its_last_receive_is_not_counted(env: Env) -> None:
    enqueue(env.queue, env.state, [deposit(1)])
    receive_and_release(env.queue, 1)
    worker = Worker(
        env.queue,
        env.state,
        ScriptedSink(env.ledger),
        options(until_empty=False),
        limiter=FarStart(),
    )
    thread, out = in_background(worker)
    wait_until(lambda: env.queue.depth().in_flight)

    worker.stop()
    thread.join(5)

    assert out["result"].processed == 0
    run = env.state.get_run("run-1")
    assert run is not None and run.done == 0 and run.status == "running"
    assert len(env.queue.receive(10, 0)) == 1  # one receive left


def test_an_error_on_the_last_receive_counts_failed(
    env: Env, events: list[logging.LogRecord]
) -> None:
    keys = enqueue(env.queue, env.state, [deposit(1), deposit(2)])

    class Unrecorded(SqliteState):
        def record_outcomes(
            self,
            run_id: str,
            outcomes: Mapping[str, EntryStatus],
            now: datetime,
            *,
            applied: Sequence[AppliedEntry] = (),
        ) -> RunRecord | None:
            if applied:  # the records of an apply, written with its outcome
                raise StateError("DynamoDB PutItem: internal error")
            return super().record_outcomes(run_id, outcomes, now)

    state = Unrecorded(env.db)
    # Two receives each, as if earlier attempts had failed: the worker's is the last.
    for _ in range(2):
        for message in env.queue.receive(10, 0):
            env.queue.change_visibility(message.receipt_handle, 0)
    worker = Worker(
        env.queue, state, ScriptedSink(env.ledger), options(until_empty=False, max_runtime_s=0.8)
    )

    # The state service was failing when --max-runtime ended the worker: exit 1 with it.
    with pytest.raises(StateError, match="internal error"):
        worker.run()
    result = worker.result()

    assert result.errors == 2 and result.failed == 2
    assert {e["key"] for e in coded(events, ErrorCode.MESSAGE_FAILED)} == set(keys)
    run = env.state.get_run("run-1")
    assert run is not None and (run.failed, run.status) == (2, "failed")
    state.close()


def test_in_flight_work_past_the_shutdown_deadline_is_left_to_its_visibility(
    env: Env, events: list[logging.LogRecord]
) -> None:
    enqueue(env.queue, env.state, [deposit(1)])
    release = threading.Event()

    started = threading.Event()

    class Hang(Sink):
        def apply(self, envelope: Envelope) -> Applied:
            started.set()
            release.wait(10)
            return Applied.APPLIED

    worker = Worker(
        env.queue, env.state, Hang(), options(until_empty=False, shutdown_timeout_s=0.3)
    )
    thread, out = in_background(worker)
    wait_until(started.is_set)
    began = time.monotonic()
    worker.stop()
    thread.join(5)
    stopped_after = time.monotonic() - began
    release.set()

    assert out["result"].processed == 0
    assert 0.25 <= stopped_after < 2
    assert any("still in flight" in e["msg"] for e in coded(events, InfoCode.WORKER_STOPPING))
    assert env.queue.depth().in_flight == 1


# ---------------------------------------------------------------- runs and progress


def test_run_completes_when_its_total_arrives_after_its_last_message(
    env: Env, events: list[logging.LogRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("raasctl.worker.heartbeat.COMPLETION_CHECK_S", 0.2)
    checks: list[float] = []
    complete_open = RunsServed.complete_open

    def counted(self: RunsServed) -> None:
        checks.append(time.monotonic())
        complete_open(self)

    monkeypatch.setattr(RunsServed, "complete_open", counted)
    enqueue(env.queue, env.state, [deposit(n) for n in range(3)], finish=False)
    # Its producer is alive (it holds the run lock's lease), so the empty queue does not make
    # the run abandoned: it is only slow to say how many it sent.
    assert env.state.acquire_lock(run_lock("test", DEPOSITS), "run-1", 60, datetime.now(UTC))
    worker = Worker(
        env.queue,
        env.state,
        ScriptedSink(env.ledger),
        options(until_empty=False, max_runtime_s=2.0),
    )
    thread, _ = in_background(worker)
    wait_until(lambda: env.ledger.counts()["applications"] >= 3)
    applied_at = time.monotonic()
    # A completion check ran after the last message was counted, and found no total yet.
    wait_until(lambda: any(t > applied_at + 0.1 for t in checks))
    assert coded(events, InfoCode.RUN_COMPLETE) == []

    env.state.finish_enqueue("run-1", entries=3, enqueued=3, invalid=0, duplicates=0)
    thread.join(5)

    assert [c["run_id"] for c in coded(events, InfoCode.RUN_COMPLETE)] == ["run-1"]
    run = env.state.get_run("run-1")
    assert run is not None and run.status == "complete"


def test_progress_reports_done_total_rate_and_eta(env: Env) -> None:
    enqueue(env.queue, env.state, [deposit(n) for n in range(40)])
    seen: list[WorkerStats] = []
    worker = Worker(
        env.queue,
        env.state,
        ScriptedSink(env.ledger, delay_s=0.02),
        options(concurrency=2, stats_interval_s=0.1),
        on_stats=seen.append,
    )
    result = worker.run()

    assert result.succeeded == 40
    assert seen, "no progress reported"
    middle = [s for s in seen if 0 < s.runs_done < 40]
    assert middle
    assert all(s.runs_total == 40 for s in middle)
    assert all(s.eta_s is not None and s.eta_s > 0 for s in middle)
    assert all(s.per_hour > 0 for s in middle)
    final = worker.stats()
    assert (final.runs_done, final.runs_total, final.eta_s) == (40, 40, 0)
    assert final.fields()["done"] == 40


def test_default_progress_is_a_stats_event(env: Env, events: list[logging.LogRecord]) -> None:
    enqueue(env.queue, env.state, [deposit(n) for n in range(10)])
    worker = Worker(
        env.queue,
        env.state,
        ScriptedSink(env.ledger, delay_s=0.05),
        options(concurrency=1, stats_interval_s=0.1),
    )
    worker.run()
    stats = coded(events, InfoCode.WORKER_STATS)
    assert stats and {"processed", "per_hour", "done", "total", "eta_s"} <= set(stats[-1])


# ---------------------------------------------------------------- the commands


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_worker_command_drains_a_run_and_runs_show_it_complete(runner: CliRunner) -> None:
    enqueued = runner.invoke(main, ["run", DEPOSITS, "--format", "json"])
    assert enqueued.exit_code == 0, enqueued.output
    run = json.loads(enqueued.stdout)

    result = runner.invoke(main, ["worker", "--until-empty", "--format", "json"])

    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["succeeded"] == summary["processed"] == run["enqueued"] > 0
    assert (summary["failed"], summary["dead_lettered"]) == (0, 0)
    codes = [line["code"] for line in _json_lines(result.stderr)]
    assert "RAAS_RUN_COMPLETE" in codes and "RAAS_QUEUE_EMPTY" in codes
    assert codes[-1] == "RAAS_WORKER_FINISHED"

    shown = runner.invoke(main, ["runs", "show", run["run_id"], "--format", "json"])
    assert shown.exit_code == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["status"] == "complete"
    assert record["done"] == record["total"] == record["succeeded"] == run["enqueued"]
    assert record["per_hour"] > 0 and record["eta_s"] is None

    listed = runner.invoke(main, ["runs", "list", "--cron", DEPOSITS, "--format", "json"])
    assert listed.exit_code == 0
    assert [row["run_id"] for row in json.loads(listed.stdout)] == [run["run_id"]]
    table = runner.invoke(main, ["runs", "list"])
    assert table.exit_code == 0 and "complete" in table.stdout


def test_worker_command_exits_3_when_a_message_was_dead_lettered(
    runner: CliRunner, isolated: Path
) -> None:
    queue = SqliteQueue(isolated / ".raasctl" / "local.db")
    send_raw(queue, "{not json")
    queue.close()

    result = runner.invoke(main, ["worker", "--until-empty", "--format", "json"])

    assert result.exit_code == 3, result.stderr
    assert json.loads(result.stdout)["dead_lettered"] == 1
    dead = [e for e in _json_lines(result.stderr) if e["code"] == "RAAS_MESSAGE_DEAD_LETTERED"]
    assert len(dead) == 1 and "not JSON" in dead[0]["reason"]


def test_worker_command_logs_periodic_stats_lines(runner: CliRunner) -> None:
    assert runner.invoke(main, ["run", DEPOSITS]).exit_code == 0
    result = runner.invoke(
        main, ["worker", "--until-empty", "--rate", "20", "--stats-every", "0.1"]
    )
    assert result.exit_code == 0, result.stderr
    stats = [e for e in _json_lines(result.stderr) if e["code"] == "RAAS_WORKER_STATS"]
    assert stats
    assert {"done", "total", "per_hour", "eta_s", "in_flight"} <= set(stats[-1])
    assert "Worker" in result.stdout  # the summary table


def test_worker_command_rejects_an_unknown_cron(runner: CliRunner) -> None:
    result = runner.invoke(main, ["worker", "--cron", "clientRefund", "--until-empty"])
    assert result.exit_code == 2
    assert "RAAS_UNKNOWN_CRON" in result.stderr and result.stdout == ""


def test_worker_command_refuses_cron_on_a_queue_with_a_dlq(
    runner: CliRunner, isolated: Path
) -> None:
    enqueued = runner.invoke(main, ["run", DEPOSITS, "--format", "json"])
    assert enqueued.exit_code == 0, enqueued.output
    count = json.loads(enqueued.stdout)["enqueued"]

    result = runner.invoke(main, ["worker", "--cron", PAID, "--max-runtime", "3"])

    assert result.exit_code == 2
    assert result.stdout == ""
    [line] = _json_lines(result.stderr)
    assert line["code"] == "RAAS_USAGE"
    assert "maxReceiveCount" in line["msg"] and "one queue per cron" in line["msg"]
    queue = SqliteQueue(isolated / ".raasctl" / "local.db")
    depth = queue.depth()
    receives = {m.receive_count for m in queue.peek(10)}
    queue.close()
    assert (depth.visible, depth.dlq_visible, receives) == (count, 0, {0})  # untouched


def test_runs_show_an_unknown_run_exits_1(runner: CliRunner) -> None:
    result = runner.invoke(main, ["runs", "show", "no-such-run"])
    assert result.exit_code == 1
    assert "RAAS_RUN_NOT_FOUND" in result.stderr and "no-such-run" in result.stderr
    assert result.stdout == ""


def test_run_progress_has_rate_and_eta_while_running() -> None:
    created = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    run = RunRecord(
        run_id="r",
        cron=DEPOSITS,
        env="t",
        mock=False,
        created_at=created,
        total=100,
        succeeded=25,
        started_at=created,
    )
    view = run_progress(run, created + timedelta(minutes=30))
    assert view["status"] == "running"
    assert view["per_hour"] == 50.0
    assert view["eta_s"] == 75 * 72  # 75 left at 50/h


def test_terminal_progress_shows_rate_eta_and_outcomes() -> None:
    stats = WorkerStats(
        processed=30,
        succeeded=28,
        failed=0,
        dead_lettered=1,
        retries=1,
        in_flight=4,
        elapsed_s=60,
        per_hour=1800,
        runs_done=29,
        runs_total=100,
        eta_s=3742,
    )
    detail = progress_detail(stats)
    assert "1,800/h" in detail and "ETA 1:02:22" in detail
    assert "DLQ 1" in detail and "retries 1" in detail and "in flight 4" in detail
    assert "ETA -" in progress_detail(replace(stats, eta_s=None))
