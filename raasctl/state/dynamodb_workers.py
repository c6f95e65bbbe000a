"""The worker registry and the global rate schedule in the environment's DynamoDB state
table (the table of raasctl/state/dynamodb.py; no new index):

    pk "WORKERS#<env>"  sk "WORKER#<worker_id>"   a worker's record (one Query lists an env's)
    pk "RATE#<env>"     sk "RATE"                 the schedule's theoretical arrival time `tat`

A lease is normally one UpdateItem: while the schedule is ahead of now (it is, whenever the
workers want more than the rate), `SET tat = tat + :span` under the condition `tat >= :now`
is atomic on the server and needs no read, so however many workers lease at once none
conflicts with another. Only when the schedule fell behind (idle time) does the first
lease after it set `tat = now + span`, conditionally on `tat < now`; if another worker moved
it in between, the increment applies after all.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from raasctl.errors import StateError
from raasctl.state.dynamodb_items import code, key, n, s
from raasctl.state.dynamodb_table import aws_errors
from raasctl.state.records import from_iso, to_iso
from raasctl.state.workers import Lease, WorkerRecord, WorkerStore

_ATTEMPTS = 8  # each failed attempt means another worker's lease went through meanwhile


def _num(value: float) -> dict[str, str]:
    # Microseconds: DynamoDB numbers are exact decimals, so sums never drift.
    return {"N": f"{value:.6f}"}


class DynamoWorkers(WorkerStore):
    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def put_worker(self, record: WorkerRecord) -> None:
        item: dict[str, Any] = {
            "pk": s(f"WORKERS#{record.env}"),
            "sk": s(f"WORKER#{record.worker_id}"),
            "worker_id": s(record.worker_id),
            "env": s(record.env),
            "host": s(record.host),
            "pid": n(record.pid),
            "crons": {"L": [s(cron) for cron in record.crons]},
            "started_at": s(to_iso(record.started_at)),
            "refreshed_at": s(to_iso(record.refreshed_at)),
            "processed": n(record.processed),
            "per_second": _num(record.per_second),
            "rate_scope": s(record.rate_scope),
            "refresh_s": _num(record.refresh_s),
        }
        if record.rate_limit is not None:
            item["rate_limit"] = _num(record.rate_limit)
        with aws_errors(self.table, "dynamodb:PutItem"):
            self.client.put_item(TableName=self.table, Item=item)

    def remove_worker(self, env: str, worker_id: str) -> None:
        with aws_errors(self.table, "dynamodb:DeleteItem"):
            self.client.delete_item(
                TableName=self.table, Key=key(f"WORKERS#{env}", f"WORKER#{worker_id}")
            )

    def list_workers(self, env: str) -> list[WorkerRecord]:
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": s(f"WORKERS#{env}")},
            "ConsistentRead": True,
        }
        records: list[WorkerRecord] = []
        with aws_errors(self.table, "dynamodb:Query"):
            while True:
                page = self.client.query(**request)
                records.extend(_to_record(item) for item in page["Items"])
                if "LastEvaluatedKey" not in page:
                    break
                request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(records, key=lambda record: (record.started_at, record.worker_id))

    def lease_slots(self, env: str, count: int, interval_s: float, now_s: float) -> Lease:
        span = count * interval_s
        for attempt in range(1, _ATTEMPTS + 1):
            tat = self._update(
                env,
                "SET tat = tat + :span",
                "tat >= :now",
                {":span": _num(span), ":now": _num(now_s)},
            )
            if tat is not None:
                return Lease(tat - span, count, interval_s, requests=2 * attempt - 1)
            tat = self._update(
                env,
                "SET tat = :tat",
                "attribute_not_exists(tat) OR tat < :now",
                {":tat": _num(now_s + span), ":now": _num(now_s)},
            )
            if tat is not None:
                return Lease(tat - span, count, interval_s, requests=2 * attempt)
        raise StateError(
            f"DynamoDB table {self.table}: the rate schedule of {env} kept changing under"
            f" {_ATTEMPTS} lease attempts"
        )

    def _update(
        self, env: str, expression: str, condition: str, values: dict[str, Any]
    ) -> float | None:
        """The new `tat`, or None when the condition did not hold."""
        with aws_errors(self.table, "dynamodb:UpdateItem"):
            try:
                response = self.client.update_item(
                    TableName=self.table,
                    Key=key(f"RATE#{env}", "RATE"),
                    UpdateExpression=expression,
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values,
                    ReturnValues="UPDATED_NEW",
                )
            except ClientError as exc:
                if code(exc) != "ConditionalCheckFailedException":
                    raise
                return None
        return float(response["Attributes"]["tat"]["N"])


def _to_record(item: dict[str, Any]) -> WorkerRecord:
    started, refreshed = from_iso(item["started_at"]["S"]), from_iso(item["refreshed_at"]["S"])
    assert started is not None and refreshed is not None
    rate_limit = item.get("rate_limit")
    return WorkerRecord(
        worker_id=item["worker_id"]["S"],
        env=item["env"]["S"],
        host=item["host"]["S"],
        pid=int(item["pid"]["N"]),
        crons=tuple(value["S"] for value in item["crons"]["L"]),
        started_at=started,
        refreshed_at=refreshed,
        processed=int(item["processed"]["N"]),
        per_second=float(item["per_second"]["N"]),
        rate_scope=item["rate_scope"]["S"],
        rate_limit=None if rate_limit is None else float(rate_limit["N"]),
        refresh_s=float(item["refresh_s"]["N"]),
    )
