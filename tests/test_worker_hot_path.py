"""The per-message shortcuts of the worker's hot path give what the general code gives:
facts copied without `dataclasses.replace`, statistics added up per run before the lock,
attributes decoded once per receive, an envelope read and an amount stored without the
general steps."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from support import FakeClock

from raasctl.envelope import Envelope, EnvelopeError
from raasctl.errors import SinkError
from raasctl.queues.base import OutgoingMessage
from raasctl.queues.sqlite import SqliteQueue
from raasctl.runstats import StatsRow, bucket_of
from raasctl.sinks.base import Applied, Sink
from raasctl.sinks.sqlite import _PLAIN_DECIMAL, _amount
from raasctl.state.base import Known, RunRecord, known_of
from raasctl.state.sqlite import SqliteState
from raasctl.worker import Worker, WorkerOptions
from raasctl.worker.decision import APPLIED, Backoff, Facts, Outcome, SinkOutcome
from raasctl.worker.handler import applied_facts
from raasctl.worker.lifecycle import Lifecycle
from raasctl.worker.messages import Settled
from raasctl.worker.recorder import Recorder
from raasctl.worker.results import Tally
from raasctl.worker.served import RunsServed
from raasctl.worker.settler import Settler

CRON = "clientDepositUpdate"


def test_applied_facts_is_replace_with_the_sink_applied_for_every_field() -> None:
    # Every field set to something other than its default, so a field applied_facts forgot
    # would show.
    facts = Facts(
        receive_count=3,
        max_receive_count=5,
        problem="p",
        let_go="l",
        applied=True,
        superseded=True,
        sink=SinkOutcome(False, True, 2.0, "r", True),
        error="e",
        backoff=Backoff(1.0, 9.0),
    )
    defaults = Facts(receive_count=0, max_receive_count=None)
    for field in dataclasses.fields(Facts):
        assert getattr(facts, field.name) != getattr(defaults, field.name), field.name

    assert applied_facts(facts) == dataclasses.replace(facts, sink=APPLIED)


class MemoryStore:
    """A run statistics store that keeps what it is given."""

    def __init__(self) -> None:
        self.rows: list[StatsRow] = []

    def write(self, rows: list[StatsRow]) -> None:
        self.rows.extend(rows)

    def close(self) -> None:
        pass


def test_a_batch_s_latency_and_outcomes_count_per_run_and_cron() -> None:
    store = MemoryStore()
    recorder = Recorder(store, worker="w", clock=lambda: 100.0)  # type: ignore[arg-type]
    entries = [("r1", "clientDepositUpdate")] * 3 + [("r2", "lspBillUpdateStatus")]
    with recorder.sink_calls(entries):
        pass
    recorder.outcomes(
        [
            Settled(Outcome.SUCCEEDED, "r1", "clientDepositUpdate:a"),
            Settled(Outcome.SUCCEEDED, "r1", "clientDepositUpdate:b"),
            Settled(Outcome.DEAD_LETTERED, "r1", "message:m1"),
            Settled(Outcome.RETRY, "r2", "lspBillUpdateStatus:c"),
            Settled(Outcome.FAILED, None, "message:m2"),  # no run: not counted in one
        ]
    )
    recorder.flush(final=True)

    # One row per run and second, named by the run's cron.
    rows = {(row.run_id, row.cron): row for row in store.rows}
    assert len(rows) == 2
    deposits = rows[("r1", "clientDepositUpdate")]
    assert sum(deposits.latency.values()) == 3
    assert (deposits.succeeded, deposits.dead_lettered) == (2, 1)
    bills = rows[("r2", "lspBillUpdateStatus")]
    assert sum(bills.latency.values()) == 1 and bills.retries == 1
    assert sum(row.handled for row in store.rows) == 4


def test_add_latency_adds_several_calls_to_one_bucket() -> None:
    row = StatsRow(run_id="r", second=1, worker="w", cron="c")
    row.add_latency(2.5, 4)
    row.add_latency(2.5)
    assert row.latency == {bucket_of(2.5): 5} and row.latency_max_ms == 2.5


@pytest.fixture
def queue(tmp_path: Path) -> SqliteQueue:
    return SqliteQueue(tmp_path / "env.db", clock=FakeClock())


def test_a_receive_decodes_shared_attributes_once_and_hands_them_out_read_only(
    queue: SqliteQueue,
) -> None:
    run_one = {"cron": "c", "run_id": "r1"}
    queue.send_batch(
        [OutgoingMessage(f"m{n}", f"G{n}", f"d{n}", attributes=run_one) for n in range(3)]
        + [OutgoingMessage("other", "G9", "d9", attributes={"run_id": "r2"})]
        + [OutgoingMessage("bare", "G8", "d8")]
    )

    first, second, third, other, bare = queue.receive(10, 0)

    assert first.attributes == second.attributes == third.attributes == run_one
    assert first.attributes is second.attributes is third.attributes
    assert other.attributes == {"run_id": "r2"} and bare.attributes == {}
    with pytest.raises(TypeError):
        first.attributes["run_id"] = "changed"  # type: ignore[index]
    assert dict(first.attributes) == run_one


def test_deleting_the_heads_of_several_groups_at_once_promotes_each_group_s_next(
    queue: SqliteQueue,
) -> None:
    queue.send_batch(
        [OutgoingMessage(f"{group}{n}", group, f"{group}{n}") for n in range(3) for group in "ABC"]
    )
    heads = queue.receive(10, 0)
    assert sorted(m.body for m in heads) == ["A0", "B0", "C0"]

    queue.delete([m.receipt_handle for m in heads])  # one statement promotes all three

    assert sorted(m.body for m in queue.receive(10, 0)) == ["A1", "B1", "C1"]


def test_each_receive_of_a_message_gives_it_a_new_handle(queue: SqliteQueue) -> None:
    queue.send_batch([OutgoingMessage(f"m{n}", f"G{n}", f"d{n}") for n in range(2)])
    first = queue.receive(10, 0, visibility_timeout_s=0)
    again = queue.receive(10, 0)
    assert len({m.receipt_handle for m in first + again}) == 4
    queue.delete([m.receipt_handle for m in first])  # stale: deletes nothing
    assert queue.depth().in_flight == 2


# ---------------------------------------------------------------- a batch's handling


def test_known_of_shares_the_unversioned_answers() -> None:
    assert known_of(False, None) is known_of(False, None) == Known(False, None)
    assert known_of(True, None) is known_of(True, None) == Known(True, None)
    assert known_of(False, "v2") == Known(False, "v2")


def worker_on(path: Path, sink: Sink, **options: object) -> tuple[Worker, SqliteQueue]:
    queue, state = SqliteQueue(path, max_receive_count=3), SqliteState(path)
    state.create_run(
        RunRecord(run_id="r", cron=CRON, env="e", mock=False, created_at=datetime.now(UTC))
    )
    envelopes = [
        Envelope.new(cron=CRON, run_id="r", key=f"{CRON}:D-{n}:v1", payload={"deposit_id": n})
        for n in range(6)
    ]
    queue.send_batch([e.to_message(e.key) for e in envelopes])
    state.finish_enqueue("r", entries=6, enqueued=6, invalid=0, duplicates=0)
    worker_options = WorkerOptions(
        concurrency=1, until_empty=True, wait_time_s=0.1, stats_interval_s=None, **options
    )
    return Worker(queue, state, sink, worker_options), queue


class BatchSink(Sink):
    """Applies batches; the entries named in `failing` fail, retryable."""

    batches = True

    def __init__(self, failing: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.failing = failing

    def apply(self, envelope: Envelope) -> Applied:
        return Applied.APPLIED

    def apply_batch(self, envelopes: Sequence[Envelope]) -> list[SinkError | None]:
        return [
            SinkError("down", retryable=True) if e.key in self.failing else None for e in envelopes
        ]


def test_a_batch_s_messages_share_their_facts_and_are_settled_together(tmp_path: Path) -> None:
    worker, queue = worker_on(tmp_path / "env.db", BatchSink())
    handed: list[int] = []
    settle = worker.settler.settle

    def counting_settle(*items: Settled) -> None:
        handed.append(len(items))
        settle(*items)

    worker.handler.settle = counting_settle

    result = worker.run()

    assert result.succeeded == 6 and queue.depth().empty
    assert handed == [6]  # one hand-over for the whole receive
    # One facts object for the six first receives, not applied.
    assert len(worker.handler._judged) == 1 and len(worker.handler._recorded) == 1


def test_a_retry_in_a_batch_gets_facts_of_its_own_and_the_rest_succeed(tmp_path: Path) -> None:
    worker, _ = worker_on(tmp_path / "env.db", BatchSink({f"{CRON}:D-2:v1"}), backoff_base_s=0.0)
    result = worker.run()
    # Retried on its first two receives, failed on its last (the queue dead-letters it).
    assert (result.succeeded, result.retries, result.failed) == (5, 2, 1)
    assert sorted(key[0] for key in worker.handler._judged) == [1, 2, 3]


def settling(
    queue: SqliteQueue, state: SqliteState, count: int, interval_s: float = 0.25
) -> tuple[Settler, Tally]:
    """A run of `count` messages in `queue`, every one received and handed to a started
    settler at once."""
    now = datetime.now(UTC)
    state.create_run(RunRecord(run_id="r", cron=CRON, env="e", mock=False, created_at=now))
    queue.send_batch([OutgoingMessage(f"m{n}", f"G{n}", f"d{n}") for n in range(count)])
    state.finish_enqueue("r", entries=count, enqueued=count, invalid=0, duplicates=0)
    tally = Tally()
    runs = RunsServed(state, lambda: now)
    settler = Settler(queue, runs, tally, Lifecycle(), time.monotonic, interval_s=interval_s)
    settler.start()
    settler.settle(
        *[
            Settled(Outcome.SUCCEEDED, "r", f"k{n}", m.receipt_handle)
            for n, m in enumerate(queue.receive(count + 10, 0))
        ]
    )
    return settler, tally


def test_the_settler_takes_a_batch_handed_over_at_once(tmp_path: Path) -> None:
    path = tmp_path / "env.db"
    queue, state = SqliteQueue(path), SqliteState(path)
    settler, tally = settling(queue, state, 12)

    settler.flush_pending()
    settler.stop(5.0)

    assert tally.snapshot().succeeded == 12 and queue.depth().empty
    run = state.get_run("r")
    assert run is not None and run.status == "complete"


class DeleteSizes(SqliteQueue):
    """The embedded queue, recording how many handles each delete carried."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.deletes: list[int] = []

    def delete(self, receipt_handles: Sequence[str]) -> None:
        self.deletes.append(len(receipt_handles))
        super().delete(receipt_handles)


def test_past_ten_the_settler_deletes_whole_tens_and_the_rest_with_the_next_batch(
    tmp_path: Path,
) -> None:
    path = tmp_path / "env.db"
    queue, state = DeleteSizes(path), SqliteState(path)
    settler, tally = settling(queue, state, 23, interval_s=0.05)

    deadline = time.monotonic() + 10
    while sum(queue.deletes) < 23 and time.monotonic() < deadline:
        time.sleep(0.01)
    settler.stop(5.0)

    assert queue.deletes == [20, 3]  # two full requests' worth, then the three after a wait
    assert tally.snapshot().succeeded == 23 and queue.depth().empty


def test_a_flush_settles_what_does_not_fill_ten_at_once(tmp_path: Path) -> None:
    path = tmp_path / "env.db"
    queue, state = DeleteSizes(path), SqliteState(path)
    # An interval far longer than the test: only the flush can settle the last three.
    settler, tally = settling(queue, state, 13, interval_s=60)

    settler.flush_pending()

    assert sum(queue.deletes) == 13 and queue.depth().empty
    assert tally.snapshot().succeeded == 13
    settler.stop(5.0)


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "-0",
        "1234.50",
        "0.000001",
        "0.0000001",  # seven places: str(Decimal) writes 1E-7
        "007",
        " 1.5",
        "1e3",
        "-0.00",
        "12345678901234567890.123456",
        "+1",
        "1.",
        ".5",
    ],
)
def test_an_amount_s_shortcut_gives_what_decimal_gives(text: str) -> None:
    assert _amount(text) == str(Decimal(text.strip()))


def test_every_plain_decimal_is_its_own_decimal_text() -> None:
    digits = random.Random(7)
    for _ in range(5_000):
        whole = str(digits.randrange(10 ** digits.randrange(1, 25)))
        places = "".join(digits.choice("0123456789") for _ in range(digits.randrange(0, 7)))
        text = ("-" if digits.random() < 0.3 else "") + whole + (f".{places}" if places else "")
        assert _PLAIN_DECIMAL.fullmatch(text), text
        assert str(Decimal(text)) == text


ENVELOPE = Envelope.new(
    cron=CRON,
    run_id="run-1",
    key="k-1",
    payload={"deposit_id": "D-1"},
    entity_id="D-1",
    version="2026-12-01T00:00:00+00:00",
)


@pytest.mark.parametrize(
    "body",
    [
        ENVELOPE.to_body(),
        "  " + ENVELOPE.to_body(),  # leading whitespace: json.loads takes it
        ENVELOPE.to_body() + " \n",
        ENVELOPE.to_body().replace('"k-1"', '"k-\\u00e9"'),  # an escape: checked in full
        ENVELOPE.to_body().replace('"D-1"}', '"D-\\ud800"}', 1),  # one in the payload only
    ],
)
def test_the_body_shortcut_reads_what_json_loads_reads(body: str) -> None:
    data = json.loads(body)
    envelope = Envelope.from_body(body)
    assert (envelope.key, envelope.payload, envelope.entity_id) == (
        data["key"],
        data["payload"],
        data["entity_id"],
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (ENVELOPE.to_body() + "x", "body is not JSON: Extra data"),
        (ENVELOPE.to_body() + "\x0b", "body is not JSON: Extra data"),  # not JSON's whitespace
        (ENVELOPE.to_body() + " \u00a0", "body is not JSON: Extra data"),
        (ENVELOPE.to_body().replace('"k-1"', '"k-\\udc00"'), "key is not valid Unicode"),
        # A lone surrogate made in this process, no escape in sight.
        (ENVELOPE.to_body().replace('"run-1"', '"r-\ud800é"'), "run_id is not valid Unicode"),
        (ENVELOPE.to_body().replace('"run-1"', "7"), "run_id is not a string"),
        (ENVELOPE.to_body().replace('"mock":false', '"mock":0'), "mock is not a boolean (0)"),
        (ENVELOPE.to_body().replace('"mock":false,', ""), "envelope lacks mock"),
    ],
)
def test_the_body_shortcut_refuses_what_the_full_check_refuses(body: str, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=re.escape(reason)):
        Envelope.from_body(body)
