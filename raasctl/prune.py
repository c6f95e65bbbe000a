"""`state prune`: what an environment's state no longer needs, removed.

- finished runs older than the cutoff: their run records and the per-entry rows that
  reference them (`RUN_ENTRY_TABLES`: the entries' outcomes), deleted with their runs; and
  enqueue claims older than the cutoff (a claim stands for 5 minutes at most);
- the embedded queue's expired deduplication ids (the window only needs unexpired ones);
- then the embedded file is compacted (VACUUM), so it shrinks on disk.

Never touched: the ledger (the accounting records and their applications), the idempotency
records (`state_applied`: they keep an entry from being applied twice, whatever its run's
age), locks, and runs not yet finished. DynamoDB: finished run items older than the cutoff
are deleted in batch writes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raasctl.aws_errors import AWS_FAILURES, classify
from raasctl.codes import ErrorCode
from raasctl.config import embedded_db_path
from raasctl.errors import StateError
from raasctl.sqlite import BUSY_TIMEOUT_S, compact
from raasctl.state.records import to_iso

if TYPE_CHECKING:
    from raasctl.runtime import Runtime

# Tables of per-entry rows keyed by `run_id`, deleted with their runs (before them).
RUN_ENTRY_TABLES: tuple[str, ...] = ("state_outcomes",)
# The embedded queue's deduplication ids, each with its expiry (epoch seconds).
DEDUP_TABLES = ("queue_dedup_ids", "queue_dedup_recent")
FINISHED_BEFORE = "finished_at IS NOT NULL AND finished_at < :cutoff"
DYNAMO_BATCH = 25  # BatchWriteItem's limit
DYNAMO_GET_BATCH = 100  # BatchGetItem's limit


@dataclass(frozen=True)
class PruneResult:
    env: str
    kind: str  # the state store: sqlite or dynamodb
    cutoff: datetime
    runs: int
    entry_rows: int
    dedup_rows: int
    files: list[str]  # the embedded files compacted
    bytes_before: int | None
    bytes_after: int | None

    def as_dict(self) -> dict[str, Any]:
        freed = None
        if self.bytes_before is not None and self.bytes_after is not None:
            freed = max(0, self.bytes_before - self.bytes_after)
        return {
            "env": self.env,
            "kind": self.kind,
            "finished_before": to_iso(self.cutoff),
            "runs": self.runs,
            "entry_rows": self.entry_rows,
            "dedup_rows": self.dedup_rows,
            "files": self.files,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "freed_bytes": freed,
        }


def prune(runtime: Runtime, cutoff: datetime, *, now: float | None = None) -> PruneResult:
    """Prune the environment's state of runs finished before `cutoff` (and, embedded, the
    queue's deduplication ids expired at `now`, epoch seconds), then compact its files."""
    env = runtime.env
    runs = entry_rows = dedup_rows = 0
    files: list[Path] = []
    if env.state.kind == "sqlite":
        path = embedded_db_path(runtime.env_name, env.state.path)
        if path.exists():
            runs, entry_rows = _prune_sqlite_runs(path, cutoff)
            files.append(path)
    else:
        runs = _prune_dynamo_runs(runtime.aws.client("dynamodb"), env.state.table, cutoff)
    if env.queue.kind == "sqlite":
        path = embedded_db_path(runtime.env_name, env.queue.path)
        if path.exists():
            dedup_rows = _prune_dedup(path, time.time() if now is None else now)
            if path not in files:
                files.append(path)
    before = after = None
    if files:
        before = after = 0
        for path in files:
            b, a = _compacted(path)
            before, after = before + b, after + a
    return PruneResult(
        runtime.env_name,
        env.state.kind,
        cutoff,
        runs,
        entry_rows,
        dedup_rows,
        [str(path.absolute()) for path in files],
        before,
        after,
    )


# ---------------------------------------------------------------------- embedded


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _prune_sqlite_runs(path: Path, cutoff: datetime) -> tuple[int, int]:
    """(runs, per-entry rows) deleted, in one transaction."""
    try:
        conn = _connect(path)
        try:
            tables = _tables(conn)
            if "state_runs" not in tables:
                return 0, 0
            parameters = {"cutoff": to_iso(cutoff)}
            conn.execute("BEGIN IMMEDIATE")
            entry_rows = 0
            for table in RUN_ENTRY_TABLES:
                if table in tables:
                    entry_rows += conn.execute(
                        f"DELETE FROM {table} WHERE run_id IN"
                        f" (SELECT run_id FROM state_runs WHERE {FINISHED_BEFORE})",
                        parameters,
                    ).rowcount
            runs = conn.execute(f"DELETE FROM state_runs WHERE {FINISHED_BEFORE}", parameters)
            if "state_claims" in tables:
                entry_rows += conn.execute(
                    "DELETE FROM state_claims WHERE claimed_at < :cutoff", parameters
                ).rowcount
            conn.execute("COMMIT")
            return runs.rowcount, entry_rows
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
    except sqlite3.Error as exc:
        raise StateError(f"cannot prune runs in {path.absolute()}: {exc}") from exc


def _prune_dedup(path: Path, now: float) -> int:
    try:
        conn = _connect(path)
        try:
            tables = _tables(conn)
            conn.execute("BEGIN IMMEDIATE")
            removed = sum(
                conn.execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now,)).rowcount
                for table in DEDUP_TABLES
                if table in tables
            )
            conn.execute("COMMIT")
            return removed
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
    except sqlite3.Error as exc:
        raise StateError(
            f"cannot prune deduplication ids in {path.absolute()}: {exc}",
            code=ErrorCode.QUEUE_FAILED,
        ) from exc


def _compacted(path: Path) -> tuple[int, int]:
    try:
        return compact(path)
    except sqlite3.Error as exc:
        raise StateError(f"cannot compact {path.absolute()}: {exc}") from exc


# ---------------------------------------------------------------------- DynamoDB


def _prune_dynamo_runs(client: Any, table: str, cutoff: datetime) -> int:
    """Delete the run items finished before `cutoff`. A run finishes after it is created, so
    only runs the `runs-by-created` index lists as created before the cutoff can qualify; the
    index holds no `finished_at`, so those are read back in batches."""
    from raasctl.state.dynamodb import RUNS_INDEX

    limit = to_iso(cutoff)
    deleted = 0
    try:
        created = list(_runs_created_before(client, table, RUNS_INDEX, limit))
        for start in range(0, len(created), DYNAMO_GET_BATCH):
            finished = [
                {"pk": item["pk"], "sk": item["sk"]}
                for item in _batch_get(client, table, created[start : start + DYNAMO_GET_BATCH])
                if "finished_at" in item and item["finished_at"]["S"] < limit
            ]
            # A run's outcome items share its partition key: they go with it.
            doomed = [item for run in finished for item in _partition(client, table, run["pk"])]
            for first in range(0, len(doomed), DYNAMO_BATCH):
                _batch_delete(client, table, doomed[first : first + DYNAMO_BATCH])
            deleted += len(finished)
    except AWS_FAILURES as exc:
        failure = classify(exc, service="dynamodb", resource=table)
        raise StateError(failure.message, code=failure.code, exit_code=failure.exit_code) from exc
    return deleted


def _partition(client: Any, table: str, pk: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The keys of every item under a partition key (a run and its entries' outcomes)."""
    request: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": pk},
        "ProjectionExpression": "pk, sk",
    }
    while True:
        page = client.query(**request)
        yield from page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _runs_created_before(
    client: Any, table: str, index: str, cutoff: str
) -> Iterator[dict[str, Any]]:
    request: dict[str, Any] = {
        "TableName": table,
        "IndexName": index,
        "KeyConditionExpression": "gsi1pk = :run AND gsi1sk < :cutoff",
        "ExpressionAttributeValues": {":run": {"S": "RUN"}, ":cutoff": {"S": cutoff}},
        "ProjectionExpression": "pk, sk",
    }
    while True:
        page = client.query(**request)
        for item in page.get("Items", []):
            yield {"pk": item["pk"], "sk": item["sk"]}
        if "LastEvaluatedKey" not in page:
            return
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _batch_get(client: Any, table: str, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    pending: dict[str, Any] = {table: {"Keys": keys, "ProjectionExpression": "pk, sk, finished_at"}}
    pause = 0.05
    while pending:
        answer = client.batch_get_item(RequestItems=pending)
        found.extend(answer.get("Responses", {}).get(table, []))
        pending = answer.get("UnprocessedKeys") or {}
        if pending:  # throttled: retry the rest after a backoff
            time.sleep(pause)
            pause = min(2.0, pause * 2)
    return found


def _batch_delete(client: Any, table: str, keys: list[dict[str, Any]]) -> None:
    requests: list[dict[str, Any]] = [{"DeleteRequest": {"Key": key}} for key in keys]
    pause = 0.05
    while requests:
        answer = client.batch_write_item(RequestItems={table: requests})
        requests = answer.get("UnprocessedItems", {}).get(table, [])
        if requests:  # throttled: DynamoDB asks for a retry of the rest, with a backoff
            time.sleep(pause)
            pause = min(2.0, pause * 2)
