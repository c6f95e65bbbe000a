"""Run statistics in the environment's DynamoDB state table: one item per (run, worker,
second) under the partition `RUNSTATS#<run_id>`, so a run's rows are one query away and
never mix with its run item."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from raasctl.runstats import StatsRow
from raasctl.state.dynamodb_items import s
from raasctl.state.dynamodb_table import aws_errors, batch_write
from raasctl.state.stats_base import RunStatsStore, histogram_from, histogram_text

_COUNTERS = ("succeeded", "failed", "retries", "dead_lettered", "superseded", "concurrency")


def stats_pk(run_id: str) -> str:
    return f"RUNSTATS#{run_id}"


class DynamoRunStats(RunStatsStore):
    """`client` is a boto3 DynamoDB client (thread-safe)."""

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def write(self, rows: Sequence[StatsRow]) -> None:
        batch_write(self.client, self.table, [{"PutRequest": {"Item": _item(row)}} for row in rows])

    def rows(self, run_id: str) -> list[StatsRow]:
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": s(stats_pk(run_id))},
            "ConsistentRead": True,
        }
        found: list[StatsRow] = []
        with aws_errors(self.table, "dynamodb:Query"):
            while True:
                page = self.client.query(**request)
                found.extend(_row(run_id, item) for item in page["Items"])
                if "LastEvaluatedKey" not in page:
                    break
                request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(found, key=lambda row: (row.second, row.worker))


def _item(row: StatsRow) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": s(stats_pk(row.run_id)),
        # Zero-padded so the sort key orders by time.
        "sk": s(f"{row.second:012d}#{row.worker}"),
        "cron": s(row.cron),
        "latency": s(histogram_text(row.latency)),
        "latency_max_ms": {"N": repr(row.latency_max_ms)},
    }
    item.update({name: {"N": str(getattr(row, name))} for name in _COUNTERS})
    if row.rate_per_s is not None:
        item["rate_per_s"] = {"N": repr(row.rate_per_s)}
    return item


def _row(run_id: str, item: dict[str, Any]) -> StatsRow:
    second, worker = item["sk"]["S"].split("#", 1)
    rate = item.get("rate_per_s")
    return StatsRow(
        run_id=run_id,
        second=int(second),
        worker=worker,
        cron=item["cron"]["S"],
        latency=histogram_from(item["latency"]["S"]),
        latency_max_ms=float(item["latency_max_ms"]["N"]),
        rate_per_s=None if rate is None else float(rate["N"]),
        **{name: int(item[name]["N"]) for name in _COUNTERS},
    )
