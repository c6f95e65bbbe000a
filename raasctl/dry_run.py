"""`run --dry-run`: the cron's report fetched and mapped as `run` would, nothing enqueued and
nothing recorded."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from raasctl.dates import Bound
from raasctl.jobs import EntryInvalid, map_report
from raasctl.runner import EntryCounter, job_for, log_invalid, report_name, run_window
from raasctl.sources.base import Prompts

if TYPE_CHECKING:
    from raasctl.runtime import Runtime


@dataclass(frozen=True)
class DryRunPayload:
    key: str
    entity_id: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class DryRun:
    cron: str
    prompts: Prompts
    entries: int
    invalid: int
    payloads: list[DryRunPayload]

    def as_dict(self) -> dict[str, Any]:
        return {
            "cron": self.cron,
            "from_date": self.prompts.from_date.isoformat(),
            "to_date": self.prompts.to_date.isoformat(),
            "entries": self.entries,
            "messages": len(self.payloads),
            "invalid": self.invalid,
            "payloads": [asdict(item) for item in self.payloads],
        }


def dry_run(
    runtime: Runtime,
    cron: str,
    *,
    since: Bound | None = None,
    until: Bound | None = None,
    now: datetime | None = None,
) -> DryRun:
    """Fetch and map the report as `run` would; enqueue nothing, record nothing."""
    now = now or datetime.now(UTC)
    job, settings = job_for(runtime, cron)
    prompts = run_window(settings, now, since, until)
    source = runtime.source()
    try:
        entries = EntryCounter(source.entries(cron, report_name(job, settings), prompts))
        payloads: list[DryRunPayload] = []
        invalid = 0
        for item in map_report(job, entries, settings.columns):
            if isinstance(item, EntryInvalid):
                invalid += 1
                log_invalid(cron, None, item)
            else:
                payloads.append(DryRunPayload(item.key, item.entity_id, item.payload))
    finally:
        source.close()
    return DryRun(cron, prompts, entries.count, invalid, payloads)
