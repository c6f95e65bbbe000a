"""The worker's per-message rules, row by row, through the pure decision table: no threads,
no queue, no clock."""

from __future__ import annotations

import threading

import pytest

from raasctl.codes import ErrorCode
from raasctl.errors import ConfigError, QueueError, StateError
from raasctl.worker import decision
from raasctl.worker.decision import (
    APPLIED,
    Action,
    Backoff,
    Facts,
    Outcome,
    SinkOutcome,
    Verdict,
    decide,
    stops_worker,
    unfixable,
)

LIMIT = 3  # the queue's max_receive_count in these rows
RETRYABLE = SinkOutcome(applied=False, retryable=True, reason="HTTP 503")
RETRY_AFTER = SinkOutcome(applied=False, retryable=True, retry_after_s=45, reason="HTTP 429")
PERMANENT = SinkOutcome(applied=False, retryable=False, reason="HTTP 400: bad amount")


def facts(receive_count: int = 1, limit: int | None = LIMIT, **known: object) -> Facts:
    return Facts(receive_count=receive_count, max_receive_count=limit, **known)  # type: ignore[arg-type]


ROWS = [
    # (what is known, the verdict)
    pytest.param(
        facts(error="database is locked"),
        Verdict(Action.LEAVE, reason="database is locked"),
        id="error: left to its visibility",
    ),
    pytest.param(
        facts(3, error="database is locked"),
        Verdict(Action.FAIL_LAST_RECEIVE, Outcome.FAILED, reason="database is locked"),
        id="error on the last receive: counted failed, left as is",
    ),
    pytest.param(
        facts(problem="bad JSON"),
        Verdict(Action.DEAD_LETTER, Outcome.DEAD_LETTERED, reason="bad JSON"),
        id="not an envelope: DLQ",
    ),
    pytest.param(
        facts(3, problem="unknown cron 'x'"),
        Verdict(Action.DEAD_LETTER, Outcome.DEAD_LETTERED, reason="unknown cron 'x'"),
        id="not an envelope on the last receive: still DLQ at once",
    ),
    pytest.param(
        facts(let_go="another cron's"),
        Verdict(Action.RELEASE, visibility_s=0, reason="another cron's"),
        id="let go: released, not counted",
    ),
    pytest.param(
        facts(2, let_go="a stop came before it started"),
        Verdict(Action.RELEASE, visibility_s=0, reason="a stop came before it started"),
        id="let go before the last receive: released, not counted",
    ),
    pytest.param(
        facts(3, let_go="an earlier one of its group"),
        Verdict(Action.FAIL_LAST_RECEIVE, Outcome.FAILED, 0, "an earlier one of its group"),
        id="let go on the last receive: counted failed, released",
    ),
    pytest.param(
        facts(limit=None, receive_count=50, let_go="another cron's"),
        Verdict(Action.RELEASE, visibility_s=0, reason="another cron's"),
        id="let go on a queue without a DLQ: never the last receive",
    ),
    pytest.param(
        facts(applied=True),
        Verdict(Action.SKIP_APPLIED, Outcome.SUCCEEDED),
        id="applied before: deleted, succeeded",
    ),
    pytest.param(
        facts(3, applied=True),
        Verdict(Action.SKIP_APPLIED, Outcome.SUCCEEDED),
        id="applied before, last receive: deleted, succeeded",
    ),
    pytest.param(
        facts(superseded=True),
        Verdict(Action.SKIP_SUPERSEDED, Outcome.SUPERSEDED),
        id="a newer version of its record is applied: deleted, superseded",
    ),
    pytest.param(
        facts(3, superseded=True),
        Verdict(Action.SKIP_SUPERSEDED, Outcome.SUPERSEDED),
        id="superseded on the last receive: deleted, superseded",
    ),
    pytest.param(
        facts(applied=True, superseded=True),
        Verdict(Action.SKIP_APPLIED, Outcome.SUCCEEDED),
        id="applied itself and older than the record: it is in place, succeeded",
    ),
    pytest.param(facts(), Verdict(Action.APPLY), id="not applied: apply"),
    pytest.param(
        facts(sink=APPLIED),
        Verdict(Action.RECORD_APPLIED, Outcome.SUCCEEDED),
        id="sink applied it: recorded, deleted, succeeded",
    ),
    pytest.param(
        facts(sink=PERMANENT),
        Verdict(Action.DEAD_LETTER, Outcome.DEAD_LETTERED, reason="HTTP 400: bad amount"),
        id="sink failed for good: DLQ with the reason",
    ),
    pytest.param(
        facts(1, sink=RETRYABLE),
        Verdict(Action.RETRY, Outcome.RETRY, 2, "HTTP 503"),
        id="retryable, first receive: back in 2 s",
    ),
    pytest.param(
        facts(2, sink=RETRYABLE),
        Verdict(Action.RETRY, Outcome.RETRY, 4, "HTTP 503"),
        id="retryable, second receive: back in 4 s",
    ),
    pytest.param(
        facts(1, sink=RETRY_AFTER),
        Verdict(Action.RETRY, Outcome.RETRY, 45, "HTTP 429"),
        id="retryable with Retry-After: the server's delay when longer",
    ),
    pytest.param(
        facts(3, sink=RETRYABLE),
        Verdict(Action.FAIL_LAST_RECEIVE, Outcome.FAILED, 0, "retries exhausted: HTTP 503"),
        id="retryable on the last receive: counted failed, released for the redrive",
    ),
    pytest.param(
        facts(7, limit=None, sink=RETRYABLE, backoff=Backoff(base_s=1, cap_s=10)),
        Verdict(Action.RETRY, Outcome.RETRY, 10, "HTTP 503"),
        id="retryable without a DLQ: retried forever, backoff capped",
    ),
]


@pytest.mark.parametrize(("known", "verdict"), ROWS)
def test_each_row_of_the_per_message_rules(known: Facts, verdict: Verdict) -> None:
    assert decide(known) == verdict


def test_the_table_starts_no_thread() -> None:
    before = threading.active_count()
    for row in ROWS:
        decide(row.values[0])  # type: ignore[arg-type]
    assert threading.active_count() == before


def test_precedence_error_over_problem_over_let_go_over_applied() -> None:
    everything = facts(error="boom", problem="bad JSON", let_go="stop", applied=True, sink=APPLIED)
    assert decide(everything).action is Action.LEAVE
    assert decide(facts(problem="bad", let_go="stop", applied=True)).action is Action.DEAD_LETTER
    assert decide(facts(let_go="stop", applied=True)).action is Action.RELEASE
    assert decide(facts(applied=True, sink=PERMANENT)).action is Action.SKIP_APPLIED


@pytest.mark.parametrize(
    ("action", "done_with"),
    [
        (Action.SKIP_APPLIED, True),
        (Action.SKIP_SUPERSEDED, True),
        (Action.RECORD_APPLIED, True),
        (Action.DEAD_LETTER, True),
        (Action.APPLY, False),
        (Action.RETRY, False),
        (Action.FAIL_LAST_RECEIVE, False),
        (Action.RELEASE, False),
        (Action.LEAVE, False),
    ],
)
def test_only_deleted_or_dead_lettered_messages_let_their_group_go_on(
    action: Action, done_with: bool
) -> None:
    assert Verdict(action).done_with is done_with


@pytest.mark.parametrize(
    ("error", "stops"),
    [
        (QueueError("gone", code=ErrorCode.QUEUE_NOT_FOUND), True),
        (StateError("no table", code=ErrorCode.STATE_NOT_FOUND), True),
        (QueueError("denied", code=ErrorCode.ACCESS_DENIED), True),
        (QueueError("no keys", code=ErrorCode.CREDENTIALS_MISSING), True),
        (QueueError("bad keys", code=ErrorCode.CREDENTIALS_INVALID), True),
        (ConfigError("bad config"), True),
        (QueueError("slow", code=ErrorCode.QUEUE_THROTTLED), False),
        (QueueError("down", code=ErrorCode.QUEUE_UNREACHABLE), False),
        (StateError("locked"), False),
    ],
)
def test_errors_that_stop_the_worker_at_once(error: QueueError, stops: bool) -> None:
    assert unfixable(error) is stops
    assert stops_worker(error, errors_in_a_row=1) is stops


def test_a_transient_error_stops_the_worker_once_it_keeps_happening() -> None:
    transient = StateError("database is locked")
    limit = decision.MAX_CONSECUTIVE_ERRORS
    assert not stops_worker(transient, errors_in_a_row=limit - 1)
    assert stops_worker(transient, errors_in_a_row=limit)
