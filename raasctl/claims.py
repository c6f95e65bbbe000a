"""Enqueue claims, for a queue that drops a duplicate silently (SQS: a message whose
deduplication id was sent within the last 5 minutes is accepted and never delivered).

Before a batch is sent its keys are claimed in State for the run, and once the queue took
them the claims are confirmed (`sent`). A re-run within the window counts a key claimed by a
live run, or sent by a dead one, as a duplicate itself, so its total counts only messages that
will arrive. A claim no longer stands when it is older than the window, older than the last
purge (the purge removed its message), or unconfirmed and made by a run whose producer died
mid-enqueue (its lease lapsed: whether its send got through is not known): then the key is
sent again, under a deduplication id of the new run, since the queue may still hold the old
id. A second delivery is harmless: the sink applies a key once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from raasctl.envelope import dedup_id
from raasctl.producer import Pending
from raasctl.runs import producer_alive
from raasctl.state.base import Claim, State

SQS_DEDUP_WINDOW_S = 300


class ClaimBook:
    def __init__(
        self,
        state: State,
        run_id: str,
        *,
        purged_at: datetime | None,
        now: Callable[[], datetime],
        window_s: float = SQS_DEDUP_WINDOW_S,
    ) -> None:
        self.state = state
        self.run_id = run_id
        self.purged_at = purged_at
        self.window = timedelta(seconds=window_s)
        self._now = now
        self._live: dict[str, bool] = {}
        self._keys: dict[str | None, str] = {}  # dedup id -> key, until confirmed

    def sort(self, items: list[Pending]) -> tuple[list[Pending], int]:
        """The items to send (claimed for this run now) and how many are duplicates."""
        if not items:
            return [], 0
        now = self._now()
        claims = self.state.claims([item.key for item in items])
        send: list[Pending] = []
        for item in items:
            claim = claims.get(item.key)
            if claim is not None and claim.run_id != self.run_id:
                if self._stands(claim, now):
                    continue
                # Taken over: the queue may still hold the old deduplication id.
                item = Pending(
                    item.key,
                    replace(item.message, dedup_id=dedup_id(f"{item.key}#{self.run_id}")),
                )
            send.append(item)
            self._keys[item.message.dedup_id] = item.key
        self.state.put_claims(self.run_id, [item.key for item in send], now)
        return send, len(items) - len(send)

    def confirm(self, dedup_ids: list[str | None]) -> None:
        """The queue took these messages: their claims stand whatever becomes of the run."""
        keys = [self._keys.pop(dedup_id) for dedup_id in dedup_ids if dedup_id in self._keys]
        if keys:
            self.state.put_claims(self.run_id, keys, self._now(), sent=True)

    def _stands(self, claim: Claim, now: datetime) -> bool:
        if claim.claimed_at <= now - self.window:
            return False
        if self.purged_at is not None and claim.claimed_at <= self.purged_at:
            return False
        if claim.sent:  # its message is in the queue, or was handled
            return True
        if claim.run_id not in self._live:
            run = self.state.get_run(claim.run_id)
            # A run that finished enqueueing has its messages in the queue (or handled).
            self._live[claim.run_id] = run is not None and (
                run.total is not None or producer_alive(self.state, run, now)
            )
        return self._live[claim.run_id]
