"""Amazon SQS (boto3): FIFO or standard, with a DLQ.

The queue's own settings are read lazily, once: MaximumMessageSize (bodies over it are
refused before sending), the RedrivePolicy (maxReceiveCount, and the DLQ when `dlq_url` is
not configured) and the queue's ARN (for redrive). The client is built by the caller (region,
endpoint_url, credentials and botocore's own retries come from configuration).

Every botocore failure becomes a one-line QueueError in one place, `queue_error()`, which
asks the project's one classifier (raasctl/aws_errors.py) what it means.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from raasctl.aws_errors import AWS_FAILURES, classify
from raasctl.codes import ErrorCode
from raasctl.errors import QueueError
from raasctl.queues.base import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_BATCH,
    BatchFailure,
    BatchResult,
    OutgoingMessage,
    PeekedMessage,
    Queue,
    QueueDepth,
    ReceivedMessage,
    RedriveResult,
    check_receive,
    check_visibility,
    message_bytes,
    queue_dedup_id,
    refusal,
    reject_oversized,
)
from raasctl.queues.sqs_requests import RequestPool, groups_in_one_request, split_requests
from raasctl.queues.sqs_shapes import (
    MOVE_UNSUPPORTED,
    STALE_RECEIPT,
    Redrive,
    attribute_strings,
    attribute_values,
    received_message,
)
from raasctl.queues.sqs_wire import SqsWire
from raasctl.redaction import shorten

# SQS allows at most 1 MiB in one batch request, whatever the queue's message size.
MAX_BATCH_BYTES = 1024 * 1024
MAX_WAIT_TIME_S = 20
MAX_MESSAGE_ATTRIBUTES = 10
REASON_ATTRIBUTE = "reason"
_REASON_MAX_CHARS = 1000


def queue_error(exc: Exception, *, action: str, queue: str) -> QueueError:
    """A botocore failure as a one-line QueueError (raasctl/aws_errors.py classifies it).

    `action` is the IAM action (`sqs:SendMessage`), so access problems say what to grant.
    """
    return classify(exc, service="sqs", action=action, resource=queue).error(QueueError)


def _one_line(text: str) -> str:
    return " ".join(text.split())


class SqsQueue(Queue):
    """One SQS queue and its DLQ. FIFO is recognised by the `.fifo` suffix."""

    reports_duplicates = False  # a duplicate within the window is accepted and dropped
    # Each receive is a round trip (10-30 ms on SQS, more under load): with two on their way,
    # one's messages reach the slots while the other is still coming back.
    receives_at_once = 2

    # Retrying the entries a batch call could not take (SenderFault false). botocore already
    # retries whole calls; a generic retry library cannot resend only part of a batch.
    retry_attempts = 5
    retry_base_delay_s = 0.1
    retry_max_delay_s = 2.0
    # Batch requests of one send_batch() or delete() that may be in flight at once (boto3
    # clients are thread-safe). FIFO batches go in parallel only when they share no message group.
    max_parallel_batches = 8
    # How long the receive-send-delete redrive waits for more DLQ messages before it stops.
    redrive_wait_s = 1
    peek_visibility_timeout_s = 30

    def __init__(
        self,
        client: Any,
        url: str,
        *,
        dlq_url: str | None = None,
        visibility_timeout_s: int = 60,
        wait_time_s: int = 20,
        wire: SqsWire | None = None,
    ) -> None:
        self.client = client
        self._hot: Any = wire or client  # receives and deletes: the wire, where there is one
        self.url = url
        self.name = url
        self.fifo = url.endswith(".fifo")
        self.visibility_timeout_s = visibility_timeout_s
        self.wait_time_s = wait_time_s
        self.sleep: Callable[[float], None] = time.sleep
        self._dlq_url = dlq_url
        self._dlq_resolved = dlq_url is not None
        self._redrive_read: Redrive | None = None  # read apart: the worker needs only this
        self._max_message_bytes: int | None = None
        self._modern_receive: bool | None = None
        self._lock = threading.Lock()
        # Threads for a call's requests sent at once.
        self._requests = RequestPool(self.max_parallel_batches)

    # ------------------------------------------------------------------ lazy settings

    def max_message_bytes(self) -> int:
        with self._lock:
            if self._max_message_bytes is not None:
                return self._max_message_bytes
        raw = self._queue_attributes(self.url, ["MaximumMessageSize"]).get("MaximumMessageSize")
        size = int(raw or DEFAULT_MAX_MESSAGE_BYTES)
        with self._lock:
            self._max_message_bytes = size
        return size

    def max_receive_count(self) -> int | None:
        return self._redrive().max_receive_count

    def dlq_url(self) -> str | None:
        """The configured DLQ, else the RedrivePolicy's target (its URL looked up once)."""
        with self._lock:
            if self._dlq_resolved:
                return self._dlq_url
        redrive = self._redrive()
        url = None
        if redrive.dead_letter_arn:
            # arn:aws:sqs:<region>:<account>:<name>
            parts = redrive.dead_letter_arn.split(":")
            account, name = parts[4], parts[5]
            url = self._call(
                "sqs:GetQueueUrl",
                name,
                self.client.get_queue_url,
                QueueName=name,
                QueueOwnerAWSAccountId=account,
            )["QueueUrl"]
        with self._lock:
            self._dlq_url, self._dlq_resolved = url, True
        return url

    def _redrive(self) -> Redrive:
        with self._lock:
            if self._redrive_read is not None:
                return self._redrive_read
        raw = self._queue_attributes(self.url, ["RedrivePolicy"]).get("RedrivePolicy")
        redrive = Redrive.parse(raw)
        with self._lock:
            self._redrive_read = redrive
        return redrive

    def _system_attributes(self, *names: str) -> dict[str, list[str]]:
        """ReceiveMessage's MessageSystemAttributeNames, or the older AttributeNames for a
        botocore from before May 2024 (both are accepted by SQS)."""
        if self._modern_receive is None:
            request = self.client.meta.service_model.operation_model("ReceiveMessage")
            self._modern_receive = "MessageSystemAttributeNames" in request.input_shape.members
        key = "MessageSystemAttributeNames" if self._modern_receive else "AttributeNames"
        return {key: list(names)}

    def _call(self, action: str, queue: str, method: Callable[..., Any], **params: Any) -> Any:
        try:
            return method(**params)
        except AWS_FAILURES as exc:
            raise queue_error(exc, action=action, queue=queue) from exc

    def _require_dlq(self) -> str:
        url = self.dlq_url()
        if url is None:
            raise QueueError(
                f"queue {self.url} has no DLQ (set queue.dlq_url or a RedrivePolicy)",
                code=ErrorCode.QUEUE_NOT_FOUND,
            )
        return url

    # ------------------------------------------------------------------ sending

    def send_batch(self, messages: Sequence[OutgoingMessage]) -> BatchResult:
        """Sends any number of messages in requests of at most 10 entries and 1 MiB.

        SQS does not say when it dropped a duplicate, so duplicates count as sent here.
        """
        max_bytes = self.max_message_bytes()
        reject_oversized(messages, max_bytes, self.url)
        result = BatchResult()
        entries: list[tuple[int, dict[str, Any], int]] = []
        for index, message in enumerate(messages):
            failure = refusal(index, message, fifo=self.fifo)
            if failure is not None:
                result.failed.append(failure)
            else:
                entries.append((index, self._entry(index, message), message_bytes(message)))
        requests = split_requests(entries, min(max_bytes, MAX_BATCH_BYTES))
        together = not self.fifo or groups_in_one_request(requests)
        outcomes = self._requests.map(self._send_request, requests, together=together)
        for sent, failed in outcomes:
            result.sent.extend(sent)
            result.failed.extend(failed)
        result.sent.sort()
        result.failed.sort(key=lambda failure: failure.index)
        return result

    def _entry(self, index: int, message: OutgoingMessage) -> dict[str, Any]:
        entry: dict[str, Any] = {"Id": str(index), "MessageBody": message.body}
        if message.attributes:
            entry["MessageAttributes"] = attribute_values(message.attributes)
        if self.fifo:
            assert message.group_id is not None and message.dedup_id is not None
            entry["MessageGroupId"] = message.group_id
            entry["MessageDeduplicationId"] = queue_dedup_id(message.dedup_id)
        return entry

    def _send_request(self, request: list[dict[str, Any]]) -> tuple[list[int], list[BatchFailure]]:
        return self._batch_call(
            "sqs:SendMessage", self.url, self.client.send_message_batch, request
        )

    def _batch_call(
        self,
        action: str,
        url: str,
        method: Callable[..., Any],
        request: list[dict[str, Any]],
    ) -> tuple[list[int], list[BatchFailure]]:
        """One batch call, resending only the entries that failed through no fault of ours."""
        pending = {entry["Id"]: entry for entry in request}
        done: list[int] = []
        failed: list[BatchFailure] = []
        for attempt in range(self.retry_attempts):
            response = self._call(action, url, method, QueueUrl=url, Entries=list(pending.values()))
            for item in response.get("Successful", []):
                pending.pop(item["Id"], None)
                done.append(int(item["Id"]))
            retry: dict[str, dict[str, Any]] = {}
            for item in response.get("Failed", []):
                entry = pending.pop(item["Id"], None)
                if entry is None:
                    continue
                failure = BatchFailure(
                    int(item["Id"]),
                    str(item.get("Code", "")),
                    str(item.get("Message", "")),
                    bool(item.get("SenderFault", False)),
                )
                if failure.sender_fault or attempt == self.retry_attempts - 1:
                    failed.append(failure)
                else:
                    retry[item["Id"]] = entry
            pending = retry
            if not pending:
                break
            self.sleep(min(self.retry_max_delay_s, self.retry_base_delay_s * 2**attempt))
        return done, failed

    # ------------------------------------------------------------------ receiving

    def receive(
        self, max_messages: int, wait_time_s: float, visibility_timeout_s: int | None = None
    ) -> list[ReceivedMessage]:
        check_receive(max_messages, wait_time_s, visibility_timeout_s)
        timeout = visibility_timeout_s
        if timeout is None:
            timeout = self.visibility_timeout_s
        deadline = time.monotonic() + max(0.0, wait_time_s)
        while True:
            remaining = deadline - time.monotonic()
            wait = min(MAX_WAIT_TIME_S, math.ceil(max(0.0, remaining)))
            raw = self._receive_raw(self.url, max_messages, wait, timeout)
            if raw or time.monotonic() >= deadline:
                return [received_message(message) for message in raw]

    def _receive_raw(
        self, url: str, max_messages: int, wait_s: int, visibility_timeout_s: int
    ) -> list[dict[str, Any]]:
        response = self._call(
            "sqs:ReceiveMessage",
            url,
            self._hot.receive_message,
            QueueUrl=url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_s,
            VisibilityTimeout=visibility_timeout_s,
            MessageAttributeNames=["All"],
            **self._system_attributes("ApproximateReceiveCount", "MessageGroupId"),
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    # ------------------------------------------------------------------ acting on messages

    def delete(self, receipt_handles: Sequence[str]) -> None:
        self._delete(self.url, receipt_handles)

    def _delete(self, url: str, receipt_handles: Sequence[str]) -> None:
        unique = list(dict.fromkeys(receipt_handles))  # SQS refuses repeated entries
        requests = [
            [{"Id": str(n), "ReceiptHandle": h} for n, h in enumerate(unique[at : at + MAX_BATCH])]
            for at in range(0, len(unique), MAX_BATCH)
        ]
        call = partial(self._batch_call, "sqs:DeleteMessage", url, self._hot.delete_message_batch)
        # Many handles (a settler catching up) go in requests at once: one after the other,
        # their round trips would cap the deletes, and the undeleted would pile up in the queue.
        outcomes = self._requests.map(call, requests)
        # A handle no longer valid (deleted already, or received again) is not an error.
        problems = [f for _, failed in outcomes for f in failed if f.code not in STALE_RECEIPT]
        if problems:
            first = problems[0]
            raise QueueError(
                _one_line(
                    f"sqs:DeleteMessage on {url} failed for {len(problems)} message(s):"
                    f" {first.code}: {first.message}"
                ),
                code=ErrorCode.QUEUE_FAILED,
            )

    def close(self) -> None:
        self._requests.close()
        if isinstance(self._hot, SqsWire):
            self._hot.close()

    def change_visibility(self, receipt_handle: str, timeout_s: int) -> None:
        check_visibility(timeout_s)
        try:
            self.client.change_message_visibility(
                QueueUrl=self.url, ReceiptHandle=receipt_handle, VisibilityTimeout=timeout_s
            )
        except ClientError as exc:
            # The message was deleted or received again since: nothing left to change.
            if exc.response.get("Error", {}).get("Code") in STALE_RECEIPT:
                return
            raise queue_error(exc, action="sqs:ChangeMessageVisibility", queue=self.url) from exc
        except AWS_FAILURES as exc:
            raise queue_error(exc, action="sqs:ChangeMessageVisibility", queue=self.url) from exc

    def dead_letter(self, message: ReceivedMessage, reason: str) -> None:
        """Send the body to the DLQ with its attributes and `reason`, then delete it here.

        On a FIFO DLQ the message id is the deduplication id, so dead-lettering the same
        message twice leaves one copy."""
        dlq = self._require_dlq()
        kept = {k: v for k, v in message.attributes.items() if k != REASON_ATTRIBUTE}
        attributes = dict(list(kept.items())[: MAX_MESSAGE_ATTRIBUTES - 1])
        # Scrubbed before it is cut: no piece of a secret survives in the DLQ.
        attributes[REASON_ATTRIBUTE] = (
            shorten(_one_line(reason), _REASON_MAX_CHARS) or "unspecified"
        )
        params: dict[str, Any] = {
            "QueueUrl": dlq,
            "MessageBody": message.body,
            "MessageAttributes": attribute_values(attributes),
        }
        if dlq.endswith(".fifo"):
            params["MessageGroupId"] = message.group_id or message.message_id
            params["MessageDeduplicationId"] = queue_dedup_id(message.message_id)
        self._call("sqs:SendMessage", dlq, self.client.send_message, **params)
        self.delete([message.receipt_handle])

    # ------------------------------------------------------------------ operating

    def depth(self) -> QueueDepth:
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        main = self._queue_attributes(self.url, names)
        dlq = self.dlq_url()
        dlq_visible = None
        if dlq is not None:
            dlq_visible = int(self._queue_attributes(dlq, names[:1]).get(names[0], 0))
        return QueueDepth(
            visible=int(main.get(names[0], 0)),
            in_flight=int(main.get(names[1], 0)),
            delayed=int(main.get(names[2], 0)),
            dlq_visible=dlq_visible,
        )

    def _queue_attributes(self, url: str, names: list[str]) -> dict[str, str]:
        response = self._call(
            "sqs:GetQueueAttributes",
            url,
            self.client.get_queue_attributes,
            QueueUrl=url,
            AttributeNames=names,
        )
        attributes: dict[str, str] = response.get("Attributes", {})
        return attributes

    def peek(self, limit: int, *, dlq: bool = False) -> list[PeekedMessage]:
        """SQS cannot look without receiving: this receives (counting one receive per
        message), then makes every message seen visible again at once."""
        url = self._require_dlq() if dlq else self.url
        seen: dict[str, dict[str, Any]] = {}
        try:
            while len(seen) < limit:
                batch = self._receive_raw(
                    url, min(MAX_BATCH, limit - len(seen)), 0, self.peek_visibility_timeout_s
                )
                fresh = [m for m in batch if m["MessageId"] not in seen]
                if not fresh:
                    break
                for raw in fresh:
                    seen[raw["MessageId"]] = raw
        finally:
            self._release(url, [m["ReceiptHandle"] for m in seen.values()])
        peeked = []
        for message in map(received_message, seen.values()):
            peeked.append(
                PeekedMessage(
                    message_id=message.message_id,
                    body=message.body,
                    receive_count=message.receive_count,
                    attributes=message.attributes,
                    group_id=message.group_id,
                )
            )
        return peeked

    def _release(self, url: str, receipt_handles: Sequence[str]) -> None:
        for start in range(0, len(receipt_handles), MAX_BATCH):
            request = [
                {"Id": str(number), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for number, handle in enumerate(receipt_handles[start : start + MAX_BATCH])
            ]
            self._batch_call(
                "sqs:ChangeMessageVisibility",
                url,
                self.client.change_message_visibility_batch,
                request,
            )

    def purge(self, *, dlq: bool = False) -> int | None:
        url = self._require_dlq() if dlq else self.url
        self._call("sqs:PurgeQueue", url, self.client.purge_queue, QueueUrl=url)
        return None  # SQS does not say how many; it purges within 60 s

    def redrive(self) -> RedriveResult:
        """StartMessageMoveTask where the service has it (asynchronous: `moved` is None), else
        a receive-send-delete move here."""
        dlq = self._require_dlq()
        source_arn = self._queue_attributes(self.url, ["QueueArn"]).get("QueueArn")
        dlq_arn = self._queue_attributes(dlq, ["QueueArn"]).get("QueueArn")
        try:
            response = self.client.start_message_move_task(
                SourceArn=dlq_arn, DestinationArn=source_arn
            )
        except NotImplementedError:  # moto in-process
            return RedriveResult(moved=_move_back(self, dlq))
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if str(error.get("Code", "")) in MOVE_UNSUPPORTED or status >= 500:
                return RedriveResult(moved=_move_back(self, dlq))
            raise queue_error(exc, action="sqs:StartMessageMoveTask", queue=dlq) from exc
        except AWS_FAILURES as exc:
            raise queue_error(exc, action="sqs:StartMessageMoveTask", queue=dlq) from exc
        return RedriveResult(moved=None, task_handle=response.get("TaskHandle"))


def _move_back(queue: SqsQueue, dlq: str) -> int:
    """The receive-send-delete redrive, where StartMessageMoveTask is not available: the
    DLQ's messages are sent back without their reason, then deleted from the DLQ."""
    moved = 0
    while True:
        response = queue._call(
            "sqs:ReceiveMessage",
            dlq,
            queue.client.receive_message,
            QueueUrl=dlq,
            MaxNumberOfMessages=MAX_BATCH,
            WaitTimeSeconds=queue.redrive_wait_s,
            VisibilityTimeout=max(60, queue.visibility_timeout_s),
            MessageAttributeNames=["All"],
            **queue._system_attributes("MessageGroupId"),
        )
        batch: list[dict[str, Any]] = response.get("Messages", [])
        if not batch:
            return moved
        request = []
        for number, raw in enumerate(batch):
            attributes = attribute_strings(raw.get("MessageAttributes", {}))
            attributes.pop(REASON_ATTRIBUTE, None)
            entry: dict[str, Any] = {"Id": str(number), "MessageBody": raw["Body"]}
            if attributes:
                entry["MessageAttributes"] = attribute_values(attributes)
            if queue.fifo:
                group = raw.get("Attributes", {}).get("MessageGroupId")
                entry["MessageGroupId"] = group or raw["MessageId"]
                # The DLQ message id: resending after an interrupted move is a duplicate.
                entry["MessageDeduplicationId"] = f"redrive-{raw['MessageId']}"
            request.append(entry)
        sent, _ = queue._batch_call(
            "sqs:SendMessage", queue.url, queue.client.send_message_batch, request
        )
        # Whatever was not sent stays in the DLQ (visible again after the timeout).
        queue._delete(dlq, [batch[number]["ReceiptHandle"] for number in sent])
        moved += len(sent)
