"""The queue port: SQS semantics behind one interface (SQLite embedded, Amazon SQS deployed)."""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from raasctl.codes import ErrorCode
from raasctl.errors import QueueError

# SQS limits that both adapters honour.
MAX_BATCH = 10
MAX_DEDUP_ID_CHARS = 128
MAX_GROUP_ID_CHARS = 128
MAX_VISIBILITY_TIMEOUT_S = 43_200  # 12 hours
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024  # SQS allows up to 1 MiB


@dataclass(frozen=True)
class OutgoingMessage:
    body: str
    group_id: str | None = None  # required on FIFO queues
    dedup_id: str | None = None  # required on FIFO queues (no content-based deduplication)
    attributes: Mapping[str, str] = field(default_factory=dict)
    label: str = ""  # names the entry in errors, e.g. "entry 12 (clientDepositUpdate:D-1)"


def message_bytes(message: OutgoingMessage) -> int:
    """The size SQS counts against MaximumMessageSize: the body plus every attribute's name,
    data type ("String") and value."""
    body = message.body
    # An ASCII string's length is its UTF-8 size, and isascii() costs nothing.
    size = len(body) if body.isascii() else len(body.encode())
    for name, value in message.attributes.items():
        text = name + value
        size += (len(text) if text.isascii() else len(text.encode())) + len("String")
    return size


def reject_oversized(messages: Sequence[OutgoingMessage], limit: int, queue_name: str) -> None:
    """Raise before anything is sent when one message is over the queue's size limit."""
    for index, message in enumerate(messages):
        size = message_bytes(message)
        if size > limit:
            label = message.label or f"message {index}"
            raise QueueError(
                f"{label}: message is {size} bytes, over the limit of {limit} bytes "
                f"of queue {queue_name}; nothing was sent",
                code=ErrorCode.MESSAGE_TOO_LARGE,
            )


def sqs_id_text(value: str, max_chars: int) -> bool:
    """Whether `value` is 1-max_chars of SQS's alphabet for group and deduplication ids:
    alphanumerics and punctuation, i.e. printable ASCII but the space. (String methods
    rather than a regular expression: this runs for every message sent.)"""
    return (
        0 < len(value) <= max_chars and value.isascii() and value.isprintable() and " " not in value
    )


def queue_dedup_id(dedup_id: str) -> str:
    """The id a queue deduplicates on: SQS takes up to 128 characters of alphanumerics and
    punctuation, so anything else is replaced by its SHA-256 (the same in both adapters, so a
    resend is a duplicate on either)."""
    if sqs_id_text(dedup_id, MAX_DEDUP_ID_CHARS):
        return dedup_id
    return hashlib.sha256(dedup_id.encode()).hexdigest()


def refusal(index: int, message: OutgoingMessage, *, fifo: bool) -> BatchFailure | None:
    """What SQS answers for an entry it refuses whatever the queue's state (a sender fault,
    never retried); both adapters refuse these before sending. A FIFO queue without
    content-based deduplication needs a valid group id and a deduplication id."""
    if not fifo:
        return None
    group = message.group_id
    if not group:
        return BatchFailure(
            index, "MissingParameter", "a FIFO queue needs a MessageGroupId", sender_fault=True
        )
    if not sqs_id_text(group, MAX_GROUP_ID_CHARS):
        return BatchFailure(
            index,
            "InvalidParameterValue",
            f"MessageGroupId must be 1-{MAX_GROUP_ID_CHARS} alphanumerics or punctuation",
            sender_fault=True,
        )
    if not message.dedup_id:
        return BatchFailure(
            index,
            "InvalidParameterValue",
            "a FIFO queue needs a MessageDeduplicationId",
            sender_fault=True,
        )
    return None


def check_receive(
    max_messages: int,
    wait_time_s: float,
    visibility_timeout_s: int | None,
    *,
    limit: int = MAX_BATCH,
) -> None:
    """The arguments of `Queue.receive`, checked alike by both adapters (ValueError: a
    programming error, not a queue failure); `limit` is the adapter's `max_receive`."""
    if not 1 <= max_messages <= limit:
        raise ValueError(f"max_messages must be 1-{limit}, not {max_messages}")
    if not (math.isfinite(wait_time_s) and wait_time_s >= 0):
        raise ValueError(f"wait_time_s must be 0 or more seconds, not {wait_time_s}")
    if visibility_timeout_s is not None:
        check_visibility(visibility_timeout_s)


def check_visibility(timeout_s: int) -> None:
    if not 0 <= timeout_s <= MAX_VISIBILITY_TIMEOUT_S:
        raise ValueError(
            f"visibility timeout must be 0-{MAX_VISIBILITY_TIMEOUT_S} s, not {timeout_s}"
        )


# Not frozen, as the other records a worker makes for every message (Entry, AppliedEntry,
# Settled): a frozen dataclass sets each field through object.__setattr__, which made them
# several times slower to build, a few microseconds a message. Nothing changes one once made.
@dataclass(slots=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int  # ApproximateReceiveCount, 1 on first delivery
    attributes: Mapping[str, str] = field(default_factory=dict)
    group_id: str | None = None


@dataclass(frozen=True)
class BatchFailure:
    index: int  # position in the batch that was sent
    code: str
    message: str
    sender_fault: bool


@dataclass
class BatchResult:
    sent: list[int] = field(default_factory=list)  # indexes accepted as new messages
    duplicates: list[int] = field(default_factory=list)  # accepted, but dropped as a duplicate
    failed: list[BatchFailure] = field(default_factory=list)


@dataclass(frozen=True)
class QueueDepth:
    visible: int
    in_flight: int
    delayed: int
    dlq_visible: int | None  # None when the queue has no DLQ

    @property
    def empty(self) -> bool:
        return self.visible == 0 and self.in_flight == 0 and self.delayed == 0


@dataclass(frozen=True)
class PeekedMessage:
    message_id: str
    body: str
    receive_count: int
    attributes: Mapping[str, str] = field(default_factory=dict)
    group_id: str | None = None


@dataclass(frozen=True)
class RedriveResult:
    moved: int | None  # None when the service moves messages asynchronously
    task_handle: str | None = None


class Queue(ABC):
    """One queue and its DLQ.

    Errors are raised as `raasctl.errors.QueueError` (exit 1) with an ErrorCode; access
    problems name the queue and the action.
    """

    # Plain attributes cost nothing to read; settings a backend may have to fetch (SQS reads
    # them with GetQueueAttributes) are methods, so that a call shows where it happens.
    name: str  # for messages: a queue URL or a file path
    fifo: bool
    # The most messages one send_batch call takes: SQS's 10 per SendMessageBatch; an adapter
    # whose natural batch is larger (one SQLite transaction) says so.
    max_batch_size: int = MAX_BATCH
    # The most messages one receive returns: SQS's 10; the embedded queue takes more in one
    # transaction (a worker whose sink applies batches asks for that many).
    max_receive: int = MAX_BATCH
    # How many receives a worker keeps on their way at once: one for a local queue, whose
    # receive is a transaction; more for a remote one, whose every receive is a round trip.
    receives_at_once: int = 1
    # Whether send_batch reports the messages it dropped as duplicates (BatchResult.duplicates).
    # SQS does not: a duplicate within its window is "sent" and never delivered, so the
    # producer keeps claims in State for such a queue.
    reports_duplicates: bool = True

    @abstractmethod
    def max_message_bytes(self) -> int:
        """The largest message the queue takes (body and attributes, see message_bytes)."""

    @abstractmethod
    def max_receive_count(self) -> int | None:
        """After this many receives a message goes to the DLQ; None without a DLQ policy."""

    @abstractmethod
    def send_batch(self, messages: Sequence[OutgoingMessage]) -> BatchResult:
        """Send at most max_batch_size messages; retry only the entries that failed (not
        sender faults); return what finally failed. A body over max_message_bytes() raises
        QueueError naming the message's label before anything is sent. Entries `refusal`
        refuses are failed without being sent."""

    @abstractmethod
    def receive(
        self, max_messages: int, wait_time_s: float, visibility_timeout_s: int | None = None
    ) -> list[ReceivedMessage]:
        """Up to max_messages (1-10), long-polling up to wait_time_s without busy-waiting.
        Arguments out of range raise ValueError (`check_receive`)."""

    @abstractmethod
    def delete(self, receipt_handles: Sequence[str]) -> None:
        """Delete in batches; a receipt handle no longer valid is not an error."""

    @abstractmethod
    def change_visibility(self, receipt_handle: str, timeout_s: int) -> None:
        """Extend (heartbeat) or shorten (backoff, release with 0) a message's visibility."""

    @abstractmethod
    def dead_letter(self, message: ReceivedMessage, reason: str) -> None:
        """Move a received message to the DLQ at once, with the reason as an attribute."""

    @abstractmethod
    def depth(self) -> QueueDepth: ...

    @abstractmethod
    def peek(self, limit: int, *, dlq: bool = False) -> list[PeekedMessage]:
        """Look at messages without changing their visibility or receive count where the
        backend allows it (SQS cannot: a peek there receives with visibility 0)."""

    @abstractmethod
    def purge(self, *, dlq: bool = False) -> int | None:
        """Delete every message; return how many when known."""

    @abstractmethod
    def redrive(self) -> RedriveResult:
        """Move every DLQ message back to the source queue."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
