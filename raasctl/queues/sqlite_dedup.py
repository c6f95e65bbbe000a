"""The embedded queue's deduplication window: which ids were sent within it.

Ids are kept as digests (queues/sqlite_schema.py: `dedup_digest`, and why ids are appended
to queue_dedup_recent and merged into queue_dedup_ids now and then).
"""

from __future__ import annotations

import sqlite3

# A log row wins over an expired digest with its head, and over its own id (a later send).
_MERGE = (
    "INSERT INTO queue_dedup_ids (digest_head, digest_tail, expires_at)"
    " SELECT digest_head, digest_tail, expires_at FROM queue_dedup_recent"
    " WHERE expires_at > :now ORDER BY digest_head, seq"
    " ON CONFLICT (digest_head) DO UPDATE SET digest_tail = excluded.digest_tail,"
    " expires_at = excluded.expires_at"
    " WHERE queue_dedup_ids.expires_at <= :now"
    " OR queue_dedup_ids.digest_tail = excluded.digest_tail"
)

# Ids appended to queue_dedup_recent before they are merged into queue_dedup_ids (see
# queues/sqlite_schema.py): the more, the fewer pages a merge touches per id, and the more
# memory each queue's copy of the recent ids takes (about 200 bytes an id).
DEDUP_MERGE_ROWS = 50_000


class DedupWindow:
    """The deduplication ids of one queue file, as one SqliteQueue sees them (see
    queues/sqlite_schema.py).

    Used only inside a send's write transaction, so no other writer changes the tables
    between `live` and `record`."""

    def __init__(self, window_s: float, merge_rows: int) -> None:
        self.window_s = window_s
        self.merge_rows = merge_rows
        # A copy of queue_dedup_recent: digest head -> (tail, expires_at), and how far it goes.
        self._recent: dict[int, tuple[int, float]] = {}
        self._synced_seq = 0
        self._merged_seq = -1  # the merge the copy follows; -1: none yet, load it all
        self._next_sweep = 0.0

    def forget(self) -> None:
        """Drop the copy (after a rolled-back transaction): the next send loads it again."""
        self._recent.clear()
        self._merged_seq = -1

    def live(self, conn: sqlite3.Connection, heads: list[int], now: float) -> dict[int, int]:
        """Digest head -> tail of the ids sent within the window, among `heads`."""
        self._sync(conn)
        marks = ",".join("?" * len(heads))
        live: dict[int, int] = dict(
            conn.execute(
                "SELECT digest_head, digest_tail FROM queue_dedup_ids"
                f" WHERE digest_head IN ({marks}) AND expires_at > ?",
                (*heads, now),
            ).fetchall()
        )
        recent = self._recent
        for head in heads:
            entry = recent.get(head)
            if entry is not None and entry[1] > now:
                live[head] = entry[0]
        return live

    def record(
        self,
        conn: sqlite3.Connection,
        digests: list[tuple[int, int]],
        expires_at: float,
        now: float,
    ) -> None:
        """Remember `digests` (head, tail) until `expires_at`; merge now and then."""
        seq = self._synced_seq
        rows = []
        for head, tail in digests:
            seq += 1
            rows.append((seq, head, tail, expires_at))
            self._recent[head] = (tail, expires_at)
        conn.executemany("INSERT INTO queue_dedup_recent VALUES (?, ?, ?, ?)", rows)
        self._synced_seq = seq
        if len(self._recent) >= self.merge_rows or now >= self._next_sweep:
            self._merge(conn, now)

    def _sync(self, conn: sqlite3.Connection) -> None:
        (merged,) = conn.execute("SELECT through_seq FROM queue_dedup_merged").fetchone()
        if merged != self._merged_seq:  # merged by another queue (or never loaded)
            self._recent.clear()
            self._merged_seq = self._synced_seq = merged
        rows = conn.execute(
            "SELECT seq, digest_head, digest_tail, expires_at FROM queue_dedup_recent"
            " WHERE seq > ? ORDER BY seq",
            (self._synced_seq,),
        ).fetchall()
        for _, head, tail, expires_at in rows:
            self._recent[head] = (tail, expires_at)
        if rows:
            self._synced_seq = rows[-1][0]

    def _merge(self, conn: sqlite3.Connection, now: float) -> None:
        conn.execute(_MERGE, {"now": now})
        conn.execute("DELETE FROM queue_dedup_recent")
        conn.execute("UPDATE queue_dedup_merged SET through_seq = ?", (self._synced_seq,))
        self._recent.clear()
        self._merged_seq = self._synced_seq
        if now >= self._next_sweep:
            # Expired digests are ignored anyway; sweeping now and then keeps the table small.
            conn.execute("DELETE FROM queue_dedup_ids WHERE expires_at <= ?", (now,))
            self._next_sweep = now + max(1.0, self.window_s / 5)
