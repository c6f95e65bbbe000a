"""The sink contract: what the worker relies on when it applies an entry, stated once and run
against both adapters.

The ledger runs on a real SQLite file laid out as the embedded environment has it (the state's
tables in the same file). The HTTP sink posts to the fake accounting service
(tests/callback_server.py) on 127.0.0.1, started with `required_ids` so it checks entries as
the real service does. Each harness reads back what the accounting side holds (ledger rows
through a connection of their own; the service's applied keys and bodies), so every test below
asserts the same things of both.

What the worker relies on (raasctl/worker/handler.py): a call that returns, APPLIED or
ALREADY_APPLIED, means the entry is in place, and a key takes effect at most once however
often it is delivered; a SinkError is retryable (the entry may be in place or not, and the
retry must not double it) or permanent (nothing was applied; the reason goes to the DLQ).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from callback_server import CallbackServer

from raasctl.envelope import Envelope
from raasctl.errors import SinkError
from raasctl.jobs import JOBS
from raasctl.sinks.base import Applied, Sink
from raasctl.sinks.http import HttpSink
from raasctl.sinks.sqlite import TABLES_BY_CRON, SqliteLedger
from raasctl.state.sqlite import SqliteState

REPO = Path(__file__).resolve().parent.parent
CRONS = tuple(JOBS)
IN_PLACE = (Applied.APPLIED, Applied.ALREADY_APPLIED)
# The service checks entries against the same record ids the ledger keys its tables by.
REQUIRED_IDS = {cron: table.id_field for cron, table in TABLES_BY_CRON.items()}
# Short enough that a test waits on a lock for a moment, not the production 30 s.
LEDGER_BUSY_TIMEOUT_S = 0.2
HTTP_TIMEOUT_S = 1.0

# The failures each accounting side can recover from (retryable), by adapter. The ledger's
# one transient failure is its file being locked by another writer past the busy timeout
# (its "timeout"; it has no outage and no Retry-After). The service can be down (503 with
# Retry-After) or answer too late for the client, after having applied the change.
RECOVERABLE = {"ledger": ("locked",), "http": ("unavailable", "timeout")}


@dataclass(frozen=True)
class Held:
    """One applied entry key as the accounting side holds it."""

    cron: str
    record: dict[str, Any]  # the record, in the payload's terms
    times: int  # how often the key took effect (the contract: once)


@dataclass(frozen=True)
class Recoverable:
    during: Callable[[], AbstractContextManager[None]]  # the failure lasts while inside
    reason: str  # what the SinkError's message says
    retry_after_s: float | None
    # A lost answer: the side may have applied the change before the client gave up.
    may_have_applied: bool


@dataclass
class Harness:
    kind: str
    sink: Sink
    held: Callable[[], dict[str, Held]]  # entry key -> what the side holds
    recoverable: dict[str, Recoverable]
    # What a repeat of an applied key answers. The ledger knows its keys; the HTTP sink says
    # ALREADY_APPLIED only because the service answers 409 (as the real one does), and would
    # say APPLIED to a service that answered 2xx again. The worker treats both alike.
    repeat_answer: Applied


# ---------------------------------------------------------------- the ledger


def _ledger_held(path: Path) -> dict[str, Held]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        applications = conn.execute(
            "SELECT entry_key, cron, record_id, COUNT(*) AS times FROM ledger_applications"
            " GROUP BY entry_key"
        ).fetchall()
        held = {}
        for application in applications:
            table = TABLES_BY_CRON[application["cron"]]
            row = conn.execute(
                f"SELECT * FROM {table.name} WHERE {table.id_field} = ?",
                (application["record_id"],),
            ).fetchone()
            record = {name: row[name] for name in (table.id_field, *table.columns)}
            held[application["entry_key"]] = Held(
                application["cron"], _as_payload(record), application["times"]
            )
    return held


def _as_payload(record: dict[str, Any]) -> dict[str, Any]:
    """A ledger row's columns as the payload had them (the ledger stores lists as JSON text
    and flags as 0/1; amounts and dates stay the text they came as)."""
    if record.get("applied_invoices") is not None:
        record["applied_invoices"] = json.loads(record["applied_invoices"])
    if record.get("on_hold") is not None:
        record["on_hold"] = bool(record["on_hold"])
    return record


def _ledger_harness(tmp_path: Path) -> Iterator[Harness]:
    path = tmp_path / "local.db"
    state = SqliteState(path)
    state.is_applied("warm up")  # the state's tables exist, as in the worker
    state.close()
    ledger = SqliteLedger(path)
    # The ledger has no setting for its busy timeout; it is read as the ledger's first
    # connection opens, which has not happened yet.
    ledger._db.busy_timeout_s = LEDGER_BUSY_TIMEOUT_S
    assert set(ledger.counts().values()) == {0}  # opens the file: the ledger's tables exist

    @contextmanager
    def locked() -> Iterator[None]:
        # Another writer (a second worker process, say) holds the file's write lock.
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()

    yield Harness(
        "ledger",
        ledger,
        lambda: _ledger_held(path),
        {"locked": Recoverable(locked, "database is locked", None, may_have_applied=False)},
        repeat_answer=Applied.ALREADY_APPLIED,
    )
    ledger.close()


# ---------------------------------------------------------------- the HTTP callback


def _http_held(server: CallbackServer) -> dict[str, Held]:
    crons = {served.key: served.cron for served in server.served}
    return {
        key: Held(crons[key], server.payloads[key], times) for key, times in server.applied.items()
    }


def _http_harness() -> Iterator[Harness]:
    with CallbackServer(required_ids=REQUIRED_IDS) as server:
        sink = HttpSink(server.base_url, server.token, timeout_s=HTTP_TIMEOUT_S)

        @contextmanager
        def unavailable() -> Iterator[None]:
            server.outage(503, retry_after="7")
            try:
                yield
            finally:
                server.outage(None)

        @contextmanager
        def slow() -> Iterator[None]:
            # The service applies the change, then answers after the client has given up.
            server.latency_s = HTTP_TIMEOUT_S * 3
            try:
                yield
            finally:
                server.latency_s = 0.0

        yield Harness(
            "http",
            sink,
            lambda: _http_held(server),
            {
                "unavailable": Recoverable(unavailable, "HTTP 503", 7.0, may_have_applied=False),
                "timeout": Recoverable(slow, "timed out", None, may_have_applied=True),
            },
            repeat_answer=Applied.ALREADY_APPLIED,
        )
        sink.close()


@pytest.fixture(params=["ledger", "http"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "ledger":
        yield from _ledger_harness(tmp_path)
    else:
        yield from _http_harness()


# ---------------------------------------------------------------- entries


def _fixture_payload(cron: str) -> tuple[str, dict[str, Any]]:
    """The first payload (key, body) the cron's job makes of its embedded fixture report."""
    raw = json.loads((REPO / "raasctl" / "fixtures" / "raas" / f"{cron}.json").read_text())
    mapped = JOBS[cron].map_entry(raw["Report_Entry"][0], 1)[0]
    return mapped.key, mapped.payload


PAYLOADS = {cron: _fixture_payload(cron) for cron in CRONS}


def entry(cron: str = "clientDepositUpdate", n: int | None = None) -> Envelope:
    """A real payload of the cron; `n` makes it another record (its own id and key)."""
    key, payload = PAYLOADS[cron]
    payload = dict(payload)
    if n is not None:
        id_field = REQUIRED_IDS[cron]
        payload[id_field] = f"{payload[id_field]}-{n}"
        key = f"{key}-{n}"
    return Envelope.new(cron=cron, run_id="run-1", key=key, payload=payload)


def in_threads(count: int, work: Callable[[int], list[Applied]]) -> list[list[Applied]]:
    """`work(i)` in `count` threads started together."""
    barrier = threading.Barrier(count)

    def start(i: int) -> list[Applied]:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(start, range(count)))


# ---------------------------------------------------------------- applying


@pytest.mark.parametrize("cron", CRONS)
def test_an_entry_of_each_cron_is_applied_as_it_was_sent(harness: Harness, cron: str) -> None:
    sent = entry(cron)

    assert harness.sink.apply(sent) is Applied.APPLIED

    assert harness.held() == {sent.key: Held(cron, sent.payload, 1)}


def test_a_key_applied_twice_takes_effect_once(harness: Harness) -> None:
    first = entry()
    harness.sink.apply(first)
    # The same key with another body (a redelivery, or a bug upstream): the key alone decides.
    again = Envelope.new(
        cron=first.cron, run_id="run-2", key=first.key, payload={**first.payload, "status": "X"}
    )

    answer = harness.sink.apply(again)

    assert answer in IN_PLACE  # what the worker relies on: it is in place
    assert answer is harness.repeat_answer
    assert harness.held() == {first.key: Held(first.cron, first.payload, 1)}


def test_many_threads_applying_distinct_keys_apply_each_once(harness: Harness) -> None:
    threads, per_thread = 8, 10
    entries = [entry(n=n) for n in range(threads * per_thread)]

    answers = in_threads(
        threads,
        lambda i: [harness.sink.apply(e) for e in entries[i * per_thread : (i + 1) * per_thread]],
    )

    assert [a for thread in answers for a in thread] == [Applied.APPLIED] * len(entries)
    held = harness.held()
    assert set(held) == {e.key for e in entries}
    assert {key: h.times for key, h in held.items()} == {e.key: 1 for e in entries}
    assert all(held[e.key].record == e.payload for e in entries)


def test_concurrent_deliveries_of_one_key_have_one_effect(harness: Harness) -> None:
    entries = [entry(n=n) for n in range(5)]

    answers = in_threads(6, lambda _: [harness.sink.apply(e) for e in entries])

    for index, sent in enumerate(entries):
        for_key = [thread[index] for thread in answers]
        assert for_key.count(Applied.APPLIED) == 1, (sent.key, for_key)
        assert for_key.count(harness.repeat_answer) == 5
    assert {key: h.times for key, h in harness.held().items()} == {e.key: 1 for e in entries}


# ---------------------------------------------------------------- failing


def _without(cron: str, field: str) -> dict[str, Any]:
    return {name: value for name, value in PAYLOADS[cron][1].items() if name != field}


@pytest.mark.parametrize(
    ("cron", "payload", "reason"),
    [
        *[
            (cron, _without(cron, REQUIRED_IDS[cron]), f"{cron} payload lacks {REQUIRED_IDS[cron]}")
            for cron in CRONS
        ],
        (
            "clientBillPaidStatus",
            {**PAYLOADS["clientBillPaidStatus"][1], "invoice_id": None},
            "clientBillPaidStatus payload lacks invoice_id",
        ),
        (
            "clientDepositUpdate",
            {**PAYLOADS["clientDepositUpdate"][1], "deposit_id": ""},
            "clientDepositUpdate payload lacks deposit_id",
        ),
        ("unknownCron", PAYLOADS["clientDepositUpdate"][1], "cron 'unknownCron'"),
    ],
    ids=[*(f"{cron}-no-id" for cron in CRONS), "null-id", "empty-id", "unknown-cron"],
)
def test_a_payload_the_side_cannot_take_fails_permanently_naming_the_problem(
    harness: Harness, cron: str, payload: dict[str, Any], reason: str
) -> None:
    sent = Envelope.new(cron=cron, run_id="run-1", key=f"{cron}:bad:1", payload=payload)

    with pytest.raises(SinkError) as caught:
        harness.sink.apply(sent)

    assert caught.value.retryable is False
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)
    assert harness.held() == {}


@pytest.mark.parametrize(
    ("harness", "failure"),
    [(kind, failure) for kind, failures in RECOVERABLE.items() for failure in failures],
    indirect=["harness"],
)
def test_a_failure_the_side_recovers_from_is_retryable_and_the_retry_puts_it_in_place(
    harness: Harness, failure: str
) -> None:
    assert set(harness.recoverable) == set(RECOVERABLE[harness.kind])
    recoverable = harness.recoverable[failure]
    sent = entry("clientBillPaidStatus")

    with recoverable.during(), pytest.raises(SinkError) as caught:
        harness.sink.apply(sent)

    assert caught.value.retryable is True
    assert caught.value.retry_after_s == recoverable.retry_after_s
    assert recoverable.reason in str(caught.value)
    if not recoverable.may_have_applied:
        assert harness.held() == {}
    # The worker's retry, once the side has recovered: in place, and only once.
    assert harness.sink.apply(sent) in IN_PLACE
    assert harness.held() == {sent.key: Held(sent.cron, sent.payload, 1)}


def test_close_is_idempotent_and_keeps_what_was_applied(harness: Harness) -> None:
    sent = entry("lspBillUpdateStatus")
    harness.sink.apply(sent)

    harness.sink.close()
    harness.sink.close()

    assert harness.held() == {sent.key: Held(sent.cron, sent.payload, 1)}
