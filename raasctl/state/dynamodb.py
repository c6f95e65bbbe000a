"""State in one DynamoDB table (deployed environments).

Single-table design, every item keyed by `pk` + `sk`:

    pk "RUN#<run_id>"   sk "RUN"    a run record; counters are numbers changed with ADD;
                                    gsi1pk "RUN", gsi1sk "<created_at>#<run_id>" list it
    pk "KEY#<key>"      sk "KEY"    an idempotency record (an entry key applied once)
    pk "LOCK#<name>"    sk "LOCK"   a named lock with its owner and expires_at

Every write that must happen once is a conditional write, so concurrent workers on many
machines agree without a coordinator. Datetimes are ISO strings in UTC with a fixed layout,
so string comparison in condition expressions is time comparison.

Listing runs newest first uses the `runs-by-created` index (all runs share the index key
"RUN", sorted by created_at). A Scan would read every idempotency record to find a few runs,
and there is one idempotency record per entry ever applied; the index reads only runs. Its
costs: one index partition for all runs (fine at one run per cron per hour, far below a
partition's write limit), and a cron filter applied after reading, so `runs list --cron X`
reads through other crons' runs until it has enough; and index reads are eventually
consistent, so a run created a moment ago may be missing from the list (get_run, a consistent
read, always finds it). The index projects only `cron`, which never changes, so counter updates
do not write to the index; the listed records themselves are read consistently.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from raasctl.aws_errors import AWS_FAILURES, classify, error_detail
from raasctl.codes import ErrorCode
from raasctl.errors import StateError
from raasctl.state.base import RunRecord, State
from raasctl.state.records import run_from_fields, run_to_fields, to_iso

RUNS_INDEX = "runs-by-created"
_RUN_SK = "RUN"
_BATCH_GET_MAX = 100
_BATCH_GET_ATTEMPTS = 5
# Shown when the table is missing; names the documented way to create it.
CREATE_TABLE_HINT = "create it with `raasctl --env ENV state create-table`"


def create_table(client: Any, table: str) -> None:
    """The documented way to create the table DynamoState uses: on-demand billing, the
    `pk`/`sk` key and the `runs-by-created` index. Idempotent: an existing table is left as
    it is. Waits until the table is active."""
    try:
        client.create_table(
            TableName=table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
                {"AttributeName": "gsi1pk", "AttributeType": "S"},
                {"AttributeName": "gsi1sk", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": RUNS_INDEX,
                    "KeySchema": [
                        {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                        {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["cron"]},
                }
            ],
        )
    except ClientError as exc:
        if _code(exc) != "ResourceInUseException":
            raise _state_error(exc, table, "dynamodb:CreateTable") from exc
    except AWS_FAILURES as exc:
        raise _state_error(exc, table, "dynamodb:CreateTable") from exc
    try:
        client.get_waiter("table_exists").wait(
            TableName=table, WaiterConfig={"Delay": 2, "MaxAttempts": 60}
        )
    except AWS_FAILURES as exc:
        raise _state_error(exc, table, "dynamodb:DescribeTable") from exc


class DynamoState(State):
    """`client` is a boto3 DynamoDB client (thread-safe, shared by all worker threads)."""

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def create_run(self, run: RunRecord) -> None:
        stored = run_to_fields(run)
        item: dict[str, Any] = {
            "pk": _s(_run_pk(run.run_id)),
            "sk": _s(_RUN_SK),
            "gsi1pk": _s(_RUN_SK),
            "gsi1sk": _s(f"{stored['created_at']}#{run.run_id}"),
        }
        # Unset fields are left out: DynamoDB has no empty attribute, and a missing one reads
        # back as unset (see _to_record).
        item.update(
            {name: _attribute(value) for name, value in stored.items() if value is not None}
        )
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
            ":entries": _n(entries),
            ":enqueued": _n(enqueued),
            ":invalid": _n(invalid),
            ":duplicates": _n(duplicates),
        }
        expression = (
            "SET entries = :entries, enqueued = :enqueued, invalid = :invalid,"
            " duplicates = :duplicates, #total = :enqueued"
        )
        if error is not None:
            values[":error"] = _s(error)
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
                ":succeeded": _n(succeeded),
                ":failed": _n(failed),
                ":dead_lettered": _n(dead_lettered),
                ":retries": _n(retries),
                ":now": _s(to_iso(now or datetime.now(UTC))),
            },
        )

    def mark_finished(self, run_id: str, now: datetime) -> bool:
        """False also for an unknown run: nothing was set."""
        with self._errors("dynamodb:UpdateItem"):
            try:
                self.client.update_item(
                    TableName=self.table,
                    Key=_key(_run_pk(run_id), _RUN_SK),
                    UpdateExpression="SET finished_at = :now",
                    ConditionExpression=(
                        "attribute_exists(pk) AND attribute_not_exists(finished_at)"
                    ),
                    ExpressionAttributeValues={":now": _s(to_iso(now))},
                )
            except ClientError as exc:
                if _code(exc) == "ConditionalCheckFailedException":
                    return False
                raise
        return True

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._errors("dynamodb:GetItem"):
            response = self.client.get_item(
                TableName=self.table, Key=_key(_run_pk(run_id), _RUN_SK), ConsistentRead=True
            )
        item = response.get("Item")
        return None if item is None else _to_record(item)

    def list_runs(self, *, limit: int = 20, cron: str | None = None) -> list[RunRecord]:
        keys: list[dict[str, Any]] = []
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": RUNS_INDEX,
            "KeyConditionExpression": "gsi1pk = :run",
            "ExpressionAttributeValues": {":run": _s(_RUN_SK)},
            "ScanIndexForward": False,
        }
        if cron is not None:
            request["FilterExpression"] = "cron = :cron"
            request["ExpressionAttributeValues"][":cron"] = _s(cron)
        else:
            request["Limit"] = limit
        with self._errors("dynamodb:Query"):
            while len(keys) < limit:
                page = self.client.query(**request)
                keys.extend({"pk": item["pk"], "sk": item["sk"]} for item in page["Items"])
                if "LastEvaluatedKey" not in page:
                    break
                request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            return self._get_runs(keys[:limit])

    def is_applied(self, key: str) -> bool:
        with self._errors("dynamodb:GetItem"):
            response = self.client.get_item(
                TableName=self.table,
                Key=_key(f"KEY#{key}", "KEY"),
                ConsistentRead=True,
                ProjectionExpression="pk",
            )
        return "Item" in response

    def applied_keys(self, keys: Sequence[str]) -> set[str]:
        items = self._batch_get(
            [_key(f"KEY#{key}", "KEY") for key in dict.fromkeys(keys)], projection="pk"
        )
        return {item["pk"]["S"].removeprefix("KEY#") for item in items}

    def record_applied(self, key: str, run_id: str, now: datetime) -> bool:
        item = {
            "pk": _s(f"KEY#{key}"),
            "sk": _s("KEY"),
            "run_id": _s(run_id),
            "applied_at": _s(to_iso(now)),
        }
        with self._errors("dynamodb:PutItem"):
            return self._put_once(item)

    def acquire_lock(self, name: str, owner: str, ttl_s: int, now: datetime) -> bool:
        item = {
            "pk": _s(f"LOCK#{name}"),
            "sk": _s("LOCK"),
            "owner": _s(owner),
            "expires_at": _s(to_iso(now + timedelta(seconds=ttl_s))),
        }
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
                    ExpressionAttributeValues={":now": _s(to_iso(now)), ":owner": _s(owner)},
                )
            except ClientError as exc:
                if _code(exc) == "ConditionalCheckFailedException":
                    return False
                raise
        return True

    def release_lock(self, name: str, owner: str) -> None:
        """Releasing a lock another owner holds (say, after ours expired) leaves it alone."""
        with self._errors("dynamodb:DeleteItem"):
            try:
                self.client.delete_item(
                    TableName=self.table,
                    Key=_key(f"LOCK#{name}", "LOCK"),
                    ConditionExpression="#owner = :owner",
                    ExpressionAttributeNames={"#owner": "owner"},
                    ExpressionAttributeValues={":owner": _s(owner)},
                )
            except ClientError as exc:
                if _code(exc) != "ConditionalCheckFailedException":
                    raise

    # ------------------------------------------------------------ helpers

    def _put_once(self, item: dict[str, Any]) -> bool:
        try:
            self.client.put_item(
                TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
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
            "Key": _key(_run_pk(run_id), _RUN_SK),
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
                if _code(exc) == "ConditionalCheckFailedException":
                    raise StateError(
                        f"run {run_id} not found", code=ErrorCode.RUN_NOT_FOUND
                    ) from None
                raise
        return _to_record(response["Attributes"])

    def _get_runs(self, keys: list[dict[str, Any]]) -> list[RunRecord]:
        """The full records for index keys, in the index's order."""
        found = {item["pk"]["S"]: _to_record(item) for item in self._batch_get(keys)}
        return [found[key["pk"]["S"]] for key in keys if key["pk"]["S"] in found]

    def _batch_get(
        self, keys: list[dict[str, Any]], projection: str | None = None
    ) -> list[dict[str, Any]]:
        """The items that exist among `keys` (in no particular order), read consistently."""
        items: list[dict[str, Any]] = []
        with self._errors("dynamodb:BatchGetItem"):
            for start in range(0, len(keys), _BATCH_GET_MAX):
                request: dict[str, Any] = {
                    "Keys": keys[start : start + _BATCH_GET_MAX],
                    "ConsistentRead": True,
                }
                if projection:
                    request["ProjectionExpression"] = projection
                pending: dict[str, Any] = {self.table: request}
                for attempt in range(_BATCH_GET_ATTEMPTS):
                    response = self.client.batch_get_item(RequestItems=pending)
                    items.extend(response["Responses"].get(self.table, []))
                    # Throttled keys come back unprocessed rather than as an error.
                    pending = response.get("UnprocessedKeys") or {}
                    if not pending:
                        break
                    time.sleep(0.05 * 2**attempt)
                else:
                    raise StateError(f"DynamoDB table {self.table}: reads were throttled")
        return items

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except AWS_FAILURES as exc:
            raise _state_error(exc, self.table, action) from exc


def _state_error(exc: BaseException, table: str, action: str) -> StateError:
    """A botocore failure as a one-line StateError (raasctl/aws_errors.py classifies it)."""
    code, message = error_detail(exc)
    if code == "ValidationException" and "index" in message:
        return StateError(
            f"DynamoDB table {table} has no index {RUNS_INDEX}: it was not made by"
            f" create_table; {message}"
        )
    if isinstance(exc, ClientError):  # the call that failed, where several share a block
        action = f"dynamodb:{exc.operation_name}"
    failure = classify(exc, service="dynamodb", action=action, resource=table)
    error = failure.error(StateError)
    if failure.code is ErrorCode.STATE_NOT_FOUND:
        error.message = f"{failure.message}: {CREATE_TABLE_HINT}"
    return error


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _run_pk(run_id: str) -> str:
    return f"RUN#{run_id}"


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": _s(pk), "sk": _s(sk)}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _attribute(value: str | int | bool) -> dict[str, Any]:
    if isinstance(value, bool):  # before int: a bool is an int
        return {"BOOL": value}
    if isinstance(value, int):
        return _n(value)
    return _s(value)


def _to_record(item: dict[str, Any]) -> RunRecord:
    """The run from its item: each attribute's value (`S`, `N` or `BOOL`), decoded by the
    shared codec."""
    stored: dict[str, Any] = {}
    for name, typed in item.items():
        if "S" in typed:
            stored[name] = typed["S"]
        elif "N" in typed:
            stored[name] = int(typed["N"])
        elif "BOOL" in typed:
            stored[name] = typed["BOOL"]
    return run_from_fields(stored)
