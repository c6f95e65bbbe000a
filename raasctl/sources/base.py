"""The source port: where reports come from (fixture files embedded, Workday RaaS deployed)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Prompts:
    """Report prompts (Workday's From_Date / To_Date), computed from the run time."""

    from_date: datetime
    to_date: datetime


@dataclass(frozen=True)
class Unreadable:
    """A report entry that cannot be read as an object (not an object, nested too deep, a
    number too long, bad JSON inside it): counted invalid with the reason, the report goes on."""

    reason: str


ReportEntry = dict[str, Any] | Unreadable


class Source(ABC):
    """Stream a report's entries one at a time; memory never grows with the report.

    Errors are raised as `raasctl.errors.SourceError` (exit 1) with an ErrorCode.
    """

    @abstractmethod
    def entries(self, cron: str, report: str, prompts: Prompts) -> Iterator[ReportEntry]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
