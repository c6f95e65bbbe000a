"""systemd units: a worker service kept running, and a .service + .timer pair per cron.

A cron expression becomes `OnCalendar=` lines. croniter parses and expands the five fields
(names, ranges, steps, `@hourly`); writing systemd's calendar syntax from the expanded values
is ours, since no library converts between the two.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from croniter import croniter

from raasctl.config import Config
from raasctl.errors import ConfigError
from raasctl.schedule import carried_environment, schedules

# (lowest, highest) of each cron field, in croniter's order.
FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
# How long systemd waits after SIGTERM before SIGKILL: the worker's default 30 s shutdown
# timeout for in-flight work, plus room to release and settle.
WORKER_STOP_TIMEOUT_S = 45


@dataclass(frozen=True)
class Unit:
    name: str
    text: str


def on_calendar(expression: str, timezone: str = "UTC") -> list[str]:
    """The OnCalendar values equivalent to a five-field cron expression in `timezone`.

    cron runs a job when either day field matches if both are restricted, while systemd needs
    all fields to match, so such an expression becomes two values (a timer takes several).
    """
    try:
        fields, nth_weekday = croniter.expand(expression)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"schedule {expression!r} is not a cron expression: {exc}") from None
    if nth_weekday or any(isinstance(v, str) and v != "*" for f in fields for v in f):
        raise ConfigError(
            f"schedule {expression!r} uses L or # (last day, nth weekday), which systemd "
            "calendars cannot express; use a plain cron expression"
        )
    minute, hour, day, month, weekday = (
        _field(values, low, high) for values, (low, high) in zip(fields, FIELD_RANGES, strict=True)
    )
    weekday_part = "" if weekday == "*" else _weekdays(fields[4]) + " "
    time_part = f"{hour}:{minute}:00 {timezone}"
    if day != "*" and weekday != "*":
        return [f"*-{month}-{day} {time_part}", f"{weekday_part}*-{month}-* {time_part}"]
    return [f"{weekday_part}*-{month}-{day} {time_part}"]


def _field(values: Sequence[int | str], low: int, high: int) -> str:
    if values == ["*"]:
        return "*"
    numbers = sorted({int(v) for v in values})
    if numbers == list(range(low, high + 1)):
        return "*"
    if len(numbers) > 2:
        step = numbers[1] - numbers[0]
        evenly = all(b - a == step for a, b in pairwise(numbers))
        # `start/step` repeats up to the field's end, so it fits only a sequence that runs there.
        if evenly and step > 1 and numbers[-1] + step > high:
            return f"{numbers[0]:02d}/{step}"
    return ",".join(_runs(numbers, "{:02d}"))


def _weekdays(values: Sequence[int | str]) -> str:
    # cron's 7 is Sunday too; croniter already folds it to 0.
    numbers = sorted({int(v) % 7 for v in values})
    return ",".join(_runs(numbers, None))


def _runs(numbers: list[int], number_format: str | None) -> list[str]:
    """Consecutive values as `a..b` ranges."""

    def show(n: int) -> str:
        return WEEKDAYS[n] if number_format is None else number_format.format(n)

    parts: list[str] = []
    start = previous = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == previous + 1:
            previous = n
            continue
        parts.append(show(start) if start == previous else f"{show(start)}..{show(previous)}")
        if n is not None:
            start = previous = n
    return parts


def systemd_units(
    config: Config,
    env_name: str,
    *,
    raasctl: str,
    config_file: Path | None,
    workdir: Path,
    environ: Mapping[str, str],
) -> list[Unit]:
    """The worker's service (kept running by systemd) and each scheduled cron's pair."""
    prefix = f"raasctl-{env_name}"
    command = shlex.join(
        [raasctl, *(["--config", str(config_file.resolve())] if config_file else [])]
    )
    environment = {"RAASCTL_ENV": env_name, **carried_environment(environ)}
    service_common = [f"WorkingDirectory={workdir}"] + [
        f"Environment={_quote(f'{name}={value}')}" for name, value in environment.items()
    ]
    units = [
        Unit(
            f"{prefix}-worker.service",
            _text(
                [
                    "[Unit]",
                    f"Description=raasctl worker for environment {env_name}",
                    "Wants=network-online.target",
                    "After=network-online.target",
                    "",
                    "[Service]",
                    "Type=simple",
                    *service_common,
                    f"ExecStart={command} worker --env {shlex.quote(env_name)}",
                    "Restart=always",
                    "RestartSec=10",
                    "KillSignal=SIGTERM",
                    f"TimeoutStopSec={WORKER_STOP_TIMEOUT_S}",
                    "",
                    "[Install]",
                    "WantedBy=multi-user.target",
                ]
            ),
        )
    ]
    for schedule in schedules(config):
        if schedule.expression is None:
            continue
        unit = f"{prefix}-{schedule.cron}"
        units.append(
            Unit(
                f"{unit}.service",
                _text(
                    [
                        "[Unit]",
                        f"Description=raasctl run {schedule.cron} for environment {env_name}",
                        "Wants=network-online.target",
                        "After=network-online.target",
                        "",
                        "[Service]",
                        "Type=oneshot",
                        *service_common,
                        f"ExecStart={command} run {schedule.cron} --env {shlex.quote(env_name)}",
                    ]
                ),
            )
        )
        calendars = on_calendar(schedule.expression, schedule.timezone)
        units.append(
            Unit(
                f"{unit}.timer",
                _text(
                    [
                        "[Unit]",
                        f"Description=raasctl {schedule.cron} on cron schedule "
                        f"{schedule.expression} ({schedule.timezone})",
                        "",
                        "[Timer]",
                        *(f"OnCalendar={value}" for value in calendars),
                        f"Unit={unit}.service",
                        "",
                        "[Install]",
                        "WantedBy=timers.target",
                    ]
                ),
            )
        )
    return units


def _quote(assignment: str) -> str:
    """systemd's Environment= splits on spaces unless the assignment is quoted."""
    if any(c in assignment for c in ' "\\'):
        escaped = assignment.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    return assignment


def _text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"
