"""The embedded sink: a ledger of accounting records in the environment's SQLite file.

Tables (prefixed `ledger_`): one per kind of record, each row upserted by the record's id, and
`ledger_applications`, one row per applied entry key. The application row and the record
change commit together, so an entry key is applied exactly once however many workers receive
its message; load tests count applications to see that every copy arrived.

When the environment's SQLite state lives in the same file (the default), the apply writes
the state's idempotency record in that transaction too: the record exists exactly when the
apply does, and a worker on that state does not write it again with the outcome
(`records_applied_in`). The worker hands the ledger a whole receive at once (`apply_batch`):
one transaction for up to 500 entries, where commits bound a worker's rate.

Amounts are stored as TEXT holding the exact decimal (never a float); dates as the ISO
strings the job mappers produce. The tables come from the migrations below, each applied once
per file (raasctl/migrations.py).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cached_property
from pathlib import Path
from typing import Any

from raasctl.envelope import Envelope
from raasctl.errors import SinkError
from raasctl.migrations import Migrations, execute_script, rebuild, table_exists, without_rowid
from raasctl.sinks.base import Applied, Sink
from raasctl.sqlite import Database, execute_rows, rows_in
from raasctl.state.base import State
from raasctl.state.sqlite import SqliteState, holds_state
from raasctl.state.sqlite_entries import record_applied_in

MIGRATIONS = Migrations("ledger")

_DEPOSITS_COLUMNS = """
    deposit_id        TEXT PRIMARY KEY,
    deposit_reference TEXT,
    customer          TEXT,
    customer_id       TEXT,
    company           TEXT,
    currency          TEXT,
    amount            TEXT,
    deposit_date      TEXT,
    status            TEXT,
    applied_invoices  TEXT,  -- JSON array of invoice ids
    run_id            TEXT NOT NULL,
    entry_key         TEXT NOT NULL,
    updated_at        TEXT NOT NULL
"""
_BILLS_COLUMNS = """
    invoice_id     TEXT PRIMARY KEY,
    invoice_number TEXT,
    customer_id    TEXT,
    currency       TEXT,
    total_amount   TEXT,
    amount_due     TEXT,
    payment_status TEXT,
    payment_date   TEXT,
    run_id         TEXT NOT NULL,
    entry_key      TEXT NOT NULL,
    updated_at     TEXT NOT NULL
"""
_LSP_BILLS_COLUMNS = """
    supplier_invoice_id TEXT PRIMARY KEY,
    payment_id          TEXT,
    supplier            TEXT,
    supplier_id         TEXT,
    currency            TEXT,
    payment_date        TEXT,
    payment_status      TEXT,
    on_hold             INTEGER,
    invoice_number      TEXT,
    amount_paid         TEXT,
    invoice_status      TEXT,
    run_id              TEXT NOT NULL,
    entry_key           TEXT NOT NULL,
    updated_at          TEXT NOT NULL
"""
_APPLICATIONS_COLUMNS = """
    entry_key  TEXT PRIMARY KEY,
    cron       TEXT NOT NULL,
    table_name TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    mock       INTEGER NOT NULL,
    applied_at TEXT NOT NULL
"""


@MIGRATIONS
def m001_records_and_applications(conn: sqlite3.Connection) -> None:
    """The first layout: rowid tables, and an `id` column numbering the applications."""
    execute_script(
        conn,
        f"""
CREATE TABLE IF NOT EXISTS ledger_client_deposits ({_DEPOSITS_COLUMNS});
CREATE TABLE IF NOT EXISTS ledger_client_bills ({_BILLS_COLUMNS});
CREATE TABLE IF NOT EXISTS ledger_lsp_bills ({_LSP_BILLS_COLUMNS});
CREATE TABLE IF NOT EXISTS ledger_applications (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_key  TEXT NOT NULL UNIQUE,
    cron       TEXT NOT NULL,
    table_name TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    mock       INTEGER NOT NULL,
    applied_at TEXT NOT NULL
);
""",
    )


@MIGRATIONS
def m002_without_rowid(conn: sqlite3.Connection) -> None:
    """Each table keyed by its record id (or entry key) WITHOUT ROWID: one B-tree per table,
    so an apply writes three pages to the WAL (the record, its application, the state's
    idempotency record) where rowid tables, each with an index on its key, made it seven.
    The applications lose their `id` (nothing read it); every row is kept."""
    for table, table_columns in (
        ("ledger_client_deposits", _DEPOSITS_COLUMNS),
        ("ledger_client_bills", _BILLS_COLUMNS),
        ("ledger_lsp_bills", _LSP_BILLS_COLUMNS),
        ("ledger_applications", _APPLICATIONS_COLUMNS),
    ):
        if not without_rowid(conn, table):
            rebuild(conn, table, f"CREATE TABLE {{table}} ({table_columns}) WITHOUT ROWID")
    if table_exists(conn, "sqlite_sequence"):  # AUTOINCREMENT's counter, no longer used
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'ledger_applications'")


def _text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    if isinstance(value, bool | dict | list):
        raise ValueError(f"expected text, got {type(value).__name__}")
    return str(value)


# Decimals that Decimal's str gives back unchanged: no sign but minus, no leading zeros, no
# exponent, and at most six places (past them str() writes an exponent for small numbers).
_PLAIN_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]{1,6})?")


def _amount(value: Any) -> str | None:
    """The exact decimal as text; a float would already have lost cents."""
    if value is None:
        return None
    if type(value) is str and _PLAIN_DECIMAL.fullmatch(value):
        return value  # what str(Decimal(value)) gives, without making one
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError(f"expected a decimal amount, got {type(value).__name__}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal amount") from None
    if not amount.is_finite():
        raise ValueError(f"{value!r} is not a decimal amount")
    return str(amount)


def _flag(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return int(value)


def _text_list(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("expected a list of strings")
    return json.dumps(value)


@dataclass(frozen=True)
class _Table:
    name: str
    id_field: str
    columns: dict[str, Callable[[Any], Any]]  # payload field -> conversion to the column value

    @cached_property
    def conversions(self) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
        return tuple(self.columns.items())

    @cached_property
    def upsert(self) -> str:
        """Insert records (`{values}`: their VALUES list, raasctl/sqlite.py `execute_rows`),
        or update every column of one but its id."""
        columns = [self.id_field, *self.columns, "run_id", "entry_key", "updated_at"]
        updates = ", ".join(f"{name} = excluded.{name}" for name in columns[1:])
        return (
            f"INSERT INTO {self.name} ({', '.join(columns)}) VALUES {{values}}"
            f" ON CONFLICT ({self.id_field}) DO UPDATE SET {updates}"
        )


_DEPOSITS = _Table(
    "ledger_client_deposits",
    "deposit_id",
    {
        "deposit_reference": _text,
        "customer": _text,
        "customer_id": _text,
        "company": _text,
        "currency": _text,
        "amount": _amount,
        "deposit_date": _text,
        "status": _text,
        "applied_invoices": _text_list,
    },
)
_BILLS = _Table(
    "ledger_client_bills",
    "invoice_id",
    {
        "invoice_number": _text,
        "customer_id": _text,
        "currency": _text,
        "total_amount": _amount,
        "amount_due": _amount,
        "payment_status": _text,
        "payment_date": _text,
    },
)
_LSP_BILLS = _Table(
    "ledger_lsp_bills",
    "supplier_invoice_id",
    {
        "payment_id": _text,
        "supplier": _text,
        "supplier_id": _text,
        "currency": _text,
        "payment_date": _text,
        "payment_status": _text,
        "on_hold": _flag,
        "invoice_number": _text,
        "amount_paid": _amount,
        "invoice_status": _text,
    },
)
TABLES_BY_CRON: dict[str, _Table] = {
    "clientDepositUpdate": _DEPOSITS,
    "clientBillPaidStatus": _BILLS,
    "clientBillUnpaidStatus": _BILLS,
    "lspBillUpdateStatus": _LSP_BILLS,
}


_INSERT_APPLICATION = (
    "INSERT INTO ledger_applications (entry_key, cron, table_name, record_id,"
    " run_id, mock, applied_at) VALUES {values}"
)


# An envelope to apply: its index in the batch, key, table, application row and record row.
_Row = tuple[int, str, "_Table", tuple[Any, ...], tuple[Any, ...]]


@dataclass(frozen=True)
class _Prepared:
    """A batch ready to write: per envelope Applied.APPLIED (until the write says whether it
    was applied before) or the SinkError of a payload that cannot be stored, and the rows."""

    results: list[Applied | SinkError]
    rows: list[_Row]
    applied_at: datetime


def _applied_keys(conn: sqlite3.Connection, keys: list[str]) -> set[str]:
    sql = "SELECT entry_key FROM ledger_applications WHERE entry_key IN ({marks})"
    return {key for (key,) in rows_in(conn, sql, keys)}


class SqliteLedger(Sink):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Database(path, MIGRATIONS)
        self._holds_state: bool | None = None  # known at the first apply

    batches = True  # a receive's messages in one transaction: commits bound the rate

    def apply(self, envelope: Envelope) -> Applied:
        result = self._apply_in_one([envelope])[0]
        if isinstance(result, SinkError):
            raise result
        return result

    def apply_batch(self, envelopes: Sequence[Envelope]) -> list[SinkError | None]:
        return self.prepare_batch(envelopes)()

    def prepare_batch(self, envelopes: Sequence[Envelope]) -> Callable[[], list[SinkError | None]]:
        # This thread's connection is opened now: opening one sets up the file's schema,
        # which inside a transaction of another connection would wait for its write lock.
        self.connect()
        prepared = self._prepare(envelopes)

        def apply() -> list[SinkError | None]:
            results = self._write(prepared)
            return [result if isinstance(result, SinkError) else None for result in results]

        return apply

    def _apply_in_one(self, envelopes: Sequence[Envelope]) -> list[Applied | SinkError]:
        """Apply the envelopes in one transaction; per envelope, how (or the error: a
        permanent one for a payload that cannot be stored, a retryable one for all when the
        transaction fails)."""
        return self._write(self._prepare(envelopes))

    def _prepare(self, envelopes: Sequence[Envelope]) -> _Prepared:
        """Every statement's parameters, made before the transaction, so that the file's
        write lock is held for SQLite's work only."""
        results: list[Applied | SinkError] = []
        applied_at = datetime.now(UTC)
        now = applied_at.isoformat(timespec="microseconds")
        rows: list[_Row] = []
        for index, envelope in enumerate(envelopes):
            try:
                table, record_id, values = _row(envelope)
            except SinkError as exc:
                results.append(exc)
                continue
            results.append(Applied.APPLIED)
            key, run_id = envelope.key, envelope.run_id
            application = (key, envelope.cron, table.name, record_id, run_id, int(envelope.mock))
            rows.append(
                (index, key, table, (*application, now), (record_id, *values, run_id, key, now))
            )
        return _Prepared(results, rows, applied_at)

    def _write(self, prepared: _Prepared) -> list[Applied | SinkError]:
        results, rows, applied_at = list(prepared.results), prepared.rows, prepared.applied_at
        try:
            records_applied = self._records_applied()
            with self._db.transaction() as conn:
                # Which keys are applied already, in one read under the write lock; the rest
                # are written one multi-row statement per kind, not row by row.
                known = _applied_keys(conn, [row[1] for row in rows])
                fresh = []
                for row in rows:
                    if row[1] in known:
                        results[row[0]] = Applied.ALREADY_APPLIED
                        continue
                    known.add(row[1])
                    fresh.append(row)
                execute_rows(conn, _INSERT_APPLICATION, [row[3] for row in fresh])
                for table in {row[2].name: row[2] for row in fresh}.values():
                    execute_rows(conn, table.upsert, [row[4] for row in fresh if row[2] is table])
                if records_applied:
                    # Also those applied before, whose record a crash may have missed: every
                    # apply that succeeds leaves one (`records_applied_in`).
                    record_applied_in(conn, [(row[1], row[3][4]) for row in rows], applied_at)
        except sqlite3.Error as exc:
            # Lock timeouts and I/O errors pass; the messages come back after a backoff.
            error = SinkError(f"SQLite ledger {self.path}: {exc}", retryable=True)
            return [result if isinstance(result, SinkError) else error for result in results]
        return results

    def connect(self) -> None:
        with suppress(sqlite3.Error):  # left for the apply to meet and report
            self._records_applied()

    def records_applied_in(self, state: State) -> bool:
        return (
            isinstance(state, SqliteState)
            and os.path.realpath(state.path) == os.path.realpath(self.path)
            and self._records_applied()
        )

    def _records_applied(self) -> bool:
        # Asked once: in the worker the state has made its tables (is_applied) before the
        # first apply. Should it not have, the worker writes the record itself as usual.
        if self._holds_state is None:
            self._holds_state = holds_state(self._db.connection())
        return self._holds_state

    def counts(self) -> dict[str, int]:
        """Rows per ledger table and applied entry keys, for tests and the CLI."""
        names = {
            "client_deposits": _DEPOSITS.name,
            "client_bills": _BILLS.name,
            "lsp_bills": _LSP_BILLS.name,
            "applications": "ledger_applications",
        }
        try:
            conn = self._db.connection()
            return {
                label: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for label, table in names.items()
            }
        except sqlite3.Error as exc:
            raise SinkError(f"SQLite ledger {self.path}: {exc}", retryable=True) from exc

    def close(self) -> None:
        self._db.close()


def _row(envelope: Envelope) -> tuple[_Table, str, list[Any]]:
    """The table, record id and column values (in the table's column order) for an
    envelope; a payload that cannot be applied is a permanent failure (it goes to the DLQ
    with the reason)."""
    table = TABLES_BY_CRON.get(envelope.cron)
    if table is None:
        raise SinkError(f"no ledger table for cron {envelope.cron!r}", retryable=False)
    payload = envelope.payload
    record_id = payload.get(table.id_field)
    if record_id is None or isinstance(record_id, bool | dict | list) or str(record_id) == "":
        raise SinkError(
            f"{envelope.cron} payload lacks {table.id_field} (entry {envelope.key})",
            retryable=False,
        )
    get = payload.get
    values: list[Any] = []
    try:
        for name, convert in table.conversions:
            values.append(convert(get(name)))
    except ValueError as exc:
        raise SinkError(
            f"{envelope.cron} payload field {name}: {exc} (entry {envelope.key})",
            retryable=False,
        ) from None
    return table, str(record_id), values
