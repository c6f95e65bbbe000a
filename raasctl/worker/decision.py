"""What happens to one message now: the worker's per-message rules as one pure table.

No threads, no I/O, no clock. The roles gather what is known about a message (`Facts`) and
carry out the `Verdict`; a table test drives `decide` directly. A message is decided up to
three times as facts arrive: when it is received (parse result, already applied), when its
start was due (a stop may have come first), and after the sink call.

| known about the message                        | verdict                         | counted as   |
| ---------------------------------------------- | ------------------------------- | ------------ |
| a queue or state call failed while handling it | LEAVE (to its visibility)       | -            |
|   ... on its last allowed receive              | FAIL_LAST_RECEIVE, left as is   | failed       |
| not a valid envelope, or an unknown cron       | DEAD_LETTER with the reason     | dead_lettered|
| let go unhandled (another cron's, a stop came  | RELEASE (visibility 0)          | -            |
|   first, an earlier one of its group not done) |                                 |              |
|   ... on its last allowed receive              | FAIL_LAST_RECEIVE, visibility 0 | failed       |
| its key was applied already                    | SKIP_APPLIED (delete)           | succeeded    |
| older than the version applied for its record  | SKIP_SUPERSEDED (delete)        | superseded   |
| not applied, the sink not called yet           | APPLY                           | -            |
| the sink applied it (or had: HTTP 409)         | RECORD_APPLIED (record, delete) | succeeded    |
| the sink cannot apply anything (it moved: 3xx) | as let go (RELEASE), and the    | -            |
|                                                |   worker stops                  |              |
| the sink failed for good (4xx, invalid)        | DEAD_LETTER with the reason     | dead_lettered|
| the sink failed, retryable                     | RETRY, visibility = backoff     | retries      |
|   ... on its last allowed receive              | FAIL_LAST_RECEIVE, visibility 0 | failed       |

"Last allowed receive" is `receive_count >= max_receive_count`: a message let go then without
being deleted is moved to the DLQ by the queue on its next receive, and the worker never sees
it again, so it is counted as failed now and its run still completes.

Counting comes before the delete: the per-entry outcome records in State make counting the
same entry twice a no-op, so a crash between the two, a delete that fails, or a receipt that
lapsed can never lose or double a count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

from raasctl.aws_errors import is_unfixable
from raasctl.errors import ConfigError, RaasctlError

MAX_VISIBILITY_S = 43_200  # SQS's limit: 12 hours
# After this many handler errors in a row (a queue or state service failing, not a sink) the
# worker stops instead of cycling every message through its visibility timeout.
MAX_CONSECUTIVE_ERRORS = 10


class Outcome(StrEnum):
    """What a handled message counts as in its run (the names are the counters')."""

    SUCCEEDED = "succeeded"
    RETRY = "retries"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"
    SUPERSEDED = "superseded"


class Action(StrEnum):
    APPLY = "apply"  # call the sink, then decide again with its outcome
    SKIP_APPLIED = "skip_applied"  # applied before: delete without applying
    SKIP_SUPERSEDED = "skip_superseded"  # a newer version of its record is applied: delete
    RECORD_APPLIED = "record_applied"  # the sink applied it: idempotency record, then delete
    RETRY = "retry"  # visible again after `visibility_s`
    DEAD_LETTER = "dead_letter"  # to the DLQ now, with `reason`
    FAIL_LAST_RECEIVE = "fail_last_receive"  # counted failed; the queue dead-letters it next
    RELEASE = "release"  # visible again at once, not counted
    LEAVE = "leave"  # left to its visibility timeout, not counted


@dataclass(frozen=True)
class SinkOutcome:
    """The sink call's result: applied, or failed (retryable or not) with the reason."""

    applied: bool
    retryable: bool = False
    retry_after_s: float | None = None
    reason: str = ""
    stops_worker: bool = False  # no entry can be applied until an operator acts


APPLIED = SinkOutcome(applied=True)


@dataclass(frozen=True)
class Backoff:
    base_s: float = 2.0
    cap_s: float = 60.0


@dataclass(frozen=True)
class Facts:
    """What is known about one message so far."""

    receive_count: int
    max_receive_count: int | None  # None: the queue has no DLQ redrive limit
    problem: str | None = None  # why the body is not a usable envelope
    let_go: str | None = None  # why it is let go unhandled (another cron's, a stop, its group)
    applied: bool = False  # State has its key's idempotency record
    superseded: bool = False  # a newer version of its record has been applied
    sink: SinkOutcome | None = None  # None: the sink was not called (yet)
    error: str | None = None  # a queue or state call failed while handling it
    backoff: Backoff = Backoff()

    @property
    def last_receive(self) -> bool:
        return self.max_receive_count is not None and self.receive_count >= self.max_receive_count


@dataclass(frozen=True)
class Verdict:
    action: Action
    outcome: Outcome | None = None  # what it counts as; None: not counted
    visibility_s: int | None = None  # the visibility to set; None: leave it as it is
    reason: str = ""

    @property
    def done_with(self) -> bool:
        """Deleted or in the DLQ: the next message of its group may go on."""
        return self.action in (
            Action.SKIP_APPLIED,
            Action.SKIP_SUPERSEDED,
            Action.RECORD_APPLIED,
            Action.DEAD_LETTER,
        )


def decide(facts: Facts) -> Verdict:
    """The verdict for one message (the table in the module docstring, row by row)."""
    last = facts.last_receive
    if facts.error is not None:
        if last:
            return Verdict(Action.FAIL_LAST_RECEIVE, Outcome.FAILED, reason=facts.error)
        return Verdict(Action.LEAVE, reason=facts.error)
    if facts.problem is not None:
        return Verdict(Action.DEAD_LETTER, Outcome.DEAD_LETTERED, reason=facts.problem)
    if facts.let_go is not None:
        if last:
            return Verdict(Action.FAIL_LAST_RECEIVE, Outcome.FAILED, 0, facts.let_go)
        return Verdict(Action.RELEASE, visibility_s=0, reason=facts.let_go)
    if facts.applied:
        return Verdict(Action.SKIP_APPLIED, Outcome.SUCCEEDED)
    if facts.superseded:
        return Verdict(Action.SKIP_SUPERSEDED, Outcome.SUPERSEDED)
    sink = facts.sink
    if sink is None:
        return Verdict(Action.APPLY)
    if sink.applied:
        return Verdict(Action.RECORD_APPLIED, Outcome.SUCCEEDED)
    if sink.stops_worker:  # not this entry's fault: it waits in the queue
        return decide(replace(facts, sink=None, let_go=sink.reason))
    if not sink.retryable:
        return Verdict(Action.DEAD_LETTER, Outcome.DEAD_LETTERED, reason=sink.reason)
    if last:
        return Verdict(
            Action.FAIL_LAST_RECEIVE, Outcome.FAILED, 0, f"retries exhausted: {sink.reason}"
        )
    delay = backoff_s(
        facts.receive_count, facts.backoff.base_s, facts.backoff.cap_s, sink.retry_after_s
    )
    return Verdict(Action.RETRY, Outcome.RETRY, delay, sink.reason)


def backoff_s(
    receive_count: int, base_s: float, cap_s: float, retry_after_s: float | None = None
) -> int:
    """Visibility for the next attempt: base doubling per receive (2, 4, 8 ... s), capped;
    a server's Retry-After wins when it asks for longer. Whole seconds, as SQS takes them."""
    delay = min(cap_s, base_s * 2 ** max(0, receive_count - 1))
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(MAX_VISIBILITY_S, math.ceil(delay))


def unfixable(exc: RaasctlError) -> bool:
    """An error that retrying after a pause cannot mend (a missing queue or state table,
    denied access, no or bad credentials, a configuration error): the worker stops at once
    with it (exit 1 or 2) instead of retrying for minutes. Transient ones (unreachable,
    throttled, generic) are retried."""
    return isinstance(exc, ConfigError) or is_unfixable(exc.code)


def stops_worker(exc: RaasctlError, errors_in_a_row: int) -> bool:
    """A queue or state error ends the worker when retrying cannot mend it, or when it keeps
    happening (MAX_CONSECUTIVE_ERRORS in a row)."""
    return unfixable(exc) or errors_in_a_row >= MAX_CONSECUTIVE_ERRORS
