"""The producer against the real SQLite queue and state (and a queue that refuses on cue)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from raasctl.codes import ErrorCode
from raasctl.envelope import Envelope, canonical_json
from raasctl.errors import QueueError, SourceError
from raasctl.producer import EnqueueFailed, MessageWriter, Pacer, Pending, Producer
from raasctl.queues.base import MAX_BATCH, BatchFailure, BatchResult, OutgoingMessage
from raasctl.queues.sqlite import SqliteQueue
from raasctl.state.sqlite import SqliteState

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def pending(n: int, *, start: int = 0, run_id: str = "run-1") -> Iterator[Pending]:
    for i in range(start, start + n):
        key = f"clientDepositUpdate:D-{i}:abc"
        envelope = Envelope.new(
            cron="clientDepositUpdate", run_id=run_id, key=key, payload={"deposit_id": f"D-{i}"}
        )
        yield Pending(key, envelope.to_message(f"D-{i}", label=f"entry {i + 1}"))


class RecordingQueue(SqliteQueue):
    """The real SQLite queue, noting each batch; refuses or raises on a chosen batch. It takes
    batches of SQS's size, so the producer's batching shows in small numbers."""

    max_batch_size = MAX_BATCH

    def __init__(self, path: Path, **kwargs: object) -> None:
        super().__init__(path, **kwargs)  # type: ignore[arg-type]
        self.batches: list[int] = []
        self.refuse_batch: int | None = None  # this batch's first message is refused
        self.raise_batch: int | None = None
        self.delay_s = 0.0
        self.delays: dict[int, float] = {}  # per batch number
        self.in_flight = 0
        self.max_in_flight = 0
        self._guard = threading.Lock()

    def send_batch(self, messages: Sequence[OutgoingMessage]) -> BatchResult:
        with self._guard:
            number = len(self.batches)
            self.batches.append(len(messages))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delays.get(number, self.delay_s))
            if number == self.raise_batch:
                raise QueueError("queue unreachable", code=ErrorCode.QUEUE_UNREACHABLE)
            if number == self.refuse_batch:
                result = super().send_batch(messages[1:])
                result.sent = [i + 1 for i in result.sent]
                result.failed.append(BatchFailure(0, "InternalError", "try later", False))
                return result
            return super().send_batch(messages)
        finally:
            with self._guard:
                self.in_flight -= 1


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[RecordingQueue]:
    q = RecordingQueue(tmp_path / "env.db")
    yield q
    q.close()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[SqliteState]:
    s = SqliteState(tmp_path / "env.db")
    yield s
    s.close()


def test_sends_every_message_in_batches_of_ten(queue: RecordingQueue) -> None:
    counts = Producer(queue).send(pending(95))
    assert (counts.enqueued, counts.duplicates, counts.failed) == (95, 0, 0)
    assert queue.batches == [10] * 9 + [5]
    assert queue.depth().visible == 95


def test_batches_are_as_large_as_the_queue_takes(tmp_path: Path) -> None:
    class Batches(SqliteQueue):
        sizes: list[int]

        def send_batch(self, messages: Sequence[OutgoingMessage]) -> BatchResult:
            self.sizes.append(len(messages))
            return super().send_batch(messages)

    queue = Batches(tmp_path / "env.db")
    queue.sizes = []
    counts = Producer(queue).send(pending(1_234))
    assert counts.enqueued == 1_234
    assert queue.sizes == [500, 500, 234]  # the SQLite queue's transactions, not SQS's 10
    queue.max_batch_size = 7
    Producer(queue).send(pending(20, start=5_000))
    assert queue.sizes[3:] == [7, 7, 6]
    queue.max_batch_size = 500
    # Paced, a batch goes out at once: SQS's 10 keep the bursts small.
    Producer(queue, pacer=Pacer(1_000_000)).send(pending(25, start=9_000))
    assert queue.sizes[6:] == [10, 10, 5]
    assert queue.depth().visible == 1_279
    queue.close()


def test_skips_keys_already_applied(queue: RecordingQueue, state: SqliteState) -> None:
    for item in list(pending(30))[::3]:
        state.record_applied(item.key, "earlier-run", NOW)
    counts = Producer(queue, state).send(pending(30))
    assert (counts.enqueued, counts.duplicates) == (20, 10)
    assert queue.depth().visible == 20


def test_resending_within_the_dedup_window_adds_nothing(queue: RecordingQueue) -> None:
    Producer(queue).send(pending(25))
    again = Producer(queue).send(pending(25, run_id="run-2"))
    assert (again.enqueued, again.duplicates) == (0, 25)
    assert queue.depth().visible == 25


def test_a_key_repeated_in_the_stream_is_sent_once(queue: RecordingQueue) -> None:
    items = [*pending(5), *pending(5)]
    counts = Producer(queue).send(items)
    assert (counts.enqueued, counts.duplicates) == (5, 5)
    assert queue.batches == [5]


def test_parallel_sends_bound_the_batches_in_flight_and_the_stream_read_ahead(
    queue: RecordingQueue,
) -> None:
    queue.delay_s = 0.01
    pulled = 0
    ahead: list[int] = []

    def stream() -> Iterator[Pending]:
        nonlocal pulled
        for item in pending(2_000):
            pulled += 1
            ahead.append(pulled - 10 * len(queue.batches))
            yield item

    counts = Producer(queue, max_in_flight=4, lookup_chunk=100).send(stream())
    assert counts.enqueued == 2_000
    assert queue.max_in_flight == 4
    # Never more than one lookup chunk plus the batches in flight read ahead of the sends.
    assert max(ahead) <= 100 + 4 * 10
    assert queue.depth().visible == 2_000


def test_parallel_sends_keep_a_groups_order_on_a_fifo_queue(queue: RecordingQueue) -> None:
    def update(n: int, deposit: str) -> Pending:
        key = f"clientDepositUpdate:{deposit}:v{n}"
        envelope = Envelope.new(
            cron="clientDepositUpdate", run_id="run-1", key=key, payload={"version": n}
        )
        return Pending(key, envelope.to_message(deposit, label=f"entry {n}"))

    # D-same is updated in the first batch and again in the second; the first batch is slow.
    items = [update(n, "D-same" if n in (0, 10) else f"D-{n}") for n in range(20)]
    queue.delays = {0: 0.2}
    counts = Producer(queue, max_in_flight=4).send(items)
    assert counts.enqueued == 20
    bodies = [json.loads(m.body) for m in queue.peek(20) if m.group_id == "D-same"]
    assert [body["payload"]["version"] for body in bodies] == [0, 10]
    (head,) = [m for m in queue.receive(10, 0) if m.group_id == "D-same"]
    assert json.loads(head.body)["payload"]["version"] == 0


def test_a_refused_message_stops_the_run_and_says_how_many_were_enqueued(
    queue: RecordingQueue,
) -> None:
    queue.refuse_batch = 3
    producer = Producer(queue)
    with pytest.raises(EnqueueFailed) as caught:
        producer.send(pending(100))
    assert caught.value.code == ErrorCode.ENQUEUE_FAILED
    assert "entry 31" in caught.value.message  # the refused message, by its label
    assert "39 messages were enqueued before the failure" in caught.value.message
    assert len(queue.batches) == 4  # nothing sent after the refusal
    assert (producer.counts.enqueued, producer.counts.failed) == (39, 1)
    assert queue.depth().visible == 39


def test_a_queue_error_in_parallel_waits_for_the_batches_in_flight(
    queue: RecordingQueue,
) -> None:
    queue.raise_batch = 5
    queue.delay_s = 0.005
    producer = Producer(queue, max_in_flight=4)
    with pytest.raises(EnqueueFailed) as caught:
        producer.send(pending(500))
    assert caught.value.code == ErrorCode.QUEUE_UNREACHABLE
    sent = queue.depth().visible
    assert producer.counts.enqueued == sent
    assert f"{sent} messages were enqueued before the failure" in caught.value.message
    assert len(queue.batches) < 50


def test_a_source_error_midway_is_raised_after_the_sent_batches_are_counted(
    queue: RecordingQueue,
) -> None:
    def stream() -> Iterator[Pending]:
        yield from pending(1_234)
        raise SourceError("connection lost after 1234 entries")

    producer = Producer(queue, max_in_flight=3, lookup_chunk=50)
    with pytest.raises(SourceError, match="connection lost"):
        producer.send(stream())
    assert producer.counts.enqueued == queue.depth().visible == 1_200


def test_pacer_spaces_sends_evenly() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(round(seconds, 6))
        now[0] += seconds

    pacer = Pacer(100, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        pacer.wait(10)
    assert sleeps == [0.1, 0.1, 0.1]
    assert now[0] == pytest.approx(0.3)


def test_rate_caps_the_send_rate(queue: RecordingQueue) -> None:
    started = time.monotonic()
    Producer(queue, pacer=Pacer(500)).send(pending(60))
    # 60 messages at 500/s: the last batch may start no earlier than 0.1 s in.
    assert time.monotonic() - started >= 0.1


@pytest.mark.parametrize("mock", [False, True])
@pytest.mark.parametrize(
    ("key", "entity_id", "payload"),
    [
        ("clientDepositUpdate:D-1:0a1b2c", "D-1", {"deposit_id": "D-1", "amount": "12.50"}),
        (
            'lspBillUpdateStatus:SI "7":ffee00:mock:run-9:41',
            'SI "7" / Zürich',
            {"z": None, "a": [1, 2.5, True], "nested": {"ü": "€ \\ \n \u2028"}, "b": False},
        ),
    ],
)
def test_message_writer_writes_exactly_what_the_envelope_writes(
    key: str, entity_id: str, payload: dict[str, object], mock: bool
) -> None:
    envelope = Envelope.new(
        cron="clientDepositUpdate", run_id="run-Ω-1", key=key, payload=payload, mock=mock, now=NOW
    )
    expected = envelope.to_message(entity_id, label="entry 1")
    writer = MessageWriter("clientDepositUpdate", "run-Ω-1", mock=mock)
    written = writer.message(
        key, entity_id, canonical_json(payload), label="entry 1", at=envelope.enqueued_at
    )
    assert written == expected
    assert Envelope.from_body(written.body) == envelope
