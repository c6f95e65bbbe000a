"""Test doubles and waiting helpers shared by several test modules."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


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


def serialise_moto_dynamodb() -> None:
    """moto's DynamoDB is not safe under concurrent requests: a TransactWriteItems copies the
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

    serialise_moto_dynamodb()
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
