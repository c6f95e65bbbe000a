"""Per-entry outcomes in DynamoDB: each outcome item and its run's counters change together.

An outcome is the item (pk RUN#<run_id>, sk OUTCOME#<key>) with its `status`. A batch of
outcomes is one TransactWriteItems: a conditional Put per outcome (no outcome yet, or exactly
the status it replaces) and one Update of the run adding the combined counter delta. The
delta is only right if every condition holds, so a condition that fails cancels the whole
transaction; its cancellation reason carries the item's current status (ALL_OLD), from which
that outcome is either dropped (nothing to change) or retried as the transition from what is
there now. The first attempt assumes no outcome yet, the common case, so a batch costs one
write request, and one more per round in which another worker got to an entry first.

The entries the sink applied ride in the same transaction, before their outcomes count them:
a conditional Put of each idempotency record (none yet) and of each record's version (none
yet, or an older one). A failed condition there means the item is already what it should be
(the record was written, or a newer version is in place), so the item is dropped from the
next round.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from raasctl.errors import StateError
from raasctl.state.base import AppliedEntry, Entry, EntryStatus, Known, transition
from raasctl.state.dynamodb_items import (
    RUN_SK,
    code,
    key,
    n,
    outcome_sk,
    run_pk,
    s,
    text,
    version_pk,
)
from raasctl.state.dynamodb_table import batch_get
from raasctl.state.records import to_iso

# TransactWriteItems takes at most 100 items: the run's update and, per entry, its outcome,
# idempotency record and version.
MAX_ITEMS = 100
# Each round either succeeds, drops or re-targets the outcomes another writer moved on (an
# outcome moves forward at most three times), or waits out a conflicting transaction.
ATTEMPTS = 8
_BACKOFF_S = 0.02
_RETRYABLE = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}


def record_outcomes(
    client: Any,
    table: str,
    run_id: str,
    outcomes: Mapping[str, EntryStatus],
    now: datetime,
    applied: Sequence[AppliedEntry] = (),
) -> bool:
    """Record the outcomes with their run's counters, and the applied entries' records;
    False when the run is unknown (then only the records are written). botocore failures
    propagate for the caller to translate."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for item in applied_items(table, applied, now):
        by_key.setdefault(item.pop("entry"), []).append(item)
    for group in _groups(list(dict.fromkeys([*outcomes, *by_key])), outcomes, by_key):
        wanted = {entry: outcomes[entry] for entry in group if entry in outcomes}
        extras = [item for entry in group for item in by_key.get(entry, [])]
        if not _record_group(client, table, run_id, wanted, extras, now):
            # An unknown run: no outcome is written, the applied entries' records are.
            _put_each([item for items in by_key.values() for item in items], client)
            return False
    return True


def _put_each(items: list[dict[str, Any]], client: Any) -> None:
    for item in items:
        try:
            client.put_item(**item["Put"])
        except ClientError as exc:
            if code(exc) != "ConditionalCheckFailedException":  # in place already
                raise


def _groups(
    entries: list[str], outcomes: Mapping[str, EntryStatus], by_key: Mapping[str, list[Any]]
) -> list[list[str]]:
    """The entries in groups whose items (outcome, records) fit one transaction beside the
    run's update."""
    groups: list[list[str]] = [[]]
    size = 0
    for entry in entries:
        items = (entry in outcomes) + len(by_key.get(entry, []))
        if size + items > MAX_ITEMS - 1 and groups[-1]:
            groups.append([])
            size = 0
        groups[-1].append(entry)
        size += items
    return groups


def applied_items(
    table: str, applied: Sequence[AppliedEntry], now: datetime
) -> list[dict[str, Any]]:
    """The conditional Puts of the applied entries' idempotency records and versions, each
    tagged with its entry ("entry"). A record's version is written once, the newest."""
    items: list[dict[str, Any]] = []
    newest: dict[tuple[str, str], AppliedEntry] = {}
    for entry in {entry.key: entry for entry in applied}.values():
        items.append(
            {
                "entry": entry.key,
                "Put": {
                    "TableName": table,
                    "Item": {
                        **key(f"KEY#{entry.key}", "KEY"),
                        "run_id": s(entry.run_id),
                        "applied_at": s(to_iso(now)),
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                },
            }
        )
        if entry.entity_id and entry.version:
            record = (entry.cron, entry.entity_id)
            kept = newest.get(record)
            if kept is None or str(kept.version) < entry.version:
                newest[record] = entry
    for (cron, entity_id), entry in newest.items():
        items.append(
            {
                "entry": entry.key,
                "Put": {
                    "TableName": table,
                    "Item": {
                        **key(version_pk(cron, entity_id), "VERSION"),
                        "version": s(str(entry.version)),
                    },
                    # Versions are ISO UTC timestamps: text order is time order.
                    "ConditionExpression": "attribute_not_exists(pk) OR #version < :version",
                    "ExpressionAttributeNames": {"#version": "version"},
                    "ExpressionAttributeValues": {":version": s(str(entry.version))},
                },
            }
        )
    return items


def _record_group(
    client: Any,
    table: str,
    run_id: str,
    wanted: dict[str, EntryStatus],
    extras: list[dict[str, Any]],
    now: datetime,
) -> bool:
    # What each entry's outcome is believed to be now; None: none recorded.
    current: dict[str, EntryStatus | None] = dict.fromkeys(wanted)
    reasons: list[str] = []
    for attempt in range(ATTEMPTS):
        pending = [entry for entry, new in wanted.items() if transition(current[entry], new)]
        if not pending and not extras:
            return True
        request = [
            *extras,
            *(
                _outcome_put(table, run_id, entry, current[entry], wanted[entry], now)
                for entry in pending
            ),
            _run_update(table, run_id, pending, current, wanted, now),
        ]
        try:
            client.transact_write_items(TransactItems=request)
            return True
        except ClientError as exc:
            if code(exc) != "TransactionCanceledException":
                raise
            cancellation = exc.response.get("CancellationReasons") or []
        reasons = [str(reason.get("Code", "None")) for reason in cancellation]
        if len(reasons) != len(request):
            raise StateError(
                f"DynamoDB table {table}: outcomes of run {run_id} were refused"
                f" ({', '.join(reasons) or 'no reason given'})"
            )
        if reasons[-1] == "ConditionalCheckFailed":  # the run update: no such run
            return False
        unexpected = set(reasons) - {"None", "ConditionalCheckFailed", *_RETRYABLE}
        if unexpected:
            raise StateError(
                f"DynamoDB table {table}: outcomes of run {run_id} were refused"
                f" ({', '.join(sorted(unexpected))})"
            )
        extra_reasons, outcome_reasons = cancellation[: len(extras)], cancellation[len(extras) :]
        extras = [
            item
            for item, reason in zip(extras, extra_reasons, strict=True)
            if reason.get("Code") != "ConditionalCheckFailed"  # in place already
        ]
        for entry, reason in zip(pending, outcome_reasons, strict=False):
            if reason.get("Code") == "ConditionalCheckFailed":
                current[entry] = _status_after_failed_check(client, table, run_id, entry, reason)
        if _RETRYABLE & set(reasons):
            # Another transaction on the run item (another worker's batch): wait, with jitter
            # so the colliding writers do not meet again.
            time.sleep(_BACKOFF_S * 2**attempt * (0.5 + random.random()))
    raise StateError(
        f"DynamoDB table {table}: outcomes of run {run_id} were not recorded after"
        f" {ATTEMPTS} attempts ({', '.join(sorted(set(reasons)))})"
    )


def _outcome_put(
    table: str,
    run_id: str,
    entry: str,
    old: EntryStatus | None,
    new: EntryStatus,
    now: datetime,
) -> dict[str, Any]:
    put: dict[str, Any] = {
        "TableName": table,
        "Item": {
            **key(run_pk(run_id), outcome_sk(entry)),
            "status": s(new.value),
            "updated_at": s(to_iso(now)),
        },
        # The current item in the cancellation reason when the condition fails: its status
        # decides the retry without another read.
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    if old is None:
        put["ConditionExpression"] = "attribute_not_exists(pk)"
    else:
        put["ConditionExpression"] = "#status = :old"
        put["ExpressionAttributeNames"] = {"#status": "status"}
        put["ExpressionAttributeValues"] = {":old": s(old.value)}
    return {"Put": put}


def _run_update(
    table: str,
    run_id: str,
    pending: list[str],
    current: Mapping[str, EntryStatus | None],
    wanted: Mapping[str, EntryStatus],
    now: datetime,
) -> dict[str, Any]:
    """The run's counters moved by every pending transition: +1 to the new status, -1 from
    the one it replaces."""
    delta: dict[str, int] = {}
    for entry in pending:
        delta[wanted[entry].value] = delta.get(wanted[entry].value, 0) + 1
        old = current[entry]
        if old is not None:
            delta[old.value] = delta.get(old.value, 0) - 1
    moved = {name: change for name, change in delta.items() if change}
    values: dict[str, Any] = {":now": s(to_iso(now))}
    values.update({f":{name}": n(change) for name, change in moved.items()})
    adds = ", ".join(f"{name} :{name}" for name in moved)
    return {
        "Update": {
            "TableName": table,
            "Key": key(run_pk(run_id), RUN_SK),
            "UpdateExpression": (f"ADD {adds} " if adds else "")
            + "SET started_at = if_not_exists(started_at, :now)",
            # An unknown run must not get a stray half-record, nor its outcomes.
            "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeValues": values,
        }
    }


def _status_after_failed_check(
    client: Any, table: str, run_id: str, entry: str, reason: Mapping[str, Any]
) -> EntryStatus | None:
    """The outcome recorded now, from the cancellation reason's copy of the item; read when a
    service leaves the copy out."""
    item = reason.get("Item")
    if item is None:
        item = client.get_item(
            TableName=table,
            Key=key(run_pk(run_id), outcome_sk(entry)),
            ConsistentRead=True,
        ).get("Item")
    status = None if item is None else text(item, "status")
    return None if status is None else EntryStatus(status)


def known(client: Any, table: str, entries: Sequence[Entry]) -> dict[str, Known]:
    """What is known of each entry, in one BatchGetItem (up to 100 items): its idempotency
    record and its record's version."""
    keys = [key(f"KEY#{entry}", "KEY") for entry in dict.fromkeys(e.key for e in entries)]
    records = {(e.cron, e.entity_id) for e in entries if e.entity_id}
    keys += [key(version_pk(cron, entity), "VERSION") for cron, entity in sorted(records)]
    found = {item["pk"]["S"]: item for item in batch_get(client, table, keys)}
    answers = {}
    for entry in entries:
        version = None
        if entry.entity_id:
            item = found.get(version_pk(entry.cron, entry.entity_id))
            version = None if item is None else text(item, "version")
        answers[entry.key] = Known(f"KEY#{entry.key}" in found, version)
    return answers
