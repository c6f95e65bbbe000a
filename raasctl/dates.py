"""Workday date formats and the report window (DESIGN.md "The four cron jobs").

Workday writes a date with its time-zone offset straight after the day (`2026-11-27-08:00`,
the xsd:date form RaaS uses for Date prompts and date columns) and a moment as
`2026-11-27T00:00:00.000-08:00`. Report columns may come in any of these forms, or as a
bare `2026-11-27`. The prompts raasctl sends (`From_Date`, `To_Date`) always use the date
form with an explicit offset, so the window means the same day whatever the tenant's zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

from raasctl.errors import UsageError
from raasctl.sources.base import Prompts

# A date, optionally followed by an offset: 2026-11-27, 2026-11-27-08:00, 2026-11-27Z.
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(Z|[+-]\d{2}:\d{2})?$")


def parse_workday_date(text: str) -> date:
    """The calendar date a Workday date or date-time names, as written (its own offset).

    Accepts `2026-11-27`, `2026-11-27-08:00`, `2026-11-27Z` and
    `2026-11-27T00:00:00.000-08:00`; raises ValueError for anything else.
    """
    value = text.strip()
    match = _DATE.match(value)
    try:
        if match:
            return date.fromisoformat(match.group(1))
        if "T" in value:
            return datetime.fromisoformat(value).date()
    except ValueError:
        pass  # 2026-13-01 looks like a date but is none
    raise ValueError(f"{text!r} is not a Workday date (YYYY-MM-DD, optionally with an offset)")


@dataclass(frozen=True)
class RelativeBound:
    """A bound relative to the run time, which is known only when the run starts: `ago`
    before it (`2d`, `12h`), or midnight `days_back` days before its day (`today` 0,
    `yesterday` 1) in the cron's time zone."""

    ago: timedelta | None = None
    days_back: int = 0

    def moment(self, now: datetime) -> datetime:
        if self.ago is not None:
            return now - self.ago
        return datetime.combine(now.date() - timedelta(days=self.days_back), time(), now.tzinfo)


Bound = date | datetime | RelativeBound
_DAYS_BACK = {"today": 0, "yesterday": 1}
# The config's lookback units, so `--since 2d` reads as `lookback: 2d` does.
_AGO = re.compile(r"^(\d+)\s*([mhdw])$")
_AGO_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_bound(text: str) -> Bound:
    """A --since/--until value: `2026-11-27`, `2026-11-27-08:00`, an ISO date-time, a
    duration before the run time (`30m`, `12h`, `2d`, `1w`), `today` or `yesterday`.

    A bare date stays a date (midnight in the run's time zone is applied later); a date
    with an offset becomes midnight at that offset.
    """
    value = text.strip()
    if value.lower() in _DAYS_BACK:
        return RelativeBound(days_back=_DAYS_BACK[value.lower()])
    ago = _AGO.match(value)
    if ago:
        return RelativeBound(ago=timedelta(**{_AGO_UNITS[ago.group(2)]: int(ago.group(1))}))
    match = _DATE.match(value)
    try:
        if match:
            day = date.fromisoformat(match.group(1))
            if match.group(2) is None:
                return day
            offset = datetime.fromisoformat(f"{match.group(1)}T00:00{match.group(2)}").tzinfo
            return datetime.combine(day, time(), tzinfo=offset)
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date (YYYY-MM-DD, YYYY-MM-DD-08:00, YYYY-MM-DDTHH:MM[+00:00], "
            "a duration before now like 12h or 2d, today or yesterday)"
        ) from None


def format_offset(moment: datetime) -> str:
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("a Workday date needs a time-zone offset; the datetime is naive")
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def format_workday_date(moment: datetime) -> str:
    """`2026-11-27-08:00`: the moment's local date and its offset."""
    return f"{moment.date().isoformat()}{format_offset(moment)}"


def prompt_params(prompts: Prompts) -> dict[str, str]:
    """The report's query parameters for a window."""
    return {
        "From_Date": format_workday_date(prompts.from_date),
        "To_Date": format_workday_date(prompts.to_date),
    }


def _as_moment(bound: Bound, zone: tzinfo, now: datetime) -> datetime:
    if isinstance(bound, RelativeBound):
        return bound.moment(now)
    if isinstance(bound, datetime):
        return bound if bound.tzinfo is not None else bound.replace(tzinfo=zone)
    return datetime.combine(bound, time(), tzinfo=zone)


def report_window(
    now: datetime,
    lookback: timedelta,
    since: Bound | None = None,
    until: Bound | None = None,
) -> Prompts:
    """The window a run asks for: `lookback` back from the run time, unless overridden.

    `now` must be time-zone aware (the cron's zone); dates and naive date-times given as
    `since`/`until` are read in that zone. With only `until`, the window is the lookback
    ending there; with only `since`, it runs until now.
    """
    zone = now.tzinfo
    if zone is None or now.utcoffset() is None:
        raise ValueError("report_window needs a time-zone aware run time")
    to_date = _as_moment(until, zone, now) if until is not None else now
    from_date = _as_moment(since, zone, now) if since is not None else to_date - lookback
    if from_date > to_date:
        raise UsageError(
            f"the report window starts ({from_date.isoformat()}) after it ends "
            f"({to_date.isoformat()}): check --since and --until"
        )
    return Prompts(from_date=from_date, to_date=to_date)
