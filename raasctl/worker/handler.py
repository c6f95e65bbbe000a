"""Carrying out the verdicts of `decision`: the calls to State, the sink and the queue that
handle one message, or a receive's messages as one batch (raasctl/worker/releaser.py lets go
of those not handled)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from raasctl.codes import ErrorCode, InfoCode
from raasctl.envelope import Envelope
from raasctl.errors import RaasctlError, SinkError, StateError
from raasctl.logs import event
from raasctl.queues.base import Queue
from raasctl.ratelimit import RateLimiter
from raasctl.redaction import shorten
from raasctl.sinks.base import Sink
from raasctl.state.base import AppliedEntry, Entry, EntryStatus, Known, State
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
)
from raasctl.worker.lifecycle import Lifecycle
from raasctl.worker.messages import Held, Settled, envelope_fields
from raasctl.worker.recorder import Recorder
from raasctl.worker.releaser import ReceiveLimit, Releaser, SettleFn
from raasctl.worker.results import Tally
from raasctl.worker.settler import Settler

MAX_REASON_CHARS = 1000  # a DLQ reason: scrubbed of secrets, then cut
# Facts and verdicts kept for reuse (`Handler._judge`): a few receive counts and flags.
MAX_MEMO = 64


class Handler:
    """Handles one message at a time (a slot calls it): gathers the facts, asks `decide`, and
    carries the verdict out. Thread-safe; one instance serves every slot."""

    def __init__(
        self,
        *,
        queue: Queue,
        state: State,
        sink: Sink,
        limiter: RateLimiter,
        lifecycle: Lifecycle,
        tally: Tally,
        limit: ReceiveLimit,
        releaser: Releaser,
        settle: SettleFn,
        backoff: Backoff,
        visibility_timeout_s: int,
        now: Callable[[], datetime],
        recorder: Recorder | None = None,
    ) -> None:
        self.recorder = recorder or Recorder()  # run statistics and metrics
        self.queue = queue
        self.state = state
        self.sink = sink
        self.limiter = limiter
        self.lifecycle = lifecycle
        self.tally = tally
        self.limit = limit
        self.releaser = releaser
        self.settle = settle
        self.backoff = backoff
        self.visibility_timeout_s = visibility_timeout_s
        self._now = now
        self._lock = threading.Lock()
        self._errors_in_a_row = 0
        self._failing: RaasctlError | None = None  # the last message failed with this
        # Facts are immutable, and most messages share theirs (first receive, not applied):
        # the facts and verdict of each such case, made once (`_judge`), and the verdict once
        # the sink applied it, by the facts' id (the entry keeps the facts, so the id stays
        # theirs).
        self._judged: dict[tuple[int, int | None, bool, bool], tuple[Facts, Verdict]] = {}
        self._recorded: dict[int, tuple[Facts, Verdict]] = {}
        # The settler whose transaction a batch's apply may share (`_apply_and_count`), and
        # whether it can (asked at the first batch, when the state has made its tables).
        self.joined: Settler | None = None
        self._joins: bool | None = None
        # Whether the sink writes each applied entry's idempotency record in the state itself
        # (asked at the first apply, when the state has made its tables).
        self._sink_records: bool | None = None

    def handle(self, held: Held) -> bool:
        """Handle one message; True when it is done with (deleted, or in the DLQ), so the next
        message of its group may go on."""
        try:
            facts, verdict = self._judge(held)
            if verdict.action is Action.APPLY:
                verdict = self._apply(held, facts)
            else:
                self._carry_out(held, verdict, facts)
        except RaasctlError as exc:
            self._failed(held, exc)
            return False
        self._succeeded()
        return verdict.done_with

    def handle_batch(self, batch: list[Held]) -> None:
        """Handle messages that need no order between them, with one sink call for those to
        apply: for a sink that applies a batch in one transaction (the SQLite ledger), where
        a slot and a commit per message would cost more than the apply itself. Only without
        a rate limit: every apply of the batch starts at once."""
        to_apply: list[tuple[Held, Facts]] = []
        # Handed to the settler together at the end, and the errors-in-a-row count reset
        # once per run of successes: a lock each, not one per message.
        settled: list[Settled] = []
        succeeded = False
        try:
            for held in batch:
                try:
                    facts, verdict = self._judge(held)
                    if verdict.action is Action.APPLY:
                        self._before_apply(held, facts)
                        to_apply.append((held, facts))
                        continue
                    self._carry_out(held, verdict, facts, settled)
                except RaasctlError as exc:
                    succeeded = self._fail_after(succeeded, held, exc)
                    continue
                succeeded = True
            if not to_apply:
                return
            if self.limiter.begin(self.lifecycle.abandoning):
                for held, facts in to_apply:
                    self._let_go(held, facts)
                return
            envelopes = [held.envelope for held, _ in to_apply if held.envelope is not None]
            errors = self._apply_and_count(to_apply, envelopes)
            counted = errors is not None  # those applied are counted and deleted already
            if errors is None:
                with self.recorder.sink_calls([(e.run_id, e.cron) for e in envelopes]):
                    errors = self.sink.apply_batch(envelopes)
            for (held, facts), error in zip(to_apply, errors, strict=True):
                if error is None and counted:
                    succeeded = True
                    continue
                try:
                    self._after_apply(held, facts, error, settled)
                except RaasctlError as exc:
                    succeeded = self._fail_after(succeeded, held, exc)
                    continue
                succeeded = True
        finally:
            if settled:
                self.settle(*settled)
            if succeeded:
                self._succeeded()

    def _apply_and_count(
        self, to_apply: list[tuple[Held, Facts]], envelopes: list[Envelope]
    ) -> list[SinkError | None] | None:
        """Apply the batch and count and delete what it applied in one transaction, where the
        sink, the state and the queue share one (the ledger in the embedded file): a commit
        a receive, not two, and nothing applied that is not counted. Per message, the sink's
        error (None: applied, counted, deleted); None where they cannot share one.

        The verdicts on success are carried out first, outside the transaction (its write
        lock is held for SQLite's work only). When the transaction fails, or a run's count
        does, nothing of it happens: every message comes back, as after a failed apply."""
        settler = self.joined
        if settler is None:
            return None
        if self._joins is None:
            self._joins = settler.joins_writes() and self.sink.records_applied_in(self.state)
        if not self._joins:
            return None
        done: list[Settled] = []
        for held, facts in to_apply:
            self._carry_out(held, self._applied_verdict(facts), facts, done)
        apply = self.sink.prepare_batch(envelopes)
        try:
            with settler.together():
                with self.recorder.sink_calls([(e.run_id, e.cron) for e in envelopes]):
                    errors = apply()
                applied = [item for item, error in zip(done, errors, strict=True) if error is None]
                written = settler.write(applied)
                if written.uncounted:
                    # Undone with the apply: what is applied is counted, or neither is.
                    raise StateError("the batch's outcomes could not be recorded")
        except RaasctlError as exc:
            failed = SinkError(f"applying and counting the batch failed: {exc}", retryable=True)
            return [failed for _ in to_apply]
        settler.committed(written)
        return errors

    def _fail_after(self, succeeded: bool, held: Held, exc: RaasctlError) -> bool:
        """A message of a batch failed: first the successes before it end the errors in a
        row, as one by one they would have. False: none since."""
        if succeeded:
            self._succeeded()
        self._failed(held, exc)
        return False

    @property
    def failing(self) -> RaasctlError | None:
        """The queue or state error the last handled message met, if it failed."""
        with self._lock:
            return self._failing

    def _facts(self, held: Held) -> Facts:
        return Facts(
            receive_count=held.message.receive_count,
            max_receive_count=self.limit.value,
            problem=held.problem,
            backoff=self.backoff,
        )

    def _judge(self, held: Held) -> tuple[Facts, Verdict]:
        """The facts known before any sink call, and the verdict on them. (Facts are built
        once, not copied with `replace`: this runs for every message.)"""
        envelope = held.envelope
        problem = held.problem
        applied = superseded = False
        if envelope is not None and problem is None:
            known = held.known or self._read_known(envelope)
            applied = known.applied
            superseded = (
                not applied
                and bool(envelope.version)
                and known.applied_version is not None
                and envelope.version < known.applied_version
            )
        key = (held.message.receive_count, self.limit.value, applied, superseded)
        if problem is None and (judged := self._judged.get(key)) is not None:
            return judged
        facts = Facts(
            receive_count=held.message.receive_count,
            max_receive_count=self.limit.value,
            problem=problem,
            applied=applied,
            superseded=superseded,
            backoff=self.backoff,
        )
        judged = facts, decide(facts)
        if problem is None and len(self._judged) < MAX_MEMO:
            self._judged[key] = judged
        return judged

    def _applied_verdict(self, facts: Facts) -> Verdict:
        """The verdict once the sink applied the message of `facts`."""
        recorded = self._recorded.get(id(facts))
        if recorded is not None and recorded[0] is facts:
            return recorded[1]
        verdict = decide(applied_facts(facts))
        if len(self._recorded) < MAX_MEMO:
            self._recorded[id(facts)] = (facts, verdict)
        return verdict

    def _apply(self, held: Held, facts: Facts) -> Verdict:
        envelope = held.envelope
        assert envelope is not None  # decide() applies only valid envelopes
        self._before_apply(held, facts)
        # The start the rate limit counts is the call to the downstream. It waits about
        # one interval at most, since the token was taken before the receive.
        with self.recorder.limiter_wait():
            stopped = self.limiter.begin(self.lifecycle.abandoning)
        if stopped:
            return self._let_go(held, facts)
        try:
            with self.recorder.sink_call(envelope.run_id, envelope.cron):
                self.sink.apply(envelope)  # APPLIED and ALREADY_APPLIED alike: in place
        except SinkError as exc:
            return self._after_apply(held, facts, exc)
        return self._after_apply(held, facts, None)

    def _before_apply(self, held: Held, facts: Facts) -> None:
        envelope = held.envelope
        if facts.last_receive and envelope is not None:
            # Counted failed before the sink call, replaced on success: a crash during the
            # call leaves the run's counts agreeing with the DLQ, which is where the queue
            # moves the message next.
            self.state.record_outcomes(
                envelope.run_id, {envelope.key: EntryStatus.FAILED}, self._now()
            )

    def _let_go(self, held: Held, facts: Facts) -> Verdict:
        why = "a stop came before it started"
        held.settle()
        self.releaser.release(held.message, held.envelope, why)
        return decide(replace(facts, let_go=why))

    def _after_apply(
        self,
        held: Held,
        facts: Facts,
        error: SinkError | None,
        settled: list[Settled] | None = None,
    ) -> Verdict:
        """Carry out the verdict on the sink call's result (`error` None: applied);
        `settled`: see `_carry_out`."""
        if error is None:
            verdict = self._applied_verdict(facts)
            self._carry_out(held, verdict, facts, settled)
            return verdict
        outcome = SinkOutcome(
            False, error.retryable, error.retry_after_s, str(error), error.stops_worker
        )
        verdict = decide(replace(facts, sink=outcome))
        self._carry_out(held, verdict, facts, settled)
        if error.stops_worker:
            self.lifecycle.fail(error)
        return verdict

    def _read_known(self, envelope: Envelope) -> Known:
        """What State knows of the entry, when the receive's batch read did not say (it
        failed, or the message was not read with one)."""
        entry = Entry(envelope.key, envelope.cron, envelope.entity_id or None)
        return self.state.known([entry])[entry.key]

    def _carry_out(
        self,
        held: Held,
        verdict: Verdict,
        facts: Facts | None = None,
        settled: list[Settled] | None = None,
    ) -> None:
        """`facts`: the message's, when the caller has them (else they are gathered);
        `settled`: where a batch gathers what it hands to the settler at its end (None: at
        once)."""
        message, envelope = held.message, held.envelope
        action = verdict.action
        if action in (Action.SKIP_APPLIED, Action.RECORD_APPLIED, Action.SKIP_SUPERSEDED):
            assert envelope is not None and verdict.outcome is not None
            applied = None
            if action is Action.RECORD_APPLIED:
                # Written with the outcome, in the settler's batch: a crash before then only
                # repeats an apply the sink's own idempotency makes harmless.
                if self._sink_records is None:
                    self._sink_records = self.sink.records_applied_in(self.state)
                applied = AppliedEntry(
                    envelope.key,
                    envelope.run_id,
                    envelope.cron,
                    envelope.entity_id or None,
                    envelope.version or None,
                    self._sink_records,
                )
            elif action is Action.SKIP_SUPERSEDED:
                event(
                    InfoCode.ENTRY_SUPERSEDED,
                    f"not applied: a newer version of {envelope.entity_id} is applied "
                    f"(this one is {envelope.version})",
                    message_id=message.message_id,
                    entity_id=envelope.entity_id,
                    version=envelope.version,
                    **envelope_fields(envelope),
                )
            held.settle()  # the heartbeat keeps off from here, so extended_at is final
            item = Settled(
                verdict.outcome,
                envelope.run_id,
                envelope.key,
                message.receipt_handle,
                visible_until=held.extended_at + self.visibility_timeout_s,
                last_receive=(facts or self._facts(held)).last_receive,
                applied=applied,
            )
            if settled is None:
                self.settle(item)
            else:
                settled.append(item)
            return
        held.settle()
        if action is Action.RELEASE:
            self.releaser.release(message, envelope, verdict.reason)
            return
        if action is Action.DEAD_LETTER:
            self.queue.dead_letter(message, shorten(verdict.reason, MAX_REASON_CHARS))
            event(
                InfoCode.MESSAGE_DEAD_LETTERED,
                f"sent to the DLQ: {verdict.reason}",
                message_id=message.message_id,
                reason=verdict.reason,
                level=logging.WARNING,
                **envelope_fields(envelope),
            )
        elif action is Action.FAIL_LAST_RECEIVE:
            # The last attempt: visible again at once so the queue's redrive moves it to the
            # DLQ on the next receive.
            self.queue.change_visibility(message.receipt_handle, 0)
            event(
                ErrorCode.MESSAGE_FAILED,
                verdict.reason,
                message_id=message.message_id,
                attempt=message.receive_count,
                **envelope_fields(envelope),
            )
        elif action is Action.RETRY:
            assert verdict.visibility_s is not None
            self.queue.change_visibility(message.receipt_handle, verdict.visibility_s)
            event(
                InfoCode.MESSAGE_RETRY,
                f"will retry in {verdict.visibility_s} s: {verdict.reason}",
                message_id=message.message_id,
                attempt=message.receive_count,
                delay_s=verdict.visibility_s,
                level=logging.WARNING,
                **envelope_fields(envelope),
            )
        else:  # pragma: no cover - decide() gives no other verdict here
            raise AssertionError(f"unexpected verdict {verdict}")
        assert verdict.outcome is not None
        self.settle(Settled(verdict.outcome, held.run_id, held.key))

    def _succeeded(self) -> None:
        with self._lock:
            self._errors_in_a_row = 0
            self._failing = None

    def _failed(self, held: Held, exc: RaasctlError) -> None:
        """The queue or state failed mid-way: the message comes back after its visibility
        runs out and is retried then; the sink's idempotency covers a repeated apply."""
        held.settle()
        event(
            exc.code,
            f"handling a message failed: {exc}",
            message_id=held.message.message_id,
            **envelope_fields(held.envelope),
        )
        verdict = decide(replace(self._facts(held), error=str(exc)))
        if verdict.outcome is Outcome.FAILED:
            self.releaser.count_failed(
                held.message, held.envelope, "left to its visibility timeout after an error"
            )
        self.tally.add("errors")
        with self._lock:
            self._errors_in_a_row += 1
            self._failing = exc
            errors_in_a_row = self._errors_in_a_row
        if stops_worker(exc, errors_in_a_row):
            self.lifecycle.fail(exc)


def applied_facts(facts: Facts) -> Facts:
    """`facts` with the sink's answer APPLIED: `dataclasses.replace` without its cost, for
    the common case of every message."""
    return Facts(
        receive_count=facts.receive_count,
        max_receive_count=facts.max_receive_count,
        problem=facts.problem,
        let_go=facts.let_go,
        applied=facts.applied,
        superseded=facts.superseded,
        sink=APPLIED,
        error=facts.error,
        backoff=facts.backoff,
    )
