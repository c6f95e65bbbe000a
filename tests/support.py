"""Test doubles and waiting helpers shared by several test modules."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from typing import Any, TypeVar

T = TypeVar("T")


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class QuietHTTPServer(ThreadingHTTPServer):
    """A test server whose clients may be SIGKILLed mid-connection (the point of the process
    tests): a connection they reset is expected, not printed as a traceback."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # reset, aborted, broken pipe
            return
        super().handle_error(request, client_address)


class FakeClock:
    """A clock that moves only when told: `advance`, or `sleep` (recorded in `slept`)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def wait_until(condition: Callable[[], T], timeout_s: float = 10.0, every_s: float = 0.01) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail the test
    after `timeout_s`. Waiting on a condition, never on a guess of how long something takes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {condition}")
        time.sleep(every_s)


_DYNAMODB_ONE_AT_A_TIME = threading.Lock()


def patch_moto() -> None:
    """Five artefacts of moto's, none of them the behaviour of the services (once per
    process): DynamoDB served one request at a time, transactions that roll back only what they
    touch, SQS receives whose cost does not grow with the queue, SQS receives that cannot
    hand out one message twice, and SQS deletes that stay deleted (below).

    moto's DynamoDB is not safe under concurrent requests: a TransactWriteItems copies the
    whole table while other requests change it, and fails with a 500 ("dictionary changed size
    during iteration"), more often the busier the machine. Real DynamoDB has no such failure;
    tests that drain with many threads serve moto's DynamoDB one request at a time (once per
    process)."""
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action
    if getattr(original, "serialised", False):
        return

    def one_at_a_time(self: Any) -> Any:
        with _DYNAMODB_ONE_AT_A_TIME:
            return original(self)

    one_at_a_time.serialised = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = one_at_a_time  # type: ignore[method-assign]
    _roll_back_touched_items_only()
    _retention_from_the_queue()
    _one_receive_at_a_time()
    _deletes_that_stay_deleted()


# Taken by every pass over an SQS queue's messages that changes them: receives and deletes.
_SQS_QUEUE_LOCK = threading.RLock()


def _deletes_that_stay_deleted() -> None:
    """moto's SQS deletes a message by building the queue's list of messages anew, without a
    lock. Two deletes at once (a worker sends several DeleteMessageBatch requests at once)
    can each start from the list as it was before the other, and the list written last
    brings the other's message back, in flight, to be received again once its visibility
    runs out. SQS loses no delete. Each delete runs in one pass under the lock receives take.
    """
    from moto.sqs import models
    from moto.sqs.exceptions import ReceiptHandleIsInvalid

    def delete_message(self: Any, receipt_handle: str) -> None:
        with _SQS_QUEUE_LOCK:
            if receipt_handle in self.deleted_messages:
                return  # deleted already: SQS takes a repeated delete
            messages = self._messages
            index = next(
                (n for n, m in enumerate(messages) if m.had_receipt_handle(receipt_handle)), None
            )
            if index is None:
                raise ReceiptHandleIsInvalid()
            message = messages[index]
            self.pending_messages.discard(message)
            self.deleted_messages.update(message.all_receipt_handles)
            # A new list, as moto builds one: a pass already iterating keeps the old.
            self._messages = messages[:index] + messages[index + 1 :]

    models.Queue.delete_message = delete_message  # type: ignore[method-assign]


def _one_receive_at_a_time() -> None:
    """moto's SQS picks a receive's messages and marks them received without a lock, and
    reads a FIFO queue's groups in flight once before it long-polls, so two receives at once
    (a worker keeps two on their way) can both take one message, or two of one group. SQS
    does neither. Each pass over the queue runs under one lock, the long poll's waits outside
    it."""
    from moto.core.utils import unix_time
    from moto.sqs import models

    original = models.SQSBackend.receive_message

    def receive_message(
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> Any:
        polling_end = unix_time() + wait_seconds_timeout
        while True:
            with _SQS_QUEUE_LOCK:
                result = original(
                    self, queue_name, count, 0, visibility_timeout, message_attribute_names
                )
            if result or not wait_seconds_timeout:
                return result
            # As moto waits: until a message is sent or for a second, and no pass after the
            # wait that ends the long poll.
            self.get_queue(queue_name).wait_for_messages(1)
            if unix_time() > polling_end:
                return []

    models.SQSBackend.receive_message = receive_message  # type: ignore[method-assign]


def _retention_from_the_queue() -> None:
    """moto's SQS checks each received message's retention by building every attribute of
    the queue, its approximate counts included, which walks the whole queue: O(depth) per
    message received. The check reads the retention period from the queue instead, as
    SQS's cost does not grow with the queue."""
    from moto.core.utils import unix_time
    from moto.sqs import models

    def is_message_valid_based_on_retention_period(
        self: Any, queue_name: str, message: Any
    ) -> bool:
        retention_s = self.get_queue(queue_name).message_retention_period
        return bool(retention_s + message.sent_timestamp / 1000 > unix_time())

    models.SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        is_message_valid_based_on_retention_period
    )


def _roll_back_touched_items_only() -> None:
    """moto's TransactWriteItems deep-copies the whole table once per item in the transaction,
    to roll back on failure: O(items x table), up to a second a transaction once a drain has
    written a few thousand items, where real DynamoDB's cost is O(items). Instead, the items the
    transaction names are saved and put back when it fails: the same outcome and the same
    rollback, at a cost that does not grow with the table."""
    import copy
    import types

    from moto.dynamodb import models
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    original = models.DynamoDBBackend.transact_write_items

    def deepcopy(value: Any, memo: Any = None) -> Any:
        # moto's own rollback then puts the same table back: a no-op (the items are below)
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    models.copy = types.SimpleNamespace(deepcopy=deepcopy)  # type: ignore[attr-defined]

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = []
        for item in transact_items:
            op = next(iter(item.values()))
            table = self.tables.get(op.get("TableName"))
            if table is None:
                continue
            key = op.get("Key") or op.get("Item") or {}
            names = [table.hash_key_attr, *([table.range_key_attr] if table.range_key_attr else [])]
            if any(name not in key for name in names):
                continue  # moto refuses it before writing anything
            hash_value = DynamoType(key[table.hash_key_attr])
            range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
            previous = table.get_item(hash_value, range_value)
            saved.append((table, hash_value, range_value, copy.deepcopy(previous)))
        try:
            original(self, transact_items)
        except Exception:
            for table, hash_value, range_value, previous in reversed(saved):
                if range_value is None:
                    if previous is None:
                        table.items.pop(hash_value, None)
                    else:
                        table.items[hash_value] = previous
                elif previous is None:
                    table.items[hash_value].pop(range_value, None)
                else:
                    table.items[hash_value][range_value] = previous
            raise

    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


@contextmanager
def moto_deployment(
    prefix: str,
    *,
    queue: dict[str, Any] | None = None,
    visibility_s: int | None = None,
    max_receive: int = 2,
) -> Iterator[tuple[dict[str, Any], Any, str]]:
    """SQS (a FIFO queue with a DLQ after `max_receive` receives) and a DynamoDB state table
    on moto's server on 127.0.0.1: (the environment's `aws`/`queue`/`state` config, an SQS
    client, the queue URL). moto's backends live in the process across servers, so every name
    is new."""
    import boto3
    from moto.server import ThreadedMotoServer

    from raasctl.state.dynamodb import create_table

    patch_moto()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._server.server_port}"  # type: ignore[union-attr]
        sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        dlq = sqs.create_queue(QueueName=f"{name}-dlq.fifo", Attributes={"FifoQueue": "true"})[
            "QueueUrl"
        ]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        attributes = {
            "FifoQueue": "true",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)}
            ),
        }
        if visibility_s is not None:
            attributes["VisibilityTimeout"] = str(visibility_s)
        url = sqs.create_queue(QueueName=f"{name}.fifo", Attributes=attributes)["QueueUrl"]
        dynamodb = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=endpoint)
        create_table(dynamodb, name)
        env = {
            "aws": {"region": "us-east-1", "endpoint_url": endpoint},
            "queue": {"kind": "sqs", "url": url, "dlq_url": dlq, **(queue or {})},
            "state": {"kind": "dynamodb", "table": name},
        }
        yield env, sqs, url
    finally:
        server.stop()
