"""The queue contract: SQS semantics, stated once, run against both adapters.

SQLite runs on a real file with an injectable clock (visibility expiry without sleeping);
SQS runs on moto's in-process mock_aws with a FIFO queue whose RedrivePolicy names a FIFO
DLQ, and a standard queue where the queue type matters. Visibility tests on moto use 1 s
timeouts and real (short) sleeps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from support import FakeClock

from raasctl.codes import ErrorCode
from raasctl.errors import QueueError
from raasctl.queues.base import OutgoingMessage, Queue, ReceivedMessage
from raasctl.queues.sqlite import SqliteQueue
from raasctl.queues.sqs import SqsQueue

MAX_RECEIVES = 2


@dataclass
class Harness:
    kind: str
    queue: Queue  # FIFO, with a DLQ after MAX_RECEIVES receives
    standard: Callable[[], Queue]
    advance: Callable[[float], None]  # let time pass for visibility timeouts


def _sqs_queue(client: Any, name: str, attributes: dict[str, str]) -> str:
    url: str = client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url


@pytest.fixture(params=["sqlite", "sqs"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "sqlite":
        clock = FakeClock()
        queue = SqliteQueue(
            tmp_path / "env.db", fifo=True, max_receive_count=MAX_RECEIVES, clock=clock
        )
        standard = SqliteQueue(
            tmp_path / "standard.db", fifo=False, max_receive_count=MAX_RECEIVES, clock=clock
        )
        yield Harness("sqlite", queue, lambda: standard, clock.advance)
        queue.close()
        standard.close()
        return
    with mock_aws():
        client = boto3.client("sqs", region_name="us-east-1")
        fifo = {"FifoQueue": "true"}
        dlq_url = _sqs_queue(client, "raas-dlq.fifo", fifo)
        dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVES})
        url = _sqs_queue(client, "raas.fifo", {**fifo, "RedrivePolicy": policy})
        queue = SqsQueue(client, url)
        queue.redrive_wait_s = 0  # moto answers at once; an empty long poll would just wait

        def standard() -> Queue:
            return SqsQueue(client, _sqs_queue(client, "raas-standard", {}))

        yield Harness("sqs", queue, standard, lambda seconds: time.sleep(seconds))


def message(
    body: str, group: str = "G1", dedup: str | None = None, **attributes: str
) -> OutgoingMessage:
    return OutgoingMessage(
        body=body,
        group_id=group,
        dedup_id=dedup or f"dedup-{body}",
        attributes=attributes or {"cron": "clientDepositUpdate", "run_id": "run-1"},
        label=f"entry {body}",
    )


def drain(queue: Queue) -> list[ReceivedMessage]:
    received = []
    while batch := queue.receive(10, 0):
        received.extend(batch)
        queue.delete([m.receipt_handle for m in batch])
    return received


# ---------------------------------------------------------------- sending and receiving


def test_a_message_round_trips_with_its_attributes_and_group(harness: Harness) -> None:
    queue = harness.queue
    result = queue.send_batch([message("a", group="D-1", cron="clientBillPaidStatus", run_id="r9")])
    assert result.sent == [0] and not result.failed

    [got] = queue.receive(10, 0)
    assert got.body == "a"
    assert got.group_id == "D-1"
    assert got.receive_count == 1
    assert dict(got.attributes) == {"cron": "clientBillPaidStatus", "run_id": "r9"}
    depth = queue.depth()
    assert (depth.visible, depth.in_flight, depth.delayed) == (0, 1, 0)

    queue.delete([got.receipt_handle])
    assert queue.depth().empty
    assert queue.depth().dlq_visible == 0
    assert queue.receive(10, 0) == []


def test_receive_takes_at_most_the_number_asked_for(harness: Harness) -> None:
    harness.queue.send_batch([message(str(n), group=f"G{n}") for n in range(5)])
    assert len(harness.queue.receive(3, 0)) == 3
    assert len(harness.queue.receive(10, 0)) == 2
    with pytest.raises(ValueError):
        harness.queue.receive(harness.queue.max_receive + 1, 0)
    with pytest.raises(ValueError):
        harness.queue.receive(0, 0)


def test_depth_counts_visible_and_in_flight(harness: Harness) -> None:
    harness.queue.send_batch([message(str(n), group=f"G{n}") for n in range(3)])
    harness.queue.receive(1, 0)
    depth = harness.queue.depth()
    assert (depth.visible, depth.in_flight, depth.delayed) == (2, 1, 0)
    assert not depth.empty


# ---------------------------------------------------------------- visibility


def test_a_received_message_is_redelivered_after_its_visibility_timeout(
    harness: Harness,
) -> None:
    queue = harness.queue
    queue.send_batch([message("a")])
    [first] = queue.receive(1, 0, visibility_timeout_s=1)
    assert queue.receive(10, 0) == []  # invisible while in flight

    harness.advance(1.2)
    [again] = queue.receive(1, 0, visibility_timeout_s=1)
    assert again.message_id == first.message_id
    assert again.receive_count == 2
    assert again.receipt_handle != first.receipt_handle


def test_a_heartbeat_extends_visibility_and_zero_releases(harness: Harness) -> None:
    queue = harness.queue
    queue.send_batch([message("a")])
    [got] = queue.receive(1, 0, visibility_timeout_s=1)
    queue.change_visibility(got.receipt_handle, 30)
    harness.advance(1.2)
    assert queue.receive(10, 0) == []  # still held: the heartbeat moved the deadline

    queue.change_visibility(got.receipt_handle, 0)
    [released] = queue.receive(1, 0)
    assert released.message_id == got.message_id


def test_a_stale_receipt_handle_is_not_an_error(harness: Harness) -> None:
    queue = harness.queue
    queue.send_batch([message("a")])
    [got] = queue.receive(1, 0)
    queue.delete([got.receipt_handle])
    queue.delete([got.receipt_handle])  # deleted already
    queue.change_visibility(got.receipt_handle, 0)
    assert queue.depth().empty


# ---------------------------------------------------------------- receive count and DLQ


def test_a_message_goes_to_the_dlq_after_max_receive_count(harness: Harness) -> None:
    queue = harness.queue
    assert queue.max_receive_count() == MAX_RECEIVES
    queue.send_batch([message("poison")])
    for attempt in range(1, MAX_RECEIVES + 1):
        [got] = queue.receive(1, 0)
        assert got.receive_count == attempt
        queue.change_visibility(got.receipt_handle, 0)  # a failed attempt, retry at once

    assert queue.receive(10, 0) == []  # moved to the DLQ instead of a third delivery
    depth = queue.depth()
    assert depth.empty
    assert depth.dlq_visible == 1
    [dead] = queue.peek(10, dlq=True)
    assert dead.body == "poison"


def test_dead_letter_moves_the_message_with_its_reason(harness: Harness) -> None:
    queue = harness.queue
    queue.send_batch([message("bad")])
    [got] = queue.receive(1, 0)
    queue.dead_letter(got, "unknown envelope version 7")

    depth = queue.depth()
    assert depth.empty
    assert depth.dlq_visible == 1
    [dead] = queue.peek(10, dlq=True)
    assert dead.body == "bad"
    assert dead.attributes["reason"] == "unknown envelope version 7"
    assert dead.attributes["cron"] == "clientDepositUpdate"


def test_redrive_moves_every_dlq_message_back_in_order(harness: Harness) -> None:
    queue = harness.queue
    queue.send_batch([message("one"), message("two")])
    for _ in range(2):
        [got] = queue.receive(1, 0)
        queue.dead_letter(got, "sink said 400")
    assert queue.depth().dlq_visible == 2

    result = queue.redrive()
    assert result.moved == 2
    assert queue.depth().dlq_visible == 0

    back = drain(queue)
    assert [m.body for m in back] == ["one", "two"]
    assert all(m.receive_count == 1 for m in back)
    assert all("reason" not in m.attributes for m in back)
    assert all(m.attributes["cron"] == "clientDepositUpdate" for m in back)


# ---------------------------------------------------------------- deduplication


def test_identical_dedup_ids_are_delivered_once(harness: Harness) -> None:
    queue = harness.queue
    first = queue.send_batch([message("a", dedup="same"), message("b", dedup="same")])
    second = queue.send_batch([message("c", dedup="same")])
    # A duplicate is accepted (never a failure), and dropped.
    assert sorted(first.sent + first.duplicates) == [0, 1] and not first.failed
    assert sorted(second.sent + second.duplicates) == [0] and not second.failed

    assert [m.body for m in drain(queue)] == ["a"]


def test_different_dedup_ids_are_never_deduplicated_even_with_identical_bodies(
    harness: Harness,
) -> None:
    # The load-test bug: copies of one deposit with content-based dedup were dropped.
    queue = harness.queue
    copies = [message("same body", dedup=f"copy-{n}", group=f"G{n % 3}") for n in range(12)]
    result = queue.send_batch(copies[:10])
    result_rest = queue.send_batch(copies[10:])
    assert len(result.sent) == 10 and len(result_rest.sent) == 2

    assert [m.body for m in drain(queue)] == ["same body"] * 12


# ---------------------------------------------------------------- FIFO groups


def test_fifo_keeps_order_in_a_group_and_holds_the_group_while_in_flight(
    harness: Harness,
) -> None:
    queue = harness.queue
    queue.send_batch(
        [message("a1", "A"), message("b1", "B"), message("a2", "A"), message("a3", "A")]
    )
    first = queue.receive(10, 0)
    group_a = [m.body for m in first if m.group_id == "A"]
    assert group_a and group_a == ["a1", "a2", "a3"][: len(group_a)]
    # While a message of group A is in flight, no later message of A is delivered.
    assert not [m for m in queue.receive(10, 0) if m.group_id == "A"]

    queue.delete([m.receipt_handle for m in first])
    rest = drain(queue)
    order = [m.body for m in first + rest if m.group_id == "A"]
    assert order == ["a1", "a2", "a3"]


def test_fifo_groups_do_not_block_each_other(harness: Harness) -> None:
    queue = harness.queue
    queue.send_batch([message("a1", "A"), message("a2", "A"), message("b1", "B")])
    first = queue.receive(10, 0)
    assert {m.group_id for m in first} == {"A", "B"}


def test_a_standard_queue_ignores_groups_and_dedup_ids(harness: Harness) -> None:
    queue = harness.standard()
    assert not queue.fifo
    result = queue.send_batch(
        [
            OutgoingMessage("x", group_id="G", dedup_id="same"),
            OutgoingMessage("y", group_id="G", dedup_id="same"),
            OutgoingMessage("z"),
        ]
    )
    assert result.sent == [0, 1, 2]
    # Three messages of one "group" in flight at once: no FIFO rules on a standard queue.
    assert sorted(m.body for m in queue.receive(10, 0)) == ["x", "y", "z"]


# ---------------------------------------------------------------- batches and sizes


def test_a_batch_partly_refused_sends_the_rest(harness: Harness) -> None:
    queue = harness.queue
    batch = [
        message("ok-0", "G0"),
        OutgoingMessage("no group", dedup_id="d1"),
        message("ok-2", "G2"),
        OutgoingMessage("no dedup id", group_id="G3"),
    ]
    result = queue.send_batch(batch)
    assert result.sent == [0, 2]
    assert [f.index for f in result.failed] == [1, 3]
    assert all(f.sender_fault for f in result.failed)
    assert sorted(m.body for m in drain(queue)) == ["ok-0", "ok-2"]


# What both adapters refuse, with the same error: checked in raasctl/queues/base.py.
BAD_ENTRIES = [
    (OutgoingMessage("no group", dedup_id="d1"), "MissingParameter", "MessageGroupId"),
    (OutgoingMessage("empty group", group_id="", dedup_id="d2"), "MissingParameter", "Group"),
    (
        OutgoingMessage("long group", group_id="g" * 129, dedup_id="d3"),
        "InvalidParameterValue",
        "MessageGroupId must be 1-128",
    ),
    (
        OutgoingMessage("spaced group", group_id="a group", dedup_id="d4"),
        "InvalidParameterValue",
        "MessageGroupId must be 1-128",
    ),
    (
        OutgoingMessage("no dedup id", group_id="G3"),
        "InvalidParameterValue",
        "MessageDeduplicationId",
    ),
]


@pytest.mark.parametrize(("entry", "code", "text"), BAD_ENTRIES, ids=lambda v: str(v)[:30])
def test_both_adapters_refuse_a_bad_fifo_entry_alike(
    harness: Harness, entry: OutgoingMessage, code: str, text: str
) -> None:
    result = harness.queue.send_batch([message("ok"), entry])

    assert result.sent == [0]
    [failure] = result.failed
    assert (failure.index, failure.code, failure.sender_fault) == (1, code, True)
    assert text in failure.message
    assert [m.body for m in drain(harness.queue)] == ["ok"]


def test_a_dedup_id_beyond_the_sqs_alphabet_or_length_deduplicates_alike(
    harness: Harness,
) -> None:
    long_id = "clientDepositUpdate:" + "x" * 300
    result = harness.queue.send_batch(
        [
            message("a", group="G1", dedup=long_id),
            message("b", group="G2", dedup=long_id),
            message("c", group="G3", dedup="has space"),
            message("d", group="G4", dedup="has space"),
        ]
    )

    assert not result.failed
    assert sorted(m.body for m in drain(harness.queue)) == ["a", "c"]


@pytest.mark.parametrize(
    ("args", "text"),
    [
        ((0, 0), "max_messages must be 1-{max}, not 0"),
        (("max+1", 0), "max_messages must be 1-{max}, not {max+1}"),
        ((1, -1), "wait_time_s must be 0 or more seconds, not -1"),
        ((1, float("nan")), "wait_time_s must be 0 or more seconds, not nan"),
        ((1, 0, -1), "visibility timeout must be 0-43200 s, not -1"),
        ((1, 0, 43201), "visibility timeout must be 0-43200 s, not 43201"),
    ],
)
def test_both_adapters_refuse_bad_receive_arguments_alike(
    harness: Harness, args: tuple[Any, ...], text: str
) -> None:
    harness.queue.send_batch([message("kept")])
    most = harness.queue.max_receive  # SQS's 10; the embedded queue's 100
    args = tuple(most + 1 if arg == "max+1" else arg for arg in args)

    with pytest.raises(ValueError) as caught:
        harness.queue.receive(*args)

    assert str(caught.value) == text.replace("{max+1}", str(most + 1)).replace("{max}", str(most))
    assert harness.queue.depth().visible == 1  # nothing was received


def test_both_adapters_refuse_a_visibility_change_out_of_range_alike(harness: Harness) -> None:
    harness.queue.send_batch([message("a")])
    [got] = harness.queue.receive(1, 0)

    with pytest.raises(ValueError) as caught:
        harness.queue.change_visibility(got.receipt_handle, 43201)

    assert str(caught.value) == "visibility timeout must be 0-43200 s, not 43201"


def test_a_body_over_the_size_limit_is_refused_before_anything_is_sent(
    harness: Harness,
) -> None:
    queue = harness.queue
    too_big = OutgoingMessage(
        "x" * (queue.max_message_bytes() + 1),
        group_id="G",
        dedup_id="big",
        label="entry 7 (clientDepositUpdate:D-7)",
    )
    with pytest.raises(QueueError) as caught:
        queue.send_batch([message("small"), too_big])
    assert caught.value.code == ErrorCode.MESSAGE_TOO_LARGE
    assert "entry 7 (clientDepositUpdate:D-7)" in str(caught.value)
    assert queue.depth().visible == 0  # not even the small one


# ---------------------------------------------------------------- operating


def test_peek_shows_messages_without_taking_them(harness: Harness) -> None:
    queue = harness.queue
    queue.send_batch([message("a", "A"), message("b", "B")])
    # (On SQS a peek counts as a receive: peeking twice here would reach MAX_RECEIVES.)
    assert sorted(m.body for m in queue.peek(10)) == ["a", "b"]
    assert sorted(m.body for m in drain(queue)) == ["a", "b"]


def test_peek_returns_at_most_the_limit(harness: Harness) -> None:
    harness.queue.send_batch([message(str(n), group=f"G{n}") for n in range(5)])
    assert len(harness.queue.peek(3)) == 3
    assert harness.queue.depth().visible == 5


def test_purge_empties_the_queue_and_the_dlq(harness: Harness) -> None:
    queue = harness.queue
    queue.send_batch([message(str(n), group=f"G{n}") for n in range(4)])
    [got] = queue.receive(1, 0)
    queue.dead_letter(got, "permanent")

    queue.purge()
    depth = queue.depth()
    assert depth.empty and depth.dlq_visible == 1
    assert queue.receive(10, 0) == []

    queue.purge(dlq=True)
    assert queue.depth().dlq_visible == 0
