"""Ordered, recorded SQLite migrations (raasctl/migrations.py) for the queue, state and ledger
that share the environment's file: each applied once, recorded, old layouts upgraded without
losing rows, and safe when two processes open a file at once."""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from raasctl.envelope import Envelope
from raasctl.errors import QueueError, StateError
from raasctl.migrations import Migrations, applied, migrate, without_rowid
from raasctl.queues import sqlite_schema
from raasctl.queues.base import OutgoingMessage
from raasctl.queues.sqlite import SqliteQueue
from raasctl.sinks import sqlite as ledger_module
from raasctl.sinks.base import Applied
from raasctl.sinks.sqlite import SqliteLedger
from raasctl.sqlite import Database
from raasctl.state import sqlite as state_module
from raasctl.state.sqlite import SqliteState

COMPONENTS = {
    "queue": sqlite_schema.MIGRATIONS,
    "state": state_module.MIGRATIONS,
    "ledger": ledger_module.MIGRATIONS,
}
DEPOSIT = {"deposit_id": "D-1", "amount": "10.50", "currency": "USD"}

# The layout of files made before migrations were recorded: the queue's as of its digest
# dedup table (dropped on every open by the version after), state and ledger as first made.
OLD_LAYOUT = """
CREATE TABLE queue_messages (
    seq INTEGER PRIMARY KEY, message_id TEXT NOT NULL, body TEXT NOT NULL, group_id TEXT,
    attributes TEXT, sent_at REAL NOT NULL, visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0, receipt TEXT, is_head INTEGER NOT NULL
);
CREATE INDEX queue_messages_ready ON queue_messages (visible_at, seq) WHERE is_head = 1;
CREATE INDEX queue_messages_group ON queue_messages (group_id, seq);
CREATE TABLE queue_dedup (dedup_key BLOB PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE dlq_messages (
    seq INTEGER PRIMARY KEY, message_id TEXT NOT NULL, body TEXT NOT NULL, group_id TEXT,
    attributes TEXT, sent_at REAL NOT NULL, receive_count INTEGER NOT NULL,
    dead_lettered_at REAL NOT NULL
);
CREATE TABLE state_runs (
    run_id TEXT PRIMARY KEY, cron TEXT NOT NULL, env TEXT NOT NULL, mock INTEGER NOT NULL,
    created_at TEXT NOT NULL, entries INTEGER NOT NULL DEFAULT 0,
    enqueued INTEGER NOT NULL DEFAULT 0, invalid INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0, total INTEGER,
    succeeded INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
    dead_lettered INTEGER NOT NULL DEFAULT 0, retries INTEGER NOT NULL DEFAULT 0,
    started_at TEXT, finished_at TEXT
);
CREATE INDEX state_runs_created ON state_runs (created_at DESC, run_id DESC);
CREATE TABLE state_applied (key TEXT PRIMARY KEY, run_id TEXT NOT NULL, applied_at TEXT NOT NULL);
CREATE TABLE state_locks (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at TEXT NOT NULL);
CREATE TABLE ledger_client_deposits (
    deposit_id TEXT PRIMARY KEY, deposit_reference TEXT, customer TEXT, customer_id TEXT,
    company TEXT, currency TEXT, amount TEXT, deposit_date TEXT, status TEXT,
    applied_invoices TEXT, run_id TEXT NOT NULL, entry_key TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE ledger_client_bills (
    invoice_id TEXT PRIMARY KEY, invoice_number TEXT, customer_id TEXT, currency TEXT,
    total_amount TEXT, amount_due TEXT, payment_status TEXT, payment_date TEXT,
    run_id TEXT NOT NULL, entry_key TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE TABLE ledger_lsp_bills (
    supplier_invoice_id TEXT PRIMARY KEY, payment_id TEXT, supplier TEXT, supplier_id TEXT,
    currency TEXT, payment_date TEXT, payment_status TEXT, on_hold INTEGER,
    invoice_number TEXT, amount_paid TEXT, invoice_status TEXT, run_id TEXT NOT NULL,
    entry_key TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE TABLE ledger_applications (
    id INTEGER PRIMARY KEY AUTOINCREMENT, entry_key TEXT NOT NULL UNIQUE, cron TEXT NOT NULL,
    table_name TEXT NOT NULL, record_id TEXT NOT NULL, run_id TEXT NOT NULL,
    mock INTEGER NOT NULL, applied_at TEXT NOT NULL
);
"""
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def envelope(key: str = "clientDepositUpdate:run-1:0") -> Envelope:
    return Envelope.new(cron="clientDepositUpdate", run_id="run-1", key=key, payload=DEPOSIT)


def message(body: str, dedup: str) -> OutgoingMessage:
    return OutgoingMessage(body, group_id="G1", dedup_id=dedup)


def old_layout_file(path: Path, dedup_key: bytes | str | None = None) -> None:
    """A file of the old layout with a row in every table that has rows to lose."""
    now = time.time()
    key = dedup_key if dedup_key is not None else _blake(b"dedup-a")
    conn = sqlite3.connect(path)
    conn.executescript(OLD_LAYOUT)
    conn.execute(
        "INSERT INTO queue_messages VALUES (1, 'm-1', 'waiting', 'G1', NULL, ?, ?, 0, NULL, 1)",
        (now, now),
    )
    conn.execute("INSERT INTO queue_dedup VALUES (?, ?)", (key, now + 300))
    conn.execute(
        "INSERT INTO dlq_messages VALUES (1, 'm-0', 'dead', 'G0', NULL, ?, 5, ?)", (now, now)
    )
    conn.execute(
        "INSERT INTO state_runs (run_id, cron, env, mock, created_at, entries, enqueued, total,"
        " succeeded) VALUES ('run-1', 'clientDepositUpdate', 'local', 0, ?, 2, 2, 2, 1)",
        (NOW.isoformat(timespec="microseconds"),),
    )
    conn.execute(
        "INSERT INTO state_applied VALUES ('clientDepositUpdate:run-1:0', 'run-1', ?)",
        (NOW.isoformat(),),
    )
    conn.execute("INSERT INTO state_locks VALUES ('cron', 'me', '2099-01-01T00:00:00+00:00')")
    conn.execute(
        "INSERT INTO ledger_client_deposits (deposit_id, amount, currency, run_id, entry_key,"
        " updated_at) VALUES ('D-1', '10.50', 'USD', 'run-1', 'clientDepositUpdate:run-1:0', ?)",
        (NOW.isoformat(),),
    )
    conn.execute(
        "INSERT INTO ledger_applications (entry_key, cron, table_name, record_id, run_id, mock,"
        " applied_at) VALUES ('clientDepositUpdate:run-1:0', 'clientDepositUpdate',"
        " 'ledger_client_deposits', 'D-1', 'run-1', 0, ?)",
        (NOW.isoformat(),),
    )
    conn.commit()
    conn.close()


def _blake(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def open_everything(path: Path) -> tuple[SqliteQueue, SqliteState, SqliteLedger]:
    """The three adapters on one file, each having opened it (and so migrated its tables)."""
    queue, state, ledger = SqliteQueue(path), SqliteState(path), SqliteLedger(path)
    queue.depth()
    state.get_run("none")
    ledger.counts()
    return queue, state, ledger


def close(*adapters: Any) -> None:
    for adapter in adapters:
        adapter.close()


def records(path: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    try:
        return {name: [r.name for r in applied(conn, name)] for name in COMPONENTS}
    finally:
        conn.close()


# ---------------------------------------------------------------- applied once, recorded


def test_each_migration_is_applied_once_and_recorded_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "local.db"
    close(*open_everything(path))
    close(*open_everything(path))  # a second open applies nothing again

    assert records(path) == {name: m.names for name, m in COMPONENTS.items()}
    conn = sqlite3.connect(path, isolation_level=None)
    for name, migrations in COMPONENTS.items():
        record = applied(conn, name)
        assert [r.step for r in record] == list(range(1, len(migrations.names) + 1))
        assert all(datetime.fromisoformat(r.applied_at).tzinfo is not None for r in record)
        assert migrate(conn, migrations) == []
    conn.close()


def test_a_current_file_runs_nothing_and_needs_no_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "local.db"
    close(*open_everything(path))
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process writing at this moment
    try:
        for migrations in COMPONENTS.values():
            # No busy timeout: waiting for the write lock would fail at once.
            conn = Database(path, migrations, busy_timeout_s=0).connection()
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_failed_migration_leaves_neither_its_changes_nor_a_record(tmp_path: Path) -> None:
    path = tmp_path / "local.db"
    migrations = Migrations("demo")
    broken = True

    @migrations
    def m001_first(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE demo_a (x)")

    @migrations
    def m002_second(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE demo_b (x)")
        if broken:
            raise sqlite3.OperationalError("disk I/O error")

    conn = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        migrate(conn, migrations)
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert names == set() and not conn.in_transaction

    broken = False
    assert migrate(conn, migrations) == ["m001_first", "m002_second"]
    assert [r.name for r in applied(conn, "demo")] == ["m001_first", "m002_second"]
    conn.close()


def test_a_migration_registered_twice_is_refused() -> None:
    migrations = Migrations("demo")

    def m001_first(conn: sqlite3.Connection) -> None: ...

    migrations(m001_first)
    with pytest.raises(ValueError, match="m001_first is registered twice"):
        migrations(m001_first)


def test_a_file_changed_by_a_newer_version_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "local.db"
    close(*open_everything(path))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE VIEW queue_migration_m099_future AS SELECT 99 AS step, 'x', 'y'")
    conn.execute("CREATE VIEW state_migration_m099_future AS SELECT 99 AS step, 'x', 'y'")
    conn.close()

    with pytest.raises(QueueError, match=r"changed by a newer raasctl \(migration m099_future\)"):
        SqliteQueue(path).depth()
    with pytest.raises(StateError, match="state tables were changed by a newer raasctl"):
        SqliteState(path).get_run("r")


# ---------------------------------------------------------------- old layouts


def test_an_old_layout_file_is_upgraded_without_losing_rows(tmp_path: Path) -> None:
    path = tmp_path / "local.db"
    old_layout_file(path)

    queue, state, ledger = open_everything(path)

    assert records(path) == {name: m.names for name, m in COMPONENTS.items()}
    # Queue: the waiting and dead-lettered messages, and the deduplication window.
    depth = queue.depth()
    assert (depth.visible, depth.dlq_visible) == (1, 1)
    assert queue.send_batch([message("resent", "dedup-a")]).duplicates == [0]
    assert [m.body for m in queue.receive(10, 0)] == ["waiting"]
    # State: the run (and its new error field), the idempotency record, the lock.
    run = state.get_run("run-1")
    assert run is not None
    assert (run.entries, run.total, run.succeeded, run.created_at) == (2, 2, 1, NOW)
    assert run.error is None
    assert state.is_applied("clientDepositUpdate:run-1:0")
    assert not state.acquire_lock("cron", "someone else", 60, NOW)
    finished = state.finish_enqueue(
        "run-1", entries=2, enqueued=2, invalid=0, duplicates=0, error="stopped"
    )
    assert finished.error == "stopped"
    # Ledger: the record and its application, so the entry is not applied twice.
    assert ledger.counts() == {
        "client_deposits": 1,
        "client_bills": 0,
        "lsp_bills": 0,
        "applications": 1,
    }
    assert ledger.apply(envelope()) is Applied.ALREADY_APPLIED
    assert ledger.apply(envelope("clientDepositUpdate:run-1:1")) is Applied.APPLIED
    close(queue, state, ledger)

    conn = sqlite3.connect(path)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "queue_dedup" not in tables
    assert {"queue_dedup_ids", "queue_dedup_recent", "queue_dedup_merged"} <= tables
    for table in ("state_applied", "ledger_applications", "ledger_client_deposits"):
        assert without_rowid(conn, table), table
    assert "id" not in [row[1] for row in conn.execute("PRAGMA table_info(ledger_applications)")]
    conn.close()


def test_the_first_queue_layout_keeps_its_text_dedup_ids(tmp_path: Path) -> None:
    # The very first files kept ids as text (and an unused dedup_id column on messages).
    path = tmp_path / "local.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE queue_dedup (dedup_id TEXT PRIMARY KEY, expires_at REAL NOT NULL)"
        " WITHOUT ROWID;"
    )
    conn.execute("INSERT INTO queue_dedup VALUES ('dedup-a', ?)", (time.time() + 300,))
    conn.commit()
    conn.close()

    queue = SqliteQueue(path)
    assert queue.send_batch([message("resent", "dedup-a")]).duplicates == [0]
    assert queue.send_batch([message("new", "dedup-b")]).sent == [0]
    queue.close()


def test_opening_a_file_of_the_previous_layout_keeps_its_dedup_ids(tmp_path: Path) -> None:
    # A file made by the version before migrations: current tables, no record. (That
    # version dropped the older queue_dedup table on every open.)
    path = tmp_path / "local.db"
    queue = SqliteQueue(path, dedup_merge_rows=1)
    queue.send_batch([message("a", "dedup-a")])  # merged into queue_dedup_ids at once
    queue.close()
    conn = sqlite3.connect(path)
    for view in [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='view'")]:
        conn.execute(f'DROP VIEW "{view}"')
    conn.commit()
    conn.close()

    again = SqliteQueue(path)
    assert again.send_batch([message("a again", "dedup-a")]).duplicates == [0]
    assert records(path)["queue"] == sqlite_schema.MIGRATIONS.names
    again.close()


# ---------------------------------------------------------------- two processes at once


def _open_in_process(path: str, start: Any, out: str) -> None:
    start.wait(30)
    queue, state, ledger = open_everything(Path(path))
    queue.send_batch([message(f"from {out}", f"dedup-{out}")])
    close(queue, state, ledger)
    Path(out).write_text("ok")


@pytest.mark.parametrize("layout", ["fresh", "old"])
def test_two_processes_opening_a_file_at_once_migrate_it_once(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "local.db"
    if layout == "old":
        old_layout_file(path)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    outputs = [tmp_path / f"process-{n}.txt" for n in range(2)]
    processes = [
        context.Process(target=_open_in_process, args=(str(path), start, str(out)))
        for out in outputs
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0

    assert [out.read_text() for out in outputs] == ["ok", "ok"]
    assert records(path) == {name: m.names for name, m in COMPONENTS.items()}
    queue, state, ledger = open_everything(path)
    expected_messages = 2 + (1 if layout == "old" else 0)
    assert queue.depth().visible == expected_messages
    assert ledger.counts()["applications"] == (1 if layout == "old" else 0)
    close(queue, state, ledger)
    conn = sqlite3.connect(path)
    views = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'")]
    assert len(views) == len(set(views)) == sum(len(m.names) for m in COMPONENTS.values())
    conn.close()
