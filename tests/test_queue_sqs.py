"""SQS adapter specifics, on moto: lazy settings, batch limits, per-entry retries, error
mapping, dead-lettering to a FIFO DLQ and redrive on both of moto's "not implemented" shapes.

Requests are observed with botocore's own event hooks; a fault SQS would produce but moto
cannot (a transient per-entry failure, throttling, AccessDenied) is injected the same way,
by answering `before-call` for that one operation.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError
from moto import mock_aws
from support import closed_port

from raasctl.codes import ErrorCode
from raasctl.errors import QueueError
from raasctl.queues.base import OutgoingMessage
from raasctl.queues.base import queue_dedup_id as safe_dedup_id
from raasctl.queues.sqs import SqsQueue, queue_error


@dataclass
class Calls:
    """Every SQS API call a client makes: operation name, parameters and thread."""

    made: list[tuple[str, dict[str, Any], int]] = field(default_factory=list)

    def names(self) -> list[str]:
        return [name for name, _, _ in self.made]

    def params(self, name: str) -> list[dict[str, Any]]:
        return [params for op, params, _ in self.made if op == name]

    def count(self, name: str) -> int:
        return self.names().count(name)


def record_calls(client: Any) -> Calls:
    calls = Calls()
    lock = threading.Lock()

    def on_call(params: dict[str, Any], model: Any, **_: Any) -> None:
        with lock:
            calls.made.append((model.name, json.loads(json.dumps(params)), threading.get_ident()))

    client.meta.events.register("provide-client-params.sqs", on_call)
    return calls


def answer(
    client: Any,
    operation: str,
    respond: Callable[[dict[str, Any]], tuple[int, dict[str, Any]] | None],
) -> None:
    """Answer `operation` with respond(api_params) -> (status, parsed); None lets it through."""
    pending: dict[int, dict[str, Any]] = {}

    def remember(params: dict[str, Any], **_: Any) -> None:
        pending[threading.get_ident()] = dict(params)

    def short_circuit(**_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        outcome = respond(pending.pop(threading.get_ident()))
        if outcome is None:
            return None
        status, parsed = outcome
        parsed.setdefault("ResponseMetadata", {"HTTPStatusCode": status})
        return AWSResponse("https://sqs.invalid/", status, {}, None), parsed

    client.meta.events.register(f"provide-client-params.sqs.{operation}", remember)
    client.meta.events.register(f"before-call.sqs.{operation}", short_circuit)


def error_response(code: str, message: str, status: int = 400) -> tuple[int, dict[str, Any]]:
    return status, {"Error": {"Code": code, "Message": message}}


@dataclass
class Env:
    client: Any
    fifo_url: str
    dlq_url: str
    standard_url: str

    def create(self, name: str, **attributes: str) -> str:
        url: str = self.client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        return url

    def arn(self, url: str) -> str:
        attributes = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        arn: str = attributes["Attributes"]["QueueArn"]
        return arn


def make_env(client: Any) -> Env:
    dlq = client.create_queue(QueueName="raas-dlq.fifo", Attributes={"FifoQueue": "true"})
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq["QueueUrl"], AttributeNames=["QueueArn"])
    policy = {"deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"], "maxReceiveCount": 4}
    fifo = client.create_queue(
        QueueName="raas.fifo",
        Attributes={"FifoQueue": "true", "RedrivePolicy": json.dumps(policy)},
    )
    standard = client.create_queue(QueueName="raas-standard")
    return Env(client, fifo["QueueUrl"], dlq["QueueUrl"], standard["QueueUrl"])


@pytest.fixture
def env() -> Iterator[Env]:
    with mock_aws():
        yield make_env(boto3.client("sqs", region_name="us-east-1"))


def fifo_message(body: str, group: str = "G", dedup: str | None = None) -> OutgoingMessage:
    return OutgoingMessage(
        body=body,
        group_id=group,
        dedup_id=dedup or f"d-{body}",
        attributes={"cron": "clientDepositUpdate", "run_id": "run-1"},
        label=f"entry {body}",
    )


def drain(queue: SqsQueue) -> list[str]:
    bodies: list[str] = []
    while batch := queue.receive(10, 0):
        bodies.extend(m.body for m in batch)
        queue.delete([m.receipt_handle for m in batch])
    return bodies


# ---------------------------------------------------------------- settings


def test_settings_are_read_once_and_only_when_needed(env: Env) -> None:
    calls = record_calls(env.client)
    queue = SqsQueue(env.client, env.fifo_url)
    assert calls.made == []  # constructing calls nothing

    queue.send_batch([fifo_message("a")])
    queue.send_batch([fifo_message("b")])
    assert queue.max_receive_count() == 4
    assert queue.max_message_bytes() == 1024 * 1024
    assert queue.dlq_url() == env.dlq_url  # from the RedrivePolicy
    assert queue.dlq_url() == env.dlq_url
    assert queue.max_receive_count() == 4
    # Once each, naming only what it needs: moto rebuilds every attribute for each name.
    asked = [call["AttributeNames"] for call in calls.params("GetQueueAttributes")]
    assert sorted(asked) == [["MaximumMessageSize"], ["RedrivePolicy"]]
    assert calls.count("GetQueueUrl") == 1
    assert calls.params("GetQueueUrl")[0]["QueueName"] == "raas-dlq.fifo"


def test_a_configured_dlq_url_is_used_as_given(env: Env) -> None:
    other = env.create("other-dlq.fifo", FifoQueue="true")
    calls = record_calls(env.client)
    queue = SqsQueue(env.client, env.fifo_url, dlq_url=other)
    assert queue.dlq_url() == other
    assert calls.count("GetQueueUrl") == 0


def test_a_queue_without_a_dlq_has_no_receive_limit(env: Env) -> None:
    queue = SqsQueue(env.client, env.standard_url)
    assert queue.max_receive_count() is None
    assert queue.dlq_url() is None
    assert queue.depth().dlq_visible is None
    queue.send_batch([OutgoingMessage("x")])
    [got] = queue.receive(1, 0)
    with pytest.raises(QueueError, match="has no DLQ"):
        queue.dead_letter(got, "bad")


# ---------------------------------------------------------------- what is sent


def test_group_and_dedup_ids_go_only_to_fifo_queues(env: Env) -> None:
    calls = record_calls(env.client)
    SqsQueue(env.client, env.fifo_url).send_batch([fifo_message("a", group="D-1", dedup="k1")])
    SqsQueue(env.client, env.standard_url).send_batch([fifo_message("b", group="D-1")])
    fifo_entry, standard_entry = (p["Entries"][0] for p in calls.params("SendMessageBatch"))
    assert fifo_entry["MessageGroupId"] == "D-1"
    assert fifo_entry["MessageDeduplicationId"] == "k1"
    assert "MessageGroupId" not in standard_entry
    assert "MessageDeduplicationId" not in standard_entry
    assert standard_entry["MessageAttributes"]["cron"] == {
        "DataType": "String",
        "StringValue": "clientDepositUpdate",
    }


def test_dedup_ids_beyond_sqs_limits_are_hashed_consistently(env: Env) -> None:
    long_id = "clientDepositUpdate:" + "x" * 300
    assert len(safe_dedup_id(long_id)) <= 128
    assert safe_dedup_id(long_id) == safe_dedup_id(long_id)
    assert safe_dedup_id("has space") != "has space"
    assert safe_dedup_id("ok:id-1") == "ok:id-1"

    calls = record_calls(env.client)
    queue = SqsQueue(env.client, env.fifo_url)
    queue.send_batch([fifo_message("a", dedup=long_id), fifo_message("b", dedup=long_id)])
    sent_ids = {e["MessageDeduplicationId"] for e in calls.params("SendMessageBatch")[0]["Entries"]}
    assert sent_ids == {safe_dedup_id(long_id)}
    assert drain(queue) == ["a"]


def test_batches_keep_within_ten_entries_and_the_size_limit(env: Env) -> None:
    small_limit = env.create("small.fifo", FifoQueue="true", MaximumMessageSize="2048")
    calls = record_calls(env.client)
    queue = SqsQueue(env.client, small_limit)
    messages = [fifo_message(f"{n:03d}" + "x" * 900, group=f"G{n}") for n in range(6)]
    result = queue.send_batch(messages)
    assert result.sent == list(range(6))
    requests = calls.params("SendMessageBatch")
    assert len(requests) == 3  # two ~1 KB messages per 2 KB request
    assert all(sum(len(e["MessageBody"]) for e in r["Entries"]) <= 2048 for r in requests)

    calls.made.clear()
    result = SqsQueue(env.client, env.standard_url).send_batch(
        [OutgoingMessage(str(n)) for n in range(25)]
    )
    assert result.sent == list(range(25))
    assert [len(r["Entries"]) for r in calls.params("SendMessageBatch")] == [10, 10, 5]


def test_a_round_trip_costs_the_requests_of_a_direct_batched_loop(env: Env) -> None:
    # What benchmarks/queue_throughput.py times against a hand-written batched loop: the
    # adapter may add its one settings lookup, nothing per call.
    calls = record_calls(env.client)
    queue = SqsQueue(env.client, env.fifo_url)
    for start in range(0, 100, 50):
        result = queue.send_batch(
            [fifo_message(str(n), group=f"G{n}") for n in range(start, start + 50)]
        )
        assert len(result.sent) == 50
    assert sorted(drain(queue), key=int) == [str(n) for n in range(100)]
    assert collections.Counter(calls.names()) == {
        "GetQueueAttributes": 1,
        "SendMessageBatch": 10,
        "ReceiveMessage": 11,  # the last one comes back empty
        "DeleteMessageBatch": 10,
    }


def test_a_body_over_the_queues_own_limit_is_refused_without_a_call(env: Env) -> None:
    small_limit = env.create("small.fifo", FifoQueue="true", MaximumMessageSize="1024")
    calls = record_calls(env.client)
    queue = SqsQueue(env.client, small_limit)
    with pytest.raises(QueueError) as caught:
        queue.send_batch([fifo_message("ok"), fifo_message("y" * 1025)])
    assert caught.value.code == ErrorCode.MESSAGE_TOO_LARGE
    assert str(caught.value).startswith("entry " + "y" * 10)
    assert "1024" in str(caught.value)
    assert calls.count("SendMessageBatch") == 0


def test_disjoint_fifo_batches_go_in_parallel_and_shared_groups_in_order(env: Env) -> None:
    calls = record_calls(env.client)
    queue = SqsQueue(env.client, env.fifo_url)
    queue.send_batch([fifo_message(f"p{n}", group=f"G{n}") for n in range(60)])
    threads = {thread for name, _, thread in calls.made if name == "SendMessageBatch"}
    assert calls.count("SendMessageBatch") == 6
    assert len(threads) > 1

    calls.made.clear()
    ordered = [fifo_message(f"o{n:02d}", group="one") for n in range(30)]
    queue.send_batch(ordered)
    threads = {thread for name, _, thread in calls.made if name == "SendMessageBatch"}
    assert threads == {threading.get_ident()}  # one group over three requests: in sequence
    received = [b for b in drain(queue) if b.startswith("o")]
    assert received == [m.body for m in ordered]


# ---------------------------------------------------------------- partial failure and retries


def fail_entries(client: Any, ids: set[str], *, sender_fault: bool, times: int) -> list[list[str]]:
    """SendMessageBatch: the first `times` calls fail entries `ids` and send the rest."""
    raw = boto3.client("sqs", region_name="us-east-1")  # no hooks: does the real sending
    seen: list[list[str]] = []

    def respond(params: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        seen.append([e["Id"] for e in params["Entries"]])
        if len(seen) > times:
            return None
        keep = [e for e in params["Entries"] if e["Id"] not in ids]
        response = raw.send_message_batch(QueueUrl=params["QueueUrl"], Entries=keep) if keep else {}
        failed = [
            {"Id": e["Id"], "SenderFault": sender_fault, "Code": "InternalError", "Message": "x"}
            for e in params["Entries"]
            if e["Id"] in ids
        ]
        return 200, {"Successful": response.get("Successful", []), "Failed": failed}

    answer(client, "SendMessageBatch", respond)
    return seen


def test_only_the_entries_that_failed_are_retried_with_backoff(env: Env) -> None:
    seen = fail_entries(env.client, {"1", "3"}, sender_fault=False, times=1)
    queue = SqsQueue(env.client, env.fifo_url)
    sleeps: list[float] = []
    queue.sleep = sleeps.append
    result = queue.send_batch([fifo_message(str(n), group=f"G{n}") for n in range(5)])

    assert seen == [["0", "1", "2", "3", "4"], ["1", "3"]]
    assert sleeps == [0.1]
    assert result.sent == [0, 1, 2, 3, 4] and not result.failed
    assert sorted(drain(queue)) == ["0", "1", "2", "3", "4"]  # each exactly once


def test_a_sender_fault_is_never_retried(env: Env) -> None:
    seen = fail_entries(env.client, {"2"}, sender_fault=True, times=1)
    queue = SqsQueue(env.client, env.fifo_url)
    queue.sleep = lambda _: None
    result = queue.send_batch([fifo_message(str(n), group=f"G{n}") for n in range(4)])
    assert len(seen) == 1
    assert result.sent == [0, 1, 3]
    [failure] = result.failed
    assert (failure.index, failure.sender_fault, failure.code) == (2, True, "InternalError")


def test_an_entry_that_keeps_failing_is_reported_after_the_last_attempt(env: Env) -> None:
    seen = fail_entries(env.client, {"0"}, sender_fault=False, times=99)
    queue = SqsQueue(env.client, env.fifo_url)
    sleeps: list[float] = []
    queue.sleep = sleeps.append
    result = queue.send_batch([fifo_message("stuck"), fifo_message("fine", group="H")])
    assert len(seen) == queue.retry_attempts
    assert sleeps == [0.1, 0.2, 0.4, 0.8]
    assert result.sent == [1]
    assert [(f.index, f.sender_fault) for f in result.failed] == [(0, False)]


# ---------------------------------------------------------------- errors


def test_a_queue_that_does_not_exist(env: Env) -> None:
    missing = env.fifo_url.replace("raas.fifo", "nope.fifo")
    with pytest.raises(QueueError) as caught:
        SqsQueue(env.client, missing).send_batch([fifo_message("a")])
    assert caught.value.code == ErrorCode.QUEUE_NOT_FOUND
    assert missing in str(caught.value)


def test_an_unreachable_endpoint_is_one_clear_line() -> None:
    port = closed_port()
    client = boto3.client(
        "sqs",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{port}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    url = f"http://127.0.0.1:{port}/123456789012/raas.fifo"
    with pytest.raises(QueueError) as caught:
        SqsQueue(client, url).depth()
    assert caught.value.code == ErrorCode.QUEUE_UNREACHABLE
    assert "\n" not in str(caught.value)
    assert "sqs:GetQueueAttributes" in str(caught.value) and url in str(caught.value)


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("AccessDenied", 403, ErrorCode.ACCESS_DENIED),
        ("403", 403, ErrorCode.ACCESS_DENIED),  # moto under IAM auth answers in XML
        ("ThrottlingException", 400, ErrorCode.QUEUE_THROTTLED),
        ("AWS.SimpleQueueService.RequestThrottled", 400, ErrorCode.QUEUE_THROTTLED),
        ("AWS.SimpleQueueService.NonExistentQueue", 400, ErrorCode.QUEUE_NOT_FOUND),
        ("QueueDoesNotExist", 400, ErrorCode.QUEUE_NOT_FOUND),
        ("KmsInvalidState", 400, ErrorCode.QUEUE_FAILED),
    ],
)
def test_error_codes_map_to_queue_errors(code: str, status: int, expected: ErrorCode) -> None:
    exc = ClientError(
        {
            "Error": {"Code": code, "Message": "line one\nline two"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "SendMessageBatch",
    )
    error = queue_error(exc, action="sqs:SendMessage", queue="https://q.example/raas.fifo")
    assert error.code == expected
    assert error.exit_code == 1
    assert "\n" not in str(error)
    assert "https://q.example/raas.fifo" in str(error)
    if expected == ErrorCode.ACCESS_DENIED:
        assert "sqs:SendMessage" in str(error)
    assert (
        queue_error(EndpointConnectionError(endpoint_url="http://x"), action="a", queue="q").code
        == ErrorCode.QUEUE_UNREACHABLE
    )


def test_access_denied_names_the_queue_and_the_action(env: Env) -> None:
    answer(env.client, "ReceiveMessage", lambda _: error_response("AccessDenied", "no", 403))
    with pytest.raises(QueueError) as caught:
        SqsQueue(env.client, env.fifo_url).receive(10, 0)
    assert caught.value.code == ErrorCode.ACCESS_DENIED
    assert (
        str(caught.value)
        == f"access denied: sqs:ReceiveMessage on {env.fifo_url} (AccessDenied: no)"
    )


def test_throttling_is_its_own_error(env: Env) -> None:
    answer(
        env.client,
        "GetQueueAttributes",
        lambda _: error_response("ThrottlingException", "slow down"),
    )
    with pytest.raises(QueueError) as caught:
        SqsQueue(env.client, env.fifo_url).depth()
    assert caught.value.code == ErrorCode.QUEUE_THROTTLED


def refused(params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A DeleteMessageBatch answer refusing every entry (AccessDenied, the sender's fault)."""
    failed = [
        {"Id": e["Id"], "SenderFault": True, "Code": "AccessDenied", "Message": "kms"}
        for e in params["Entries"]
    ]
    return 200, {"Successful": [], "Failed": failed}


def test_a_delete_failure_other_than_a_stale_handle_is_an_error(env: Env) -> None:
    queue = SqsQueue(env.client, env.fifo_url)
    queue.sleep = lambda _: None
    queue.send_batch([fifo_message("a")])
    [got] = queue.receive(1, 0)
    answer(env.client, "DeleteMessageBatch", refused)
    with pytest.raises(QueueError, match="AccessDenied"):
        queue.delete([got.receipt_handle])


def received_all(queue: SqsQueue, count: int) -> list[str]:
    handles: list[str] = []
    while len(handles) < count:
        handles += [m.receipt_handle for m in queue.receive(10, 0)]
    return handles


def test_many_handles_are_deleted_in_requests_sent_at_once(env: Env) -> None:
    # A settler that fell behind deletes many at once: one request after another, their
    # round trips would cap the rate of deletes.
    queue = SqsQueue(env.client, env.standard_url)
    queue.send_batch([OutgoingMessage(body=f"m{n}") for n in range(35)])
    handles = received_all(queue, 35)
    calls = record_calls(env.client)
    # The first two requests wait for each other: one after the other, they would never meet.
    together = threading.Barrier(2, timeout=10)
    lock, arrived, met = threading.Lock(), [0], []

    def meet(**_: Any) -> None:
        with lock:
            arrived[0] += 1
            waits = arrived[0] <= 2
        if waits:
            met.append(together.wait())

    env.client.meta.events.register("before-call.sqs.DeleteMessageBatch", meet)

    queue.delete(handles)

    assert sorted(met) == [0, 1]
    deletes = calls.params("DeleteMessageBatch")
    assert sorted(len(params["Entries"]) for params in deletes) == [5, 10, 10, 10]
    assert queue.depth().empty
    queue.close()


def test_one_failed_request_of_those_sent_at_once_fails_the_delete_once_all_are_back(
    env: Env,
) -> None:
    queue = SqsQueue(env.client, env.standard_url)
    queue.send_batch([OutgoingMessage(body=f"m{n}") for n in range(30)])
    handles = received_all(queue, 30)
    refusing = set(handles[10:20])
    answer(
        env.client,
        "DeleteMessageBatch",
        lambda p: refused(p) if refusing & {e["ReceiptHandle"] for e in p["Entries"]} else None,
    )

    with pytest.raises(QueueError, match="failed for 10 message"):
        queue.delete(handles)

    depth = queue.depth()  # the other two requests' messages are gone
    assert (depth.visible, depth.in_flight) == (0, 10)
    queue.close()


def test_stale_receipt_handles_are_ignored(env: Env) -> None:
    queue = SqsQueue(env.client, env.fifo_url)
    queue.change_visibility("not-a-receipt-handle", 10)
    queue.delete(["not-a-receipt-handle"])


# ---------------------------------------------------------------- receiving


def test_receive_asks_for_the_receive_count_and_caps_the_long_poll(env: Env) -> None:
    calls = record_calls(env.client)
    queue = SqsQueue(env.client, env.fifo_url, visibility_timeout_s=45)
    queue.send_batch([fifo_message("a")])
    [got] = queue.receive(5, 30)  # a message is there: the long poll returns at once
    assert got.receive_count == 1
    [params] = calls.params("ReceiveMessage")
    assert params["WaitTimeSeconds"] == 20
    assert params["VisibilityTimeout"] == 45
    assert params["MaxNumberOfMessages"] == 5
    assert "ApproximateReceiveCount" in params["MessageSystemAttributeNames"]


# ---------------------------------------------------------------- DLQ


def test_dead_letter_to_a_fifo_dlq_keeps_group_and_dedups_on_the_message_id(env: Env) -> None:
    calls = record_calls(env.client)
    queue = SqsQueue(env.client, env.fifo_url)
    queue.send_batch([fifo_message("bad", group="D-9")])
    [got] = queue.receive(1, 0)
    queue.dead_letter(got, "unknown cron\nnope")
    queue.dead_letter(got, "unknown cron")  # e.g. a retry of the worker's own step

    [params, _] = calls.params("SendMessage")
    assert params["QueueUrl"] == env.dlq_url
    assert params["MessageGroupId"] == "D-9"
    assert params["MessageDeduplicationId"] == got.message_id
    assert params["MessageAttributes"]["reason"]["StringValue"] == "unknown cron nope"
    assert params["MessageAttributes"]["run_id"]["StringValue"] == "run-1"
    assert queue.depth().dlq_visible == 1  # the second send was a duplicate
    assert queue.depth().empty


def test_redrive_starts_a_move_task_where_sqs_has_one(env: Env) -> None:
    queue = SqsQueue(env.client, env.fifo_url)
    queue.send_batch([fifo_message("a")])
    [got] = queue.receive(1, 0)
    queue.dead_letter(got, "x")
    calls = record_calls(env.client)
    answer(env.client, "StartMessageMoveTask", lambda _: (200, {"TaskHandle": "task-1"}))

    result = queue.redrive()
    assert (result.moved, result.task_handle) == (None, "task-1")
    [params] = calls.params("StartMessageMoveTask")
    assert params == {"SourceArn": env.arn(env.dlq_url), "DestinationArn": env.arn(env.fifo_url)}
    assert queue.depth().dlq_visible == 1  # the service moves it, asynchronously


def test_redrive_does_not_fall_back_when_access_is_denied(env: Env) -> None:
    queue = SqsQueue(env.client, env.fifo_url)
    answer(env.client, "StartMessageMoveTask", lambda _: error_response("AccessDenied", "no", 403))
    with pytest.raises(QueueError) as caught:
        queue.redrive()
    assert caught.value.code == ErrorCode.ACCESS_DENIED
    assert "sqs:StartMessageMoveTask" in str(caught.value)


def dead_letter_three(queue: SqsQueue) -> None:
    queue.send_batch([fifo_message(f"m{n}", group="G") for n in range(3)])
    for _ in range(3):
        [got] = queue.receive(1, 0)
        queue.dead_letter(got, "boom")


def test_redrive_falls_back_in_process(env: Env) -> None:
    # mock_aws raises NotImplementedError for StartMessageMoveTask.
    queue = SqsQueue(env.client, env.fifo_url)
    queue.redrive_wait_s = 0
    dead_letter_three(queue)
    assert queue.redrive().moved == 3
    assert drain(queue) == ["m0", "m1", "m2"]
    assert queue.depth().dlq_visible == 0


def test_redrive_falls_back_over_the_moto_server(moto_url: str) -> None:
    # Over HTTP, moto's missing StartMessageMoveTask ends as ClientError "500" after retries.
    client = boto3.client(
        "sqs",
        region_name="us-east-1",
        endpoint_url=moto_url,
        config=Config(retries={"mode": "standard", "max_attempts": 2}),
    )
    env = make_env(client)
    calls = record_calls(client)
    queue = SqsQueue(client, env.fifo_url)
    queue.redrive_wait_s = 0
    dead_letter_three(queue)

    started = time.monotonic()
    assert queue.redrive().moved == 3
    assert time.monotonic() - started < 10
    assert calls.count("StartMessageMoveTask") == 1
    assert drain(queue) == ["m0", "m1", "m2"]
