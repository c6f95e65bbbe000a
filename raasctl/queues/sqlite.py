"""The embedded queue: SQS semantics in a SQLite file, safe for several processes.

Not a list in a table. Each message has a visibility deadline, a receive count and a
current receipt token; a receive claims messages in one short `BEGIN IMMEDIATE` transaction,
so two workers (threads or processes) never hold the same message at once. A message
received `max_receive_count` times moves to the DLQ table on its next receive, as SQS's
redrive policy does. FIFO: only the oldest message of each group (`is_head`) can be
delivered, so a group has at most one message in flight and keeps its order. Deduplication
ids are remembered for `dedup_window_s` from the first send, also after the message was
deleted (SQS keeps 5 minutes; moto does not, which is why this matters here).

The file is shared with the embedded state and sink adapters, so every table here is prefixed
`queue_` or `dlq_` (their migrations are in queues/sqlite_schema.py); raasctl/sqlite.py opens
the connections for all three.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from raasctl.codes import ErrorCode
from raasctl.errors import QueueError
from raasctl.queues.base import (
    DEFAULT_MAX_MESSAGE_BYTES,
    BatchResult,
    OutgoingMessage,
    PeekedMessage,
    Queue,
    QueueDepth,
    ReceivedMessage,
    RedriveResult,
    check_receive,
    check_visibility,
    refusal,
    reject_oversized,
)
from raasctl.queues.sqlite_dedup import DEDUP_MERGE_ROWS, DedupWindow
from raasctl.queues.sqlite_rows import (
    ClaimedRow,
    attributes_json,
    parse_receipt,
    received_messages,
    rows_within,
    within_size,
)
from raasctl.queues.sqlite_schema import MIGRATIONS, dedup_digest
from raasctl.sqlite import (
    BUSY_TIMEOUT_S,
    Database,
    compact,
    current_pid,
    execute_in,
    rows_per_statement,
)

_READY = "SELECT EXISTS (SELECT 1 FROM queue_messages WHERE is_head = 1 AND visible_at <= ?)"
_CLAIMABLE = (
    "SELECT seq, message_id, body, group_id, attributes, receive_count FROM queue_messages"
    " WHERE is_head = 1 AND visible_at <= ? ORDER BY visible_at, seq LIMIT ?"
)
_CLAIM = (
    "UPDATE queue_messages SET receive_count = receive_count + 1, visible_at = ?, receipt = ?"
    " WHERE seq IN ({marks})"
)
_INSERT = (
    "INSERT INTO queue_messages (message_id, body, group_id, attributes, sent_at, visible_at,"
    " receive_count, is_head) VALUES (?, ?, ?, ?, ?, ?, 0, ?)"
)
_TO_DLQ = (
    "INSERT INTO dlq_messages (message_id, body, group_id, attributes, sent_at, receive_count,"
    " dead_lettered_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# After a group's head leaves the queue, its next-oldest message becomes deliverable: for
# every group named, in one statement.
_PROMOTE = (
    "UPDATE queue_messages SET is_head = 1 WHERE seq IN (SELECT MIN(seq) FROM queue_messages"
    " WHERE group_id IN ({marks}) GROUP BY group_id)"
)


class SqliteQueue(Queue):
    """A queue and its DLQ in one SQLite file (tables `queue_*` and `dlq_*`)."""

    # Idle long polls re-check this often (or sooner, when a message becomes visible);
    # between checks the thread sleeps, so waiting costs no CPU.
    poll_interval_s = 0.05
    # Messages written per transaction: a commit costs about as much as a few hundred inserts,
    # so SQS's 10 per call would spend most of a send committing.
    max_batch_size = 500
    # Messages claimed per receive: a worker applying batches (the ledger) takes 500 in one
    # transaction; the cost of a claim, an apply and a settle is mostly its transaction and
    # its statements, not its rows (100 a receive managed ~11,000 a second, 500 ~18,000).
    max_receive = 500
    # ... and at most this much of their bodies (counted in characters), at least one message:
    # a worker holds a receive for each slot and one more, whatever the bodies' size.
    max_receive_bytes = 8 * 1024 * 1024

    def __init__(
        self,
        path: Path,
        *,
        fifo: bool = True,
        max_receive_count: int = 5,
        visibility_timeout_s: int = 60,
        dedup_window_s: int = 300,
        dedup_merge_rows: int = DEDUP_MERGE_ROWS,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.fifo = fifo
        self._max_receive_count = max_receive_count
        self.visibility_timeout_s = visibility_timeout_s
        self.dedup_window_s = dedup_window_s
        self._clock = clock
        self._db = Database(self.path, MIGRATIONS, busy_timeout_s=busy_timeout_s)
        self._dedup = DedupWindow(dedup_window_s, dedup_merge_rows)
        self._new_id_source()

    def max_message_bytes(self) -> int:
        return DEFAULT_MAX_MESSAGE_BYTES

    def max_receive_count(self) -> int:
        return self._max_receive_count

    # ------------------------------------------------------------------ connections

    @contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """One short write transaction, taking the write lock up front (no upgrade deadlocks)."""
        try:
            with self._db.transaction() as conn:
                yield conn
        except sqlite3.Error as exc:
            raise self._error(action, exc) from exc

    @contextmanager
    def _read(self, action: str) -> Iterator[sqlite3.Connection]:
        try:
            yield self._db.connection()
        except sqlite3.Error as exc:
            raise self._error(action, exc) from exc

    def _error(self, action: str, exc: sqlite3.Error) -> QueueError:
        return QueueError(f"cannot {action} queue {self.name}: {exc}", code=ErrorCode.QUEUE_FAILED)

    def shares_file(self, path: Path) -> bool:
        """Whether this queue lives in the SQLite file at `path` (the embedded state's)."""
        return os.path.realpath(self.path) == os.path.realpath(path)

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ sending

    def _new_id_source(self) -> None:
        # Message ids look like UUIDs: a random prefix per instance and process, and a
        # counter; unique across processes and far cheaper than uuid4() per message.
        self._id_pid = current_pid()
        self._id_prefix = str(uuid.uuid4())[:24]
        self._id_counter = itertools.count()

    def _new_message_id(self) -> str:
        return f"{self._id_prefix}{next(self._id_counter):012x}"

    def send_batch(self, messages: Sequence[OutgoingMessage]) -> BatchResult:
        limit = DEFAULT_MAX_MESSAGE_BYTES
        if not within_size(messages, limit):
            reject_oversized(messages, limit, self.name)  # names the message
        if self._id_pid != current_pid():  # a forked child must not repeat its parent's ids
            self._new_id_source()
        result = BatchResult()
        size = self.max_batch_size
        for start in range(0, len(messages), size):
            self._send_chunk(messages, start, min(start + size, len(messages)), result)
        return result

    def _send_chunk(
        self, messages: Sequence[OutgoingMessage], start: int, end: int, result: BatchResult
    ) -> None:
        now = self._clock()
        rows: list[tuple[object, ...]] = []
        # The messages of one run share their attributes: encode each set once.
        attributes_cache: dict[int, tuple[Mapping[str, str], str | None]] = {}
        if not self.fifo:
            for index in range(start, end):
                message = messages[index]
                attributes = attributes_json(message.attributes, attributes_cache)
                rows.append((self._new_message_id(), message.body, None, attributes, now, now, 1))
            with self._write("send to") as conn:
                conn.executemany(_INSERT, rows)
            result.sent.extend(range(start, end))
            return

        accepted: list[tuple[int, OutgoingMessage, int, int]] = []
        for index in range(start, end):
            message = messages[index]
            failure = refusal(index, message, fifo=True)
            if failure is not None:
                result.failed.append(failure)
            else:
                assert message.dedup_id is not None
                # Any id is digested, so SQS's limits on an id's length and alphabet (which
                # the SQS adapter meets by hashing, queue_dedup_id) do not arise here.
                accepted.append((index, message, *dedup_digest(message.dedup_id)))
        if not accepted:
            return
        expires_at = now + self.dedup_window_s
        fresh: list[tuple[int, int]] = []
        try:
            with self._write("send to") as conn:
                live = self._dedup.live(conn, [head for _, _, head, _ in accepted], now)
                busy = self._busy_groups(conn, {message.group_id for _, message, _, _ in accepted})
                for index, message, head, tail in accepted:
                    known = live.get(head)
                    if known == tail:
                        # SQS accepts a duplicate send and drops it: not an error.
                        result.duplicates.append(index)
                        continue
                    if known is None:  # else another id holds the slot (sqlite_schema.py)
                        live[head] = tail
                        fresh.append((head, tail))
                    group = message.group_id
                    attributes = attributes_json(message.attributes, attributes_cache)
                    is_head = 0 if group in busy else 1
                    busy.add(group)
                    rows.append(
                        (self._new_message_id(), message.body, group, attributes, now, now, is_head)
                    )
                    result.sent.append(index)
                conn.executemany(_INSERT, rows)
                self._dedup.record(conn, fresh, expires_at, now)
        except BaseException:
            # Nothing was recorded: the copy in memory must not say otherwise.
            self._dedup.forget()
            raise

    @staticmethod
    def _busy_groups(conn: sqlite3.Connection, groups: set[str | None]) -> set[str | None]:
        """The groups that already have a message (so a new one waits behind it)."""
        marks = ",".join("?" * len(groups))
        rows = conn.execute(
            f"SELECT DISTINCT group_id FROM queue_messages WHERE group_id IN ({marks})",
            tuple(groups),
        )
        return {row[0] for row in rows}

    # ------------------------------------------------------------------ receiving

    def receive(
        self, max_messages: int, wait_time_s: float, visibility_timeout_s: int | None = None
    ) -> list[ReceivedMessage]:
        check_receive(max_messages, wait_time_s, visibility_timeout_s, limit=self.max_receive)
        timeout = visibility_timeout_s
        if timeout is None:
            timeout = self.visibility_timeout_s
        # The wait is measured on the monotonic clock, visibility on the (injectable) queue
        # clock: a test's frozen clock must not make a long poll last forever.
        deadline = time.monotonic() + max(0.0, wait_time_s)
        while True:
            claimed = self._claim(max_messages, timeout)
            remaining = deadline - time.monotonic()
            if claimed or remaining <= 0:
                return claimed
            time.sleep(min(remaining, self._idle_pause()))

    def _idle_pause(self) -> float:
        """Until the next message becomes visible, at most one poll interval."""
        with self._read("poll") as conn:
            (next_visible,) = conn.execute(
                "SELECT MIN(visible_at) FROM queue_messages WHERE is_head = 1"
            ).fetchone()
        if next_visible is None:
            return self.poll_interval_s
        return min(self.poll_interval_s, max(0.001, next_visible - self._clock()))

    def _claim(self, max_messages: int, visibility_timeout_s: int) -> list[ReceivedMessage]:
        now = self._clock()
        with self._read("receive from") as conn:
            # A read first, so idle pollers never take the write lock.
            if not conn.execute(_READY, (now,)).fetchone()[0]:
                return []
        # The rows claimed; their messages are made after the commit, so the write lock is
        # not held for Python work that needs none.
        taken: list[ClaimedRow] = []
        budget: int | None = self.max_receive_bytes  # their bodies' characters still allowed
        # One token for the receive: with the seq it makes each receipt handle, and a later
        # receive of the same message gets a new one (which is what makes an old handle
        # stale). One UPDATE for all the rows claimed, not one per row.
        token = secrets.token_hex(8)
        with self._write("receive from") as conn:
            while len(taken) < max_messages and budget is not None:
                # Read row by row, so bodies past the size bound are never loaded.
                cursor = conn.execute(_CLAIMABLE, (now, max_messages - len(taken)))
                rows, budget = rows_within(cursor, budget, self._max_receive_count, first=not taken)
                cursor.close()
                exhausted = [row for row in rows if row[5] >= self._max_receive_count]
                if exhausted:
                    self._dead_letter_rows(
                        conn,
                        [row[0] for row in exhausted],
                        f"received {self._max_receive_count} times (max_receive_count)",
                        now,
                    )
                fresh = [row for row in rows if row[5] < self._max_receive_count]
                taken.extend(fresh)
                execute_in(
                    conn,
                    _CLAIM,
                    [row[0] for row in fresh],
                    first=(now + visibility_timeout_s, token),
                )
                # Only moving messages to the DLQ can make more messages deliverable.
                if not exhausted:
                    break
        return received_messages(taken, token)

    def _dead_letter_rows(
        self, conn: sqlite3.Connection, seqs: Sequence[int], reason: str, now: float
    ) -> None:
        groups = set()
        for seq in seqs:
            row = conn.execute(
                "DELETE FROM queue_messages WHERE seq = ? RETURNING message_id, body, group_id,"
                " attributes, sent_at, receive_count",
                (seq,),
            ).fetchone()
            if row is None:
                continue
            message_id, body, group, attributes, sent_at, count = row
            attrs = json.loads(attributes) if attributes else {}
            attrs["reason"] = reason
            conn.execute(
                _TO_DLQ,
                (message_id, body, group, json.dumps(attrs), sent_at, count, now),
            )
            groups.add(group)
        self._promote(conn, groups)

    def _promote(self, conn: sqlite3.Connection, groups: set[str | None]) -> None:
        if self.fifo:
            execute_in(conn, _PROMOTE, sorted(group for group in groups if group is not None))

    # ------------------------------------------------------------------ acting on messages

    def delete(self, receipt_handles: Sequence[str]) -> None:
        handles = [parsed for h in receipt_handles if (parsed := parse_receipt(h)) is not None]
        if not handles:
            return
        with self._write("delete from") as conn:
            self._promote(conn, _delete_rows(conn, handles, groups=self.fifo))

    def change_visibility(self, receipt_handle: str, timeout_s: int) -> None:
        check_visibility(timeout_s)
        parsed = parse_receipt(receipt_handle)
        if parsed is None:
            return
        with self._write("change visibility in") as conn:
            # A stale handle (deleted, or received again since) changes nothing.
            conn.execute(
                "UPDATE queue_messages SET visible_at = ? WHERE seq = ? AND receipt = ?",
                (self._clock() + timeout_s, *parsed),
            )

    def dead_letter(self, message: ReceivedMessage, reason: str) -> None:
        """Move the message to the DLQ with `reason`. A message no longer in the queue (already
        deleted or dead-lettered) is left alone."""
        parsed = parse_receipt(message.receipt_handle)
        if parsed is None:
            return
        with self._write("dead-letter in") as conn:
            row = conn.execute(
                "SELECT seq FROM queue_messages WHERE seq = ? AND message_id = ?",
                (parsed[0], message.message_id),
            ).fetchone()
            if row is not None:
                self._dead_letter_rows(conn, [row[0]], reason, self._clock())

    # ------------------------------------------------------------------ operating

    def depth(self) -> QueueDepth:
        now = self._clock()
        with self._read("read the depth of") as conn:
            visible, in_flight, delayed = conn.execute(
                "SELECT COALESCE(SUM(visible_at <= :now), 0),"
                " COALESCE(SUM(visible_at > :now AND receive_count > 0), 0),"
                " COALESCE(SUM(visible_at > :now AND receive_count = 0), 0)"
                " FROM queue_messages",
                {"now": now},
            ).fetchone()
            (dlq_visible,) = conn.execute("SELECT COUNT(*) FROM dlq_messages").fetchone()
        return QueueDepth(
            visible=visible, in_flight=in_flight, delayed=delayed, dlq_visible=dlq_visible
        )

    def peek(self, limit: int, *, dlq: bool = False) -> list[PeekedMessage]:
        table = "dlq_messages" if dlq else "queue_messages"
        with self._read("peek into") as conn:
            rows = conn.execute(
                f"SELECT message_id, body, receive_count, attributes, group_id FROM {table}"
                " ORDER BY seq LIMIT ?",
                (max(0, limit),),
            ).fetchall()
        return [
            PeekedMessage(
                message_id=message_id,
                body=body,
                receive_count=count,
                attributes=json.loads(attributes) if attributes else {},
                group_id=group,
            )
            for message_id, body, count, attributes, group in rows
        ]

    def purge(self, *, dlq: bool = False) -> int | None:
        # Deduplication ids stay: a purge does not reopen the window for resends.
        table = "dlq_messages" if dlq else "queue_messages"
        with self._write("purge") as conn:
            return conn.execute(f"DELETE FROM {table}").rowcount

    def compact(self) -> int:
        """Give the file's free pages back to the file system (after a purge); the bytes freed.
        It holds every writer of the file off while it runs."""
        try:
            before, after = compact(self.path, self._db.busy_timeout_s)
        except sqlite3.Error as exc:
            raise self._error("compact", exc) from exc
        return max(0, before - after)

    def redrive(self) -> RedriveResult:
        """Move every DLQ message to the back of the queue, receive count reset, `reason`
        dropped (it described the DLQ stay)."""
        now = self._clock()
        with self._write("redrive") as conn:
            rows = conn.execute(
                "DELETE FROM dlq_messages RETURNING seq, message_id, body, group_id, attributes,"
                " sent_at"
            ).fetchall()
            rows.sort(key=lambda row: row[0])  # RETURNING order is unspecified
            groups: set[str] = set()
            inserts = []
            for _, message_id, body, group, attributes, sent_at in rows:
                attrs = json.loads(attributes) if attributes else {}
                attrs.pop("reason", None)
                inserts.append(
                    (
                        message_id,
                        body,
                        group if self.fifo else None,
                        json.dumps(attrs) if attrs else None,
                        sent_at,
                        now,
                        0 if self.fifo else 1,
                    )
                )
                if self.fifo and group is not None:
                    groups.add(group)
            conn.executemany(_INSERT, inserts)
            if groups:
                # A redriven group whose earlier messages are gone gets a deliverable head;
                # one with messages still queued keeps its head and its order.
                conn.executemany(
                    "UPDATE queue_messages SET is_head = 1 WHERE seq ="
                    " (SELECT MIN(seq) FROM queue_messages WHERE group_id = ?) AND NOT EXISTS"
                    " (SELECT 1 FROM queue_messages WHERE group_id = ? AND is_head = 1)",
                    [(group, group) for group in groups],
                )
        return RedriveResult(moved=len(rows))


def _delete_rows(
    conn: sqlite3.Connection, handles: Sequence[tuple[int, str]], *, groups: bool
) -> set[str | None]:
    """Delete the rows of (seq, receipt token) handles; with `groups`, the groups of those
    deleted (a FIFO queue promotes their next messages). A handle from an older receive, or
    of a message already deleted, matches nothing: as on SQS, that is not an error (and
    deletes nothing). (`seq IN` lets the planner look rows up by key before matching the
    pairs.) Without `groups` the statement returns no rows: one step of SQLite's for the
    chunk, where each row returned is one more (and one more wait for the GIL)."""
    deleted_groups: set[str | None] = set()
    returning = " RETURNING group_id" if groups else ""
    step = rows_per_statement(conn, 3)  # three parameters a handle
    for start in range(0, len(handles), step):
        chunk = handles[start : start + step]
        marks = ",".join("?" * len(chunk))
        pairs = ",".join("(?, ?)" for _ in chunk)
        rows = conn.execute(
            f"DELETE FROM queue_messages WHERE seq IN ({marks})"
            f" AND (seq, receipt) IN (VALUES {pairs}){returning}",
            [seq for seq, _ in chunk] + [value for handle in chunk for value in handle],
        ).fetchall()
        deleted_groups.update(row[0] for row in rows)
    return deleted_groups
