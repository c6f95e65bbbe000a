"""The store of per-second run statistics (raasctl/runstats.py), beside the run records.

A worker writes each (run, worker, second) row once, when the second is over (the recorder
keeps the second it is in until then), so a write puts whole rows and never merges. Rows of
different workers are separate and the report adds them up.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from raasctl.errors import StateError
from raasctl.runstats import StatsRow

if TYPE_CHECKING:
    from raasctl.state.base import State


class RunStatsStore(ABC):
    """Errors are raised as `raasctl.errors.StateError` (exit 1)."""

    @abstractmethod
    def write(self, rows: Sequence[StatsRow]) -> None:
        """Store these rows (a row written again replaces itself)."""

    @abstractmethod
    def rows(self, run_id: str) -> list[StatsRow]:
        """Every worker's rows of a run, oldest second first."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def open_run_stats(state: State) -> RunStatsStore:
    """The statistics store that lives with `state`: the same SQLite file, or the same
    DynamoDB table. Composed here rather than in the state classes, which keep to runs."""
    from raasctl.state.dynamodb import DynamoState
    from raasctl.state.sqlite import SqliteState

    if isinstance(state, SqliteState):
        from raasctl.state.sqlite_stats import SqliteRunStats

        return SqliteRunStats(state.path)
    if isinstance(state, DynamoState):
        from raasctl.state.dynamodb_stats import DynamoRunStats

        return DynamoRunStats(state.client, state.table)
    raise StateError(f"{type(state).__name__} keeps no run statistics")


# Both adapters keep a row's latency histogram as one JSON text: {"bucket": calls}.


def histogram_text(histogram: dict[int, int]) -> str:
    return json.dumps({str(index): count for index, count in sorted(histogram.items())})


def histogram_from(text: str) -> dict[int, int]:
    loaded: dict[str, Any] = json.loads(text or "{}")
    return {int(index): int(count) for index, count in loaded.items()}
