"""The sink port: where an entry is applied (SQLite ledger embedded, HTTP callback deployed)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import StrEnum

from raasctl.envelope import Envelope


class Applied(StrEnum):
    APPLIED = "applied"
    ALREADY_APPLIED = "already_applied"  # e.g. HTTP 409: counts as success


class Sink(ABC):
    """Apply one envelope. Failures raise `raasctl.errors.SinkError` with `retryable` set:
    retryable (408/429/5xx, timeouts, connection errors; `retry_after_s` from Retry-After)
    or permanent (validation, other 4xx), which sends the message to the DLQ at once."""

    @abstractmethod
    def apply(self, envelope: Envelope) -> Applied: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
