"""The producer: sends a stream of messages to the queue in batches, with bounded memory.

Messages are read from the stream a chunk at a time. Each chunk's keys are looked up in
State at once (one batched `applied_keys` call instead of one per entry): an entry that was
applied already is counted as a duplicate and not sent, so re-running a report adds nothing
the worker has done. What the queue itself drops as a duplicate (its deduplication window)
counts too. A batch is as large as the queue takes at once (`Queue.max_batch_size`: SQS's 10,
the SQLite queue's 500 per transaction). At most `max_in_flight` batches are sent at a time,
so memory stays flat however long the stream is; a remote queue (SQS) gets several batches in
flight, the SQLite queue one (it writes one file, and a thread pool would only add lock
contention).

When a message finally fails to send, no further batch is started, the batches in flight are
waited for, and `EnqueueFailed` says how many messages were enqueued before the failure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from json.encoder import encode_basestring
from typing import TYPE_CHECKING

from raasctl.codes import ErrorCode
from raasctl.envelope import VERSION, dedup_id, group_id
from raasctl.errors import QueueError, RaasctlError
from raasctl.queues.base import MAX_BATCH, BatchFailure, BatchResult, OutgoingMessage, Queue
from raasctl.state.base import State

if TYPE_CHECKING:
    from raasctl.claims import ClaimBook

# Entries looked up in State at once: large enough to make the lookup cheap per entry,
# small enough that a chunk of messages is a few hundred kilobytes at most.
LOOKUP_CHUNK = 500
DEFAULT_MAX_IN_FLIGHT = 8


@dataclass(frozen=True)
class Pending:
    """One message to send and the entry key it carries (for the applied-keys check)."""

    key: str
    message: OutgoingMessage


@dataclass
class SendCounts:
    """What happened to the messages handed to the producer so far."""

    enqueued: int = 0  # accepted by the queue as new messages
    duplicates: int = 0  # applied already, repeated within the stream, or dropped by the queue
    failed: int = 0  # finally refused by the queue

    def add(self, result: BatchResult) -> None:
        self.enqueued += len(result.sent)
        self.duplicates += len(result.duplicates)
        self.failed += len(result.failed)


class EnqueueFailed(QueueError):
    """Some messages could not be sent; `counts` says what was enqueued before that."""

    default_code = ErrorCode.ENQUEUE_FAILED

    def __init__(self, message: str, counts: SendCounts, *, code: ErrorCode | None = None) -> None:
        super().__init__(message, code=code)
        self.counts = counts


def _json_string(text: str) -> str:
    # What json.dumps(text, ensure_ascii=False) writes, without building an encoder per call.
    return encode_basestring(text)


def enqueued_at(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).isoformat(timespec="milliseconds")


class MessageWriter:
    """The outgoing messages of one run, with envelope bodies written from parts.

    A body is the same text as `Envelope.to_body()` (canonical JSON; a test holds the two
    equal), but the run's constant fields are serialised once and the payload arrives
    serialised, so a payload is never serialised twice and a mock payload once for all its
    copies. At tens of thousands of messages a second this is most of the producer's work.
    """

    def __init__(
        self,
        cron: str,
        run_id: str,
        *,
        mock: bool = False,
        version: str = "",
        epoch: str = "",
    ) -> None:
        # Deduplication ids change with each queue purge (`epoch`: the last purge's time), so
        # a re-run after a purge enqueues the purged entries again instead of the queue
        # dropping them as duplicates for the rest of its window.
        self._epoch = f"#{epoch}" if epoch else ""
        self._head = f'{{"cron":{_json_string(cron)},"enqueued_at":'
        self._mock = ',"mock":true,"payload":' if mock else ',"mock":false,"payload":'
        self._tail = f',"run_id":{_json_string(run_id)},"v":{VERSION}'
        self._version = f',"version":{_json_string(version)}}}' if version else "}"
        # One attributes mapping for every message of the run; nothing mutates it.
        self._attributes = {"cron": cron, "run_id": run_id}
        # Mock copies share one enqueue time: encode it once.
        self._at: tuple[str, str] = ("", '""')

    def body(self, key: str, payload_json: str, at: str, entity_id: str = "") -> str:
        if at != self._at[0]:
            self._at = (at, _json_string(at))
        entity = f',"entity_id":{_json_string(entity_id)}' if self._version != "}" else ""
        return (
            f'{self._head}{self._at[1]}{entity},"key":{_json_string(key)}'
            f"{self._mock}{payload_json}{self._tail}{self._version}"
        )

    def message(
        self, key: str, entity_id: str, payload_json: str, *, label: str, at: str | None = None
    ) -> OutgoingMessage:
        """`payload_json` is `envelope.canonical_json(payload)`; `at` defaults to now."""
        return OutgoingMessage(
            body=self.body(key, payload_json, at or enqueued_at(), entity_id),
            group_id=group_id(entity_id),
            dedup_id=dedup_id(key + self._epoch),
            attributes=self._attributes,
            label=label,
        )


class Pacer:
    """Spaces sends evenly so no more than `per_second` messages go out in any second.

    Hand-written because it is a few lines: a send of n messages books n / per_second of
    the timeline, and a sender waits for its slot (no burst beyond one batch)."""

    def __init__(
        self,
        per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        self.per_second = per_second
        self._clock = clock
        self._sleep = sleep
        self._next_at: float | None = None

    def wait(self, count: int) -> None:
        now = self._clock()
        if self._next_at is None or self._next_at < now:
            self._next_at = now
        delay = self._next_at - now
        self._next_at += count / self.per_second
        if delay > 0:
            self._sleep(delay)


class Producer:
    """Send `Pending` messages to `queue`; skip keys `state` has applied (None: no check)."""

    def __init__(
        self,
        queue: Queue,
        state: State | None = None,
        *,
        max_in_flight: int = 1,
        pacer: Pacer | None = None,
        on_progress: Callable[[SendCounts], None] | None = None,
        lookup_chunk: int = LOOKUP_CHUNK,
        claims: ClaimBook | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.queue = queue
        self.state = state
        self.max_in_flight = max_in_flight
        self.pacer = pacer
        self.on_progress = on_progress
        # For a queue that drops duplicates silently (raasctl/claims.py).
        self.claims = claims
        # Batches as large as the queue takes at once (SQS 10, the SQLite queue hundreds); a
        # paced send goes out a batch at a time, so there they stay at SQS's 10 lest a batch
        # be a burst.
        self.batch_size = (
            queue.max_batch_size if pacer is None else min(queue.max_batch_size, MAX_BATCH)
        )
        self.lookup_chunk = max(lookup_chunk, self.batch_size)
        # Readable after send() raised: what was enqueued before the failure.
        self.counts = SendCounts()

    def send(self, items: Iterable[Pending]) -> SendCounts:
        """Send every message; return the counts, or raise EnqueueFailed (or the stream's own
        error) once the batches in flight have finished, with `self.counts` up to date."""
        if self.max_in_flight == 1:
            self._send_sequentially(items)
        else:
            self._send_in_parallel(items)
        return self.counts

    # ------------------------------------------------------------ batching

    def _batches(self, items: Iterable[Pending]) -> Iterator[list[OutgoingMessage]]:
        iterator = iter(items)
        while chunk := list(islice(iterator, self.lookup_chunk)):
            yield from self._fresh_batches(chunk)

    def _fresh_batches(self, chunk: list[Pending]) -> Iterator[list[OutgoingMessage]]:
        applied = self.state.applied_keys([item.key for item in chunk]) if self.state else set()
        seen: set[str] = set()
        new: list[Pending] = []
        for item in chunk:
            if item.key in applied or item.key in seen:
                self.counts.duplicates += 1
                continue
            seen.add(item.key)
            new.append(item)
        if self.claims is not None:
            new, claimed_elsewhere = self.claims.sort(new)
            self.counts.duplicates += claimed_elsewhere
        fresh = [item.message for item in new]
        if len(fresh) < len(chunk) and self.on_progress:
            self.on_progress(self.counts)
        for start in range(0, len(fresh), self.batch_size):
            yield fresh[start : start + self.batch_size]

    # ------------------------------------------------------------ sending

    def _send_batch(self, batch: list[OutgoingMessage]) -> BatchResult:
        if self.pacer is not None:
            self.pacer.wait(len(batch))
        return self.queue.send_batch(batch)

    def _collect(self, result: BatchResult, batch: list[OutgoingMessage]) -> BatchFailure | None:
        self.counts.add(result)
        if self.claims is not None:
            self.claims.confirm([batch[index].dedup_id for index in result.sent])
        if self.on_progress:
            self.on_progress(self.counts)
        return result.failed[0] if result.failed else None

    def _send_sequentially(self, items: Iterable[Pending]) -> None:
        for batch in self._batches(items):
            try:
                result = self._send_batch(batch)
            except RaasctlError as exc:
                raise self._failure(exc.message, exc.code) from None
            failure = self._collect(result, batch)
            if failure is not None:
                raise self._failure(_refusal(batch, failure))

    def _send_in_parallel(self, items: Iterable[Pending]) -> None:
        # A remote queue may fetch its limits lazily on the first send: read them once here,
        # or every sending thread would fetch them at the same time.
        self.queue.max_message_bytes()
        # The pacer is shared by the sending threads.
        lock = threading.Lock()
        pacer = self.pacer

        def send(batch: list[OutgoingMessage]) -> BatchResult:
            if pacer is not None:
                with lock:
                    pacer.wait(len(batch))
            return self.queue.send_batch(batch)

        in_flight: dict[Future[BatchResult], list[OutgoingMessage]] = {}
        # The first failure: (reason, code). Reported once every batch in flight is counted.
        problem: tuple[str, ErrorCode | None] | None = None

        def settle(futures: Iterable[Future[BatchResult]]) -> None:
            nonlocal problem
            for future in futures:
                batch = in_flight.pop(future)
                try:
                    result = future.result()
                except RaasctlError as exc:
                    problem = problem or (exc.message, exc.code)
                    continue
                failure = self._collect(result, batch)
                if failure is not None and problem is None:
                    problem = (_refusal(batch, failure), None)

        # On a FIFO queue a group's messages arrive in the order they were sent, so a batch
        # that shares a group with one still in flight waits for it (rare in a report; mock
        # copies never share a group).
        group_senders: dict[str, Future[BatchResult]] = {}
        ordered = self.queue.fifo

        def settle_groups(batch: list[OutgoingMessage]) -> None:
            busy = {
                group_senders[m.group_id]
                for m in batch
                if m.group_id is not None and m.group_id in group_senders
            }
            busy &= in_flight.keys()
            if busy:
                wait(busy)
                settle(busy)

        with ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="producer") as pool:
            try:
                for batch in self._batches(items):
                    if ordered:
                        settle_groups(batch)
                    if len(in_flight) >= self.max_in_flight:
                        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                        settle(done)
                    if problem is not None:
                        break
                    future = pool.submit(send, batch)
                    in_flight[future] = batch
                    if ordered:
                        if len(group_senders) > 4 * self.max_in_flight * self.batch_size:
                            # Forget groups whose batches are done: memory stays bounded.
                            group_senders = {
                                g: f for g, f in group_senders.items() if f in in_flight
                            }
                        for message in batch:
                            if message.group_id is not None:
                                group_senders[message.group_id] = future
            finally:
                # Whatever stopped the stream (a refused message, a source error), the batches
                # already sent are counted before anything is reported.
                settle(list(in_flight))
        if problem is not None:
            raise self._failure(*problem)

    def _failure(self, reason: str, code: ErrorCode | None = None) -> EnqueueFailed:
        return EnqueueFailed(
            f"{reason}; {self.counts.enqueued} messages were enqueued before the failure",
            self.counts,
            code=code,
        )


def _refusal(batch: list[OutgoingMessage], failure: BatchFailure) -> str:
    label = batch[failure.index].label or f"message {failure.index}"
    return f"the queue refused {label}: {failure.code}: {failure.message}"
