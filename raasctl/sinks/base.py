"""The sink port: where an entry is applied (SQLite ledger embedded, HTTP callback deployed)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

from raasctl.envelope import Envelope
from raasctl.errors import SinkError

if TYPE_CHECKING:
    from raasctl.state.base import State


class Applied(StrEnum):
    APPLIED = "applied"
    ALREADY_APPLIED = "already_applied"  # e.g. HTTP 409: counts as success


class Sink(ABC):
    """Apply one envelope. Failures raise `raasctl.errors.SinkError` with `retryable` set:
    retryable (408/429/5xx, timeouts, connection errors; `retry_after_s` from Retry-After)
    or permanent (validation, other 4xx), which sends the message to the DLQ at once."""

    # Whether `apply_batch` is one call for the whole batch (a transaction), cheaper than
    # the applies one by one: the worker then hands it a receive's messages together.
    batches: ClassVar[bool] = False

    @abstractmethod
    def apply(self, envelope: Envelope) -> Applied: ...

    def apply_batch(self, envelopes: Sequence[Envelope]) -> list[SinkError | None]:
        """Apply each envelope; per envelope, the error it met (None: in place, applied now
        or before)."""
        errors: list[SinkError | None] = []
        for envelope in envelopes:
            try:
                self.apply(envelope)
            except SinkError as exc:
                errors.append(exc)
            else:
                errors.append(None)
        return errors

    def prepare_batch(self, envelopes: Sequence[Envelope]) -> Callable[[], list[SinkError | None]]:
        """`apply_batch` in two steps: what can be done ahead (checking and converting the
        payloads) now, and the apply itself when the returned function is called (by a worker
        inside a transaction it shares, whose write lock is then held for the apply only)."""
        return lambda: self.apply_batch(envelopes)

    def records_applied_in(self, state: State) -> bool:
        """Whether every apply that succeeds (applied now or before) has written the entry's
        idempotency record in `state` in its own transaction, so that the worker need not
        write it again."""
        return False

    def connect(self) -> None:  # noqa: B027 - optional hook
        """Open for the calling thread what its first apply would open (a connection), ahead
        of it: each worker slot does so as it starts, while the first receive is on its way.
        A failure here is left for that apply to meet and report."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
