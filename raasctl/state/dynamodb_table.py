"""The DynamoDB state table itself: creating it, its failures as StateErrors, and the paged
reads the adapter (raasctl/state/dynamodb.py) builds on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import ClientError

from raasctl.aws_errors import AWS_FAILURES, classify, error_detail
from raasctl.codes import ErrorCode
from raasctl.errors import StateError
from raasctl.state.dynamodb_items import code, s

RUNS_INDEX = "runs-by-created"
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
        if code(exc) != "ResourceInUseException":
            raise state_error(exc, table, "dynamodb:CreateTable") from exc
    except AWS_FAILURES as exc:
        raise state_error(exc, table, "dynamodb:CreateTable") from exc
    try:
        client.get_waiter("table_exists").wait(
            TableName=table, WaiterConfig={"Delay": 2, "MaxAttempts": 60}
        )
    except AWS_FAILURES as exc:
        raise state_error(exc, table, "dynamodb:DescribeTable") from exc


@contextmanager
def aws_errors(table: str, action: str) -> Iterator[None]:
    """botocore failures inside the block as StateErrors naming the table."""
    try:
        yield
    except AWS_FAILURES as exc:
        raise state_error(exc, table, action) from exc


def state_error(exc: BaseException, table: str, action: str) -> StateError:
    """A botocore failure as a one-line StateError (raasctl/aws_errors.py classifies it)."""
    error_code, message = error_detail(exc)
    if error_code == "ValidationException" and "index" in message:
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


def index_keys(
    client: Any,
    table: str,
    partition: str,
    *,
    newest_first: bool,
    limit: int,
    cron: str | None = None,
) -> Iterator[tuple[str, str, str]]:
    """(gsi1sk, pk, sk) of one partition of the runs index, in created order, read a page at
    a time as the caller asks for more. botocore failures propagate."""
    request: dict[str, Any] = {
        "TableName": table,
        "IndexName": RUNS_INDEX,
        "KeyConditionExpression": "gsi1pk = :partition",
        "ExpressionAttributeValues": {":partition": s(partition)},
        "ScanIndexForward": not newest_first,
    }
    if cron is not None:
        request["FilterExpression"] = "cron = :cron"
        request["ExpressionAttributeValues"][":cron"] = s(cron)
    else:
        request["Limit"] = limit
    while True:
        page = client.query(**request)
        for item in page["Items"]:
            yield item["gsi1sk"]["S"], item["pk"]["S"], item["sk"]["S"]
        if "LastEvaluatedKey" not in page:
            return
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def batch_get(
    client: Any, table: str, keys: list[dict[str, Any]], projection: str | None = None
) -> list[dict[str, Any]]:
    """The items that exist among `keys` (in no particular order), read consistently."""
    items: list[dict[str, Any]] = []
    with aws_errors(table, "dynamodb:BatchGetItem"):
        for start in range(0, len(keys), _BATCH_GET_MAX):
            request: dict[str, Any] = {
                "Keys": keys[start : start + _BATCH_GET_MAX],
                "ConsistentRead": True,
            }
            if projection:
                request["ProjectionExpression"] = projection
            pending: dict[str, Any] = {table: request}
            for attempt in range(_BATCH_GET_ATTEMPTS):
                response = client.batch_get_item(RequestItems=pending)
                items.extend(response["Responses"].get(table, []))
                # Throttled keys come back unprocessed rather than as an error.
                pending = response.get("UnprocessedKeys") or {}
                if not pending:
                    break
                time.sleep(0.05 * 2**attempt)
            else:
                raise StateError(f"DynamoDB table {table}: reads were throttled")
    return items


_BATCH_WRITE_MAX = 25  # DynamoDB's limit per BatchWriteItem
_BATCH_WRITE_ATTEMPTS = 5


def batch_write(client: Any, table: str, requests: list[dict[str, Any]]) -> None:
    """Put or delete requests in batches of 25; throttled ones are sent again."""
    with aws_errors(table, "dynamodb:BatchWriteItem"):
        for start in range(0, len(requests), _BATCH_WRITE_MAX):
            pending: dict[str, Any] = {table: requests[start : start + _BATCH_WRITE_MAX]}
            for attempt in range(_BATCH_WRITE_ATTEMPTS):
                # Throttled requests come back unprocessed rather than as an error.
                pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems")
                if not pending:
                    break
                time.sleep(0.05 * 2**attempt)
            else:
                raise StateError(f"DynamoDB table {table}: writes were throttled")
