"""The embedded queue's tables (`queue_*`, `dlq_*`) and their migrations, in order.

Each migration runs once per file (raasctl/migrations.py). Deduplication ids are kept as
the 128-bit BLAKE2 digest of the id (`dedup_digest`), split in two signed 64-bit halves.
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct

from raasctl.migrations import Migrations, execute_script, table_exists

MIGRATIONS = Migrations("queue")

_DIGEST_HALVES = struct.Struct(">qq")


def dedup_digest(dedup_id: str) -> tuple[int, int]:
    """The two signed 64-bit halves of the id's 128-bit BLAKE2 digest (SQLite integers)."""
    return digest_halves(hashlib.blake2b(dedup_id.encode(), digest_size=16).digest())


def digest_halves(digest: bytes) -> tuple[int, int]:
    head, tail = _DIGEST_HALVES.unpack(digest)
    return head, tail


@MIGRATIONS
def m001_messages_and_dedup(conn: sqlite3.Connection) -> None:
    """The first layout. (The very first files also had an unused `dedup_id` column in both
    message tables and kept ids as text in queue_dedup; m002 reads either.)"""
    execute_script(
        conn,
        """
CREATE TABLE IF NOT EXISTS queue_messages (
    seq INTEGER PRIMARY KEY,            -- send order
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    group_id TEXT,                      -- NULL on a standard queue
    attributes TEXT,                    -- JSON object, NULL when empty
    sent_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT,                       -- token of the latest receive, NULL before the first
    is_head INTEGER NOT NULL            -- deliverable: always 1 on a standard queue
);
-- Matches the receive query: deliverable messages, earliest visible first. Partial, so the
-- messages waiting behind their group's head cost nothing here.
CREATE INDEX IF NOT EXISTS queue_messages_ready ON queue_messages (visible_at, seq)
    WHERE is_head = 1;
CREATE INDEX IF NOT EXISTS queue_messages_group ON queue_messages (group_id, seq);
CREATE TABLE IF NOT EXISTS queue_dedup (
    dedup_key BLOB PRIMARY KEY,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dlq_messages (
    seq INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    group_id TEXT,
    attributes TEXT,
    sent_at REAL NOT NULL,
    receive_count INTEGER NOT NULL,
    dead_lettered_at REAL NOT NULL
);
""",
    )


@MIGRATIONS
def m002_dedup_digest_halves(conn: sqlite3.Connection) -> None:
    """Deduplication ids as a digest in two 64-bit halves, the first half the rowid.

    A digest lands at a random place in a B-tree, so inserting each one as it is sent would
    dirty a page of the table (written to the WAL at every commit) per message, most of the
    cost of a send. Instead, ids sent are appended to queue_dedup_recent, and every
    DEDUP_MERGE_ROWS ids they move to queue_dedup_ids in digest order, which touches each page
    once. A different id whose first half is taken (about one pair in 10^19) is sent but not
    recorded: at worst a resend of it is delivered twice, which at-least-once delivery
    allows; no distinct message is ever dropped.

    The ids queue_dedup held move over, so the deduplication window survives the upgrade.
    """
    execute_script(
        conn,
        """
CREATE TABLE IF NOT EXISTS queue_dedup_ids (
    digest_head INTEGER PRIMARY KEY,
    digest_tail INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
-- Ids sent since the last merge, in send order. Every SqliteQueue keeps a copy in memory
-- (at most DEDUP_MERGE_ROWS), brought up to date at the start of each send transaction.
CREATE TABLE IF NOT EXISTS queue_dedup_recent (
    seq INTEGER PRIMARY KEY,
    digest_head INTEGER NOT NULL,
    digest_tail INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS queue_dedup_merged (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    through_seq INTEGER NOT NULL        -- queue_dedup_recent rows up to here were merged
);
INSERT OR IGNORE INTO queue_dedup_merged VALUES (1, 0);
""",
    )
    if not table_exists(conn, "queue_dedup"):
        return
    kept = conn.execute("SELECT * FROM queue_dedup").fetchall()
    rows = []
    for key, expires_at in kept:
        # The digest itself, or (in the very first layout) the id as text.
        head, tail = digest_halves(key) if isinstance(key, bytes) else dedup_digest(key)
        rows.append((head, tail, expires_at))
    conn.executemany(
        "INSERT INTO queue_dedup_ids (digest_head, digest_tail, expires_at) VALUES (?, ?, ?)"
        " ON CONFLICT (digest_head) DO UPDATE SET digest_tail = excluded.digest_tail,"
        " expires_at = excluded.expires_at WHERE excluded.expires_at > queue_dedup_ids.expires_at",
        rows,
    )
    conn.execute("DROP TABLE queue_dedup")
