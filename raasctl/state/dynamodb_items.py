"""The DynamoDB state table's item layout: keys and typed attribute values.

Shared by the adapter (raasctl/state/dynamodb.py) and its outcome transactions
(raasctl/state/dynamodb_outcomes.py); the layout itself is described in dynamodb.py.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from raasctl.state.base import Claim, RunRecord
from raasctl.state.records import from_iso, run_from_fields

RUN_SK = "RUN"
# The runs-by-created index's partitions: a run is listed under OPEN until it is finished,
# then under RUN (runs created before outcomes were recorded are all under RUN). Open runs are
# then one Query away, without a second index or a Scan.
OPEN_RUNS = "OPEN"
FINISHED_RUNS = "RUN"


def run_pk(run_id: str) -> str:
    return f"RUN#{run_id}"


def outcome_sk(key: str) -> str:
    """An entry's outcome lives with its run (pk RUN#<run_id>), so a run's outcomes are one
    Query; the run item, updated in every outcome transaction, is the hot item either way."""
    return f"OUTCOME#{key}"


def version_pk(cron: str, entity_id: str) -> str:
    # Cron names are fixed identifiers without "#", so the pair cannot collide.
    return f"VERSION#{cron}#{entity_id}"


def key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": s(pk), "sk": s(sk)}


def s(value: str) -> dict[str, str]:
    return {"S": value}


def n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def attribute(value: str | int | bool) -> dict[str, Any]:
    if isinstance(value, bool):  # before int: a bool is an int
        return {"BOOL": value}
    if isinstance(value, int):
        return n(value)
    return s(value)


def text(item: dict[str, Any], name: str) -> str | None:
    """A string attribute of an item, None when absent."""
    value = item.get(name)
    return None if value is None else str(value["S"])


def to_record(item: dict[str, Any]) -> RunRecord:
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


def code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def to_claim(item: dict[str, Any]) -> Claim:
    """An enqueue claim back from its item (pk `CLAIM#<key>`)."""
    claimed_at = from_iso(item["claimed_at"]["S"])
    assert claimed_at is not None
    return Claim(
        item["pk"]["S"].removeprefix("CLAIM#"),
        item["run_id"]["S"],
        claimed_at,
        bool(item.get("sent", {}).get("BOOL", False)),
    )
