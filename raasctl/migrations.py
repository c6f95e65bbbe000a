"""Ordered, recorded schema migrations for the environment's SQLite file.

The embedded queue, state and ledger share one file, and each keeps its own ordered list of
migrations (after simonw/llm's `llm/migrations.py`: numbered functions registered with a
decorator, in the order they are defined):

    MIGRATIONS = Migrations("state")

    @MIGRATIONS
    def m002_run_error(conn: sqlite3.Connection) -> None:
        add_column(conn, "state_runs", "error TEXT")

`migrate()` applies the ones a file has not had yet, in order, each once, in one
`BEGIN IMMEDIATE` transaction, so two processes opening the file at once apply them once
between them (the second finds them recorded when it gets the write lock). A file made by the
current version runs nothing; its record is read without taking the write lock.

The record of a migration is a view named `<component>_migration_<name>` whose one row holds
the step number, the name and when it was applied. A view rather than a row of a shared
table, so that each component's tables in the shared file stay exactly its own
(`queue_*`/`dlq_*`, `state_*`, `ledger_*`), and every object it adds carries its prefix.
Read a file's record with `applied(conn, component)`.

Files made before migrations were recorded may hold any earlier layout: every migration of
such a file runs once, so each one states what it expects and leaves what is already there
(`CREATE ... IF NOT EXISTS`, a column added only when missing, a table rebuilt only when it
still has the old layout).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

Step = Callable[[sqlite3.Connection], None]
_RECORD = "{component}_migration_"


@dataclass(frozen=True)
class Applied:
    step: int  # 1 for the component's first migration
    name: str
    applied_at: str  # ISO 8601, UTC


class Migrations:
    """A component's migrations, in the order they were registered."""

    def __init__(self, component: str) -> None:
        self.component = component
        self.steps: list[tuple[str, Step]] = []

    def __call__(self, step: Step) -> Step:
        if any(name == step.__name__ for name, _ in self.steps):
            raise ValueError(f"{self.component} migration {step.__name__} is registered twice")
        self.steps.append((step.__name__, step))
        return step

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.steps]


def migrate(conn: sqlite3.Connection, migrations: Migrations) -> list[str]:
    """Apply the migrations the file of `conn` has not had, in order; return their names.

    `conn` must be in autocommit mode with no transaction open. A file whose record names a
    migration this code does not know was made by a newer version: sqlite3.DatabaseError.
    """
    if not _pending(conn, migrations):  # a read: no write lock for a file already current
        return []
    applied_now: list[str] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process may have migrated meanwhile.
        for number, name, step in _pending(conn, migrations):
            step(conn)
            _record(conn, migrations.component, number, name)
            applied_now.append(name)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return applied_now


def applied(conn: sqlite3.Connection, component: str) -> list[Applied]:
    """The component's migrations recorded in the file, in the order they were applied."""
    found = []
    for view in _record_views(conn, component):
        step, name, applied_at = conn.execute(f'SELECT * FROM "{view}"').fetchone()
        found.append(Applied(int(step), str(name), str(applied_at)))
    return sorted(found, key=lambda record: record.step)


def _pending(conn: sqlite3.Connection, migrations: Migrations) -> list[tuple[int, str, Step]]:
    prefix = _RECORD.format(component=migrations.component)
    done = {view.removeprefix(prefix) for view in _record_views(conn, migrations.component)}
    unknown = done - set(migrations.names)
    if unknown:
        raise sqlite3.DatabaseError(
            f"the {migrations.component} tables were changed by a newer raasctl (migration "
            f"{min(unknown)}); use that version or a newer one"
        )
    return [
        (number, name, step)
        for number, (name, step) in enumerate(migrations.steps, start=1)
        if name not in done
    ]


def _record_views(conn: sqlite3.Connection, component: str) -> list[str]:
    prefix = _RECORD.format(component=component)
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'").fetchall()
    return [name for (name,) in rows if name.startswith(prefix)]


def _record(conn: sqlite3.Connection, component: str, number: int, name: str) -> None:
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    # A view cannot take parameters; the name is a Python identifier and the time our own.
    conn.execute(
        f'CREATE VIEW "{_RECORD.format(component=component)}{name}" AS'
        f" SELECT {number} AS step, '{name}' AS name, '{now}' AS applied_at"
    )


# ---------------------------------------------------------------- helpers for migrations


def execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run several statements inside the caller's transaction (`executescript` would commit
    it first)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""
    if statement.strip():
        raise ValueError(f"incomplete SQL statement: {statement.strip()[:80]}")


def table_exists(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return row is not None


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]


def add_column(conn: sqlite3.Connection, table: str, definition: str) -> None:
    """`ALTER TABLE ... ADD COLUMN`, unless the table has the column already."""
    if definition.split()[0] not in columns(conn, table):
        conn.execute(f'ALTER TABLE "{table}" ADD COLUMN {definition}')


def without_rowid(conn: sqlite3.Connection, table: str) -> bool:
    (sql,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return "WITHOUT ROWID" in " ".join(str(sql).upper().split())


def rebuild(conn: sqlite3.Connection, table: str, create: str) -> None:
    """Give `table` a new layout, keeping its rows: `create` is its CREATE TABLE statement
    with `{table}` for the name; the columns both layouts have are copied."""
    new = f"{table}__rebuilt"
    conn.execute(create.format(table=new))
    kept = ", ".join(f'"{name}"' for name in columns(conn, new) if name in columns(conn, table))
    conn.execute(f'INSERT INTO "{new}" ({kept}) SELECT {kept} FROM "{table}"')
    conn.execute(f'DROP TABLE "{table}"')
    conn.execute(f'ALTER TABLE "{new}" RENAME TO "{table}"')
