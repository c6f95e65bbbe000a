"""State in one DynamoDB table (deployed environments).

Single-table design, every item keyed by `pk` + `sk` (raasctl/state/dynamodb_items.py):

    pk "RUN#<run_id>"   sk "RUN"    a run record; counters are numbers changed with ADD;
                                    gsi1pk "OPEN" until finished, then "RUN", and
                                    gsi1sk "<created_at>#<run_id>" list it
    pk "RUN#<run_id>"   sk "OUTCOME#<key>"   an entry's outcome in the run (its `status`)
    pk "KEY#<key>"      sk "KEY"    an idempotency record (an entry key applied once)
    pk "VERSION#<cron>#<entity_id>"  sk "VERSION"   the newest version applied for a record
    pk "LOCK#<name>"    sk "LOCK"   a named lock with its owner, holder and expires_at

Every write that must happen once is a conditional write, so concurrent workers on many
machines agree without a coordinator. Datetimes are ISO strings in UTC with a fixed layout,
so string comparison in condition expressions is time comparison. An outcome and its run's
counters change in one transaction (raasctl/state/dynamodb_outcomes.py).

Listing runs uses the `runs-by-created` index (sorted by created_at within its partition). A
Scan would read every idempotency record to find a few runs, and there is one idempotency
record per entry ever applied; the index reads only runs. The index has two partitions: open
runs under "OPEN" (so a reconcile finds them with one Query, oldest first, and no second
index), finished ones under "RUN", where mark_finished moves them in its one conditional write;
runs finished or not from before that split are under "RUN" and are not found as open. Newest
first over all runs merges the two. Its costs: few index partitions for all runs (fine at one
run per cron per hour, far below a partition's write limit), and a cron filter applied after
reading, so `runs list --cron X` reads through other crons' runs until it has enough; and index
reads are eventually consistent, so a run created a moment ago may be missing from the list
(get_run, a consistent read, always finds it), and one finished a moment ago may still be
listed as open (open_runs drops it after reading the records). The index projects only `cron`,
which never changes, so counter updates do not write to the index; the listed records
themselves are read consistently.

The table has no TTL attribute, so nothing expires on its own: a lock's `expires_at` is
compared by the writers, and an expired lock item stays until its name is taken again or
broken (one item per lock name).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from botocore.exceptions import ClientError

from raasctl.codes import ErrorCode
from raasctl.errors import StateError
from raasctl.state import dynamodb_outcomes
from raasctl.state.base import (
    AppliedEntry,
    Claim,
    Entry,
    EntryStatus,
    Known,
    LockInfo,
    RunRecord,
    State,
)
from raasctl.state.dynamodb_items import (
    FINISHED_RUNS,
    OPEN_RUNS,
    RUN_SK,
    attribute,
    code,
    key,
    n,
    outcome_sk,
    run_pk,
    s,
    text,
    to_claim,
    to_record,
    version_pk,
)
from raasctl.state.dynamodb_table import (
    CREATE_TABLE_HINT,
    RUNS_INDEX,
    aws_errors,
    batch_get,
    batch_write,
    create_table,
    index_keys,
)
from raasctl.state.dynamodb_workers import DynamoWorkers
from raasctl.state.records import from_iso, run_to_fields, to_iso

# create_table and the table's names are the adapter's public face (the CLI and tests use it).
__all__ = ["CREATE_TABLE_HINT", "RUNS_INDEX", "DynamoState", "create_table"]


class DynamoState(State):
    """`client` is a boto3 DynamoDB client (thread-safe, shared by all worker threads)."""

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def workers(self) -> DynamoWorkers:
        return DynamoWorkers(self.client, self.table)

    # ------------------------------------------------------------ runs

    def create_run(self, run: RunRecord) -> None:
        stored = run_to_fields(run)
        item: dict[str, Any] = {
            "pk": s(run_pk(run.run_id)),
            "sk": s(RUN_SK),
            "gsi1pk": s(FINISHED_RUNS if run.finished_at else OPEN_RUNS),
            "gsi1sk": s(f"{stored['created_at']}#{run.run_id}"),
        }
        # Unset fields are left out: DynamoDB has no empty attribute, and a missing one reads
        # back as unset (see to_record).
        item.update({name: attribute(value) for name, value in stored.items() if value is not None})
        with self._errors("dynamodb:PutItem"):
            if not self._put_once(item):
                raise StateError(f"run {run.run_id} already exists")

    def finish_enqueue(
        self,
        run_id: str,
        *,
        entries: int,
        enqueued: int,
        invalid: int,
        duplicates: int,
        error: str | None = None,
    ) -> RunRecord:
        values = {
            ":entries": n(entries),
            ":enqueued": n(enqueued),
            ":invalid": n(invalid),
            ":duplicates": n(duplicates),
        }
        expression = (
            "SET entries = :entries, enqueued = :enqueued, invalid = :invalid,"
            " duplicates = :duplicates, #total = :enqueued"
        )
        if error is not None:
            values[":error"] = s(error)
            expression += ", #error = :error"
        names = {"#total": "total"} | ({"#error": "error"} if error is not None else {})
        return self._update_run(run_id, expression, values, names)

    def add_counts(
        self,
        run_id: str,
        *,
        succeeded: int = 0,
        failed: int = 0,
        dead_lettered: int = 0,
        retries: int = 0,
        now: datetime | None = None,
    ) -> RunRecord:
        # ADD is atomic on the server; ALL_NEW returns the record as this update left it.
        return self._update_run(
            run_id,
            "ADD succeeded :succeeded, failed :failed, dead_lettered :dead_lettered,"
            " retries :retries SET started_at = if_not_exists(started_at, :now)",
            {
                ":succeeded": n(succeeded),
                ":failed": n(failed),
                ":dead_lettered": n(dead_lettered),
                ":retries": n(retries),
                ":now": s(to_iso(now or datetime.now(UTC))),
            },
        )

    def record_outcomes(
        self,
        run_id: str,
        outcomes: Mapping[str, EntryStatus],
        now: datetime,
        *,
        applied: Sequence[AppliedEntry] = (),
    ) -> RunRecord | None:
        # A transaction returns no values: the run is read after it (one write, one read).
        with self._errors("dynamodb:TransactWriteItems"):
            if not dynamodb_outcomes.record_outcomes(
                self.client, self.table, run_id, outcomes, now, applied
            ):
                return None
        return self.get_run(run_id)

    def known(self, entries: Sequence[Entry]) -> dict[str, Known]:
        return dynamodb_outcomes.known(self.client, self.table, entries)

    def outcome(self, run_id: str, key: str) -> EntryStatus | None:
        item = self._get(run_pk(run_id), outcome_sk(key), projection="#status")
        status = None if item is None else text(item, "status")
        return None if status is None else EntryStatus(status)

    def mark_finished(
        self,
        run_id: str,
        now: datetime,
        *,
        total: int | None = None,
        purged: int = 0,
        abandoned: bool = False,
        error: str | None = None,
    ) -> bool:
        """False also for an unknown run: nothing was set."""
        assignments = ["finished_at = :now", "gsi1pk = :finished"]
        values: dict[str, Any] = {":now": s(to_iso(now)), ":finished": s(FINISHED_RUNS)}
        names: dict[str, str] = {}
        if total is not None:
            assignments.append("#total = :total")
            names["#total"] = "total"
            values[":total"] = n(total)
        if purged:
            assignments.append("purged = :purged")
            values[":purged"] = n(purged)
        if abandoned:
            assignments.append("abandoned = :abandoned")
            values[":abandoned"] = {"BOOL": True}
        if error is not None:  # an error recorded before (enqueueing stopped early) stays
            assignments.append("#error = if_not_exists(#error, :error)")
            names["#error"] = "error"
            values[":error"] = s(error)
        request: dict[str, Any] = {
            "TableName": self.table,
            "Key": key(run_pk(run_id), RUN_SK),
            "UpdateExpression": "SET " + ", ".join(assignments),
            "ConditionExpression": "attribute_exists(pk) AND attribute_not_exists(finished_at)",
            "ExpressionAttributeValues": values,
        }
        if names:
            request["ExpressionAttributeNames"] = names
        with self._errors("dynamodb:UpdateItem"):
            try:
                self.client.update_item(**request)
            except ClientError as exc:
                if code(exc) == "ConditionalCheckFailedException":
                    return False
                raise
        return True

    def claims(self, keys: Sequence[str]) -> dict[str, Claim]:
        items = batch_get(
            self.client,
            self.table,
            [key(f"CLAIM#{entry}", "CLAIM") for entry in dict.fromkeys(keys)],
        )
        return {claim.key: claim for claim in map(to_claim, items)}

    def put_claims(
        self, run_id: str, keys: Sequence[str], now: datetime, *, sent: bool = False
    ) -> None:
        at = s(to_iso(now))
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        "pk": s(f"CLAIM#{entry}"),
                        "sk": s("CLAIM"),
                        "run_id": s(run_id),
                        "claimed_at": at,
                        "sent": {"BOOL": sent},
                    }
                }
            }
            for entry in dict.fromkeys(keys)
        ]
        batch_write(self.client, self.table, requests)

    def record_purge(self, env: str, now: datetime) -> None:
        with self._errors("dynamodb:PutItem"):
            self.client.put_item(
                TableName=self.table,
                Item={"pk": s(f"PURGE#{env}"), "sk": s("PURGE"), "purged_at": s(to_iso(now))},
            )

    def last_purge(self, env: str) -> datetime | None:
        item = self._get(f"PURGE#{env}", "PURGE")
        return None if item is None else from_iso(item["purged_at"]["S"])

    def get_run(self, run_id: str) -> RunRecord | None:
        item = self._get(run_pk(run_id), RUN_SK)
        return None if item is None else to_record(item)

    def list_runs(self, *, limit: int = 20, cron: str | None = None) -> list[RunRecord]:
        if limit <= 0:
            return []
        with self._errors("dynamodb:Query"):
            # Both partitions newest first, merged by created_at (the index's sort key); a run
            # moving between them may show in both while the index catches up.
            merged = heapq.merge(
                *(
                    index_keys(
                        self.client,
                        self.table,
                        partition,
                        newest_first=True,
                        limit=limit,
                        cron=cron,
                    )
                    for partition in (OPEN_RUNS, FINISHED_RUNS)
                ),
                reverse=True,
            )
            keys: dict[str, dict[str, Any]] = {}
            for _, pk, sk in merged:
                keys.setdefault(pk, {"pk": s(pk), "sk": s(sk)})
                if len(keys) == limit:
                    break
            return self._get_runs(list(keys.values()))

    def open_runs(self, *, limit: int = 200) -> list[RunRecord]:
        with self._errors("dynamodb:Query"):
            oldest = index_keys(self.client, self.table, OPEN_RUNS, newest_first=False, limit=limit)
            keys = [{"pk": s(pk), "sk": s(sk)} for _, pk, sk in islice(oldest, limit)]
        # The index lags: a run finished a moment ago may still be under OPEN.
        return [run for run in self._get_runs(keys) if run.finished_at is None]

    # ------------------------------------------------------------ idempotency and versions

    def is_applied(self, key: str) -> bool:
        return self._get(f"KEY#{key}", "KEY", projection="pk") is not None

    def applied_keys(self, keys: Sequence[str]) -> set[str]:
        wanted = [key(f"KEY#{entry}", "KEY") for entry in dict.fromkeys(keys)]
        items = batch_get(self.client, self.table, wanted, projection="pk")
        return {item["pk"]["S"].removeprefix("KEY#") for item in items}

    def record_applied(self, key: str, run_id: str, now: datetime) -> bool:
        item = {
            "pk": s(f"KEY#{key}"),
            "sk": s("KEY"),
            "run_id": s(run_id),
            "applied_at": s(to_iso(now)),
        }
        with self._errors("dynamodb:PutItem"):
            return self._put_once(item)

    def applied_version(self, cron: str, entity_id: str) -> str | None:
        item = self._get(version_pk(cron, entity_id), "VERSION", projection="#version")
        return None if item is None else text(item, "version")

    def record_version(self, cron: str, entity_id: str, version: str) -> None:
        with self._errors("dynamodb:PutItem"):
            try:
                self.client.put_item(
                    TableName=self.table,
                    Item={**key(version_pk(cron, entity_id), "VERSION"), "version": s(version)},
                    # Versions are ISO UTC timestamps: text order is time order. An equal or
                    # newer version there already fails the check and changes nothing.
                    ConditionExpression="attribute_not_exists(pk) OR #version < :version",
                    ExpressionAttributeNames={"#version": "version"},
                    ExpressionAttributeValues={":version": s(version)},
                )
            except ClientError as exc:
                if code(exc) != "ConditionalCheckFailedException":
                    raise

    # ------------------------------------------------------------ locks

    def acquire_lock(
        self, name: str, owner: str, ttl_s: int, now: datetime, *, holder: str = ""
    ) -> bool:
        item = {
            "pk": s(f"LOCK#{name}"),
            "sk": s("LOCK"),
            "owner": s(owner),
            "expires_at": s(to_iso(now + timedelta(seconds=ttl_s))),
        }
        if holder:  # an unknown holder is left out and reads back as ""
            item["holder"] = s(holder)
        with self._errors("dynamodb:PutItem"):
            try:
                self.client.put_item(
                    TableName=self.table,
                    Item=item,
                    # Free, expired, or ours already (re-entrant: extends it).
                    ConditionExpression=(
                        "attribute_not_exists(pk) OR expires_at < :now OR #owner = :owner"
                    ),
                    ExpressionAttributeNames={"#owner": "owner"},
                    ExpressionAttributeValues={":now": s(to_iso(now)), ":owner": s(owner)},
                )
            except ClientError as exc:
                if code(exc) == "ConditionalCheckFailedException":
                    return False
                raise
        return True

    def release_lock(self, name: str, owner: str) -> None:
        """Releasing a lock another owner holds (say, after ours expired) leaves it alone."""
        with self._errors("dynamodb:DeleteItem"):
            try:
                self.client.delete_item(
                    TableName=self.table,
                    Key=key(f"LOCK#{name}", "LOCK"),
                    ConditionExpression="#owner = :owner",
                    ExpressionAttributeNames={"#owner": "owner"},
                    ExpressionAttributeValues={":owner": s(owner)},
                )
            except ClientError as exc:
                if code(exc) != "ConditionalCheckFailedException":
                    raise

    def lock_info(self, name: str) -> LockInfo | None:
        item = self._get(f"LOCK#{name}", "LOCK")
        if item is None:
            return None
        expires_at = from_iso(text(item, "expires_at"))
        assert expires_at is not None  # every lock item is written with one
        return LockInfo(
            name=name,
            owner=text(item, "owner") or "",
            holder=text(item, "holder") or "",
            expires_at=expires_at,
        )

    def break_lock(self, name: str) -> bool:
        with self._errors("dynamodb:DeleteItem"):
            response = self.client.delete_item(
                TableName=self.table, Key=key(f"LOCK#{name}", "LOCK"), ReturnValues="ALL_OLD"
            )
        return bool(response.get("Attributes"))

    # ------------------------------------------------------------ helpers

    def _get(self, pk: str, sk: str, projection: str | None = None) -> dict[str, Any] | None:
        """One item read consistently; `projection` may name `#status` or `#version`."""
        request: dict[str, Any] = {
            "TableName": self.table,
            "Key": key(pk, sk),
            "ConsistentRead": True,
        }
        if projection:
            request["ProjectionExpression"] = projection
            aliases = {"#status": "status", "#version": "version"}
            if projection in aliases:
                request["ExpressionAttributeNames"] = {projection: aliases[projection]}
        with self._errors("dynamodb:GetItem"):
            response = self.client.get_item(**request)
        item: dict[str, Any] | None = response.get("Item")
        return item

    def _put_once(self, item: dict[str, Any]) -> bool:
        try:
            self.client.put_item(
                TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as exc:
            if code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _update_run(
        self,
        run_id: str,
        expression: str,
        values: dict[str, Any],
        names: dict[str, str] | None = None,
    ) -> RunRecord:
        request: dict[str, Any] = {
            "TableName": self.table,
            "Key": key(run_pk(run_id), RUN_SK),
            "UpdateExpression": expression,
            # Without it an update of an unknown run would create a stray half-record.
            "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeValues": values,
            "ReturnValues": "ALL_NEW",
        }
        if names:
            request["ExpressionAttributeNames"] = names
        with self._errors("dynamodb:UpdateItem"):
            try:
                response = self.client.update_item(**request)
            except ClientError as exc:
                if code(exc) == "ConditionalCheckFailedException":
                    raise StateError(
                        f"run {run_id} not found", code=ErrorCode.RUN_NOT_FOUND
                    ) from None
                raise
        return to_record(response["Attributes"])

    def _get_runs(self, keys: list[dict[str, Any]]) -> list[RunRecord]:
        """The full records for index keys, in the index's order."""
        found = {
            item["pk"]["S"]: to_record(item) for item in batch_get(self.client, self.table, keys)
        }
        return [found[entry["pk"]["S"]] for entry in keys if entry["pk"]["S"] in found]

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        with aws_errors(self.table, action):
            yield
