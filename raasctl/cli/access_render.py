"""How `access check` looks as a table: per environment, its summary, then per queue a narrow
table of decisions and the reasons below it."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from raasctl.access_report import EnvReport, PermissionRow
from raasctl.cli.render import auto_table


def check_table(reports: list[EnvReport]) -> Table:
    outer = Table(show_header=False, box=None, padding=(0, 0, 1, 0))
    outer.add_column("env")
    for report in reports:
        outer.add_row(_env_group(report))
    return outer


def _env_group(report: EnvReport) -> Group:
    data = report.to_json()
    parts: list[Any] = [Text(f"{report.env}: {report.status}", style="bold")]
    if report.embedded:
        parts.append(Text(f"  {data['note']}"))
        return Group(*parts)
    if report.credentials is not None:
        summary: dict[str, Any] = {"credentials": data["credentials"], "caller": data["caller"]}
        if report.caller is not None:
            summary["identity side"] = report.identity_source
        parts.append(auto_table(summary))
    if report.queues:
        parts.append(auto_table([_queue_summary(queue) for queue in data["queues"]]))
    for queue in report.queues:
        rows = [row for row in report.permissions if row.queue == queue.name]
        if rows:
            parts.extend(_permissions(queue.name, rows))
    for warning in report.warnings:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    for error, cause in zip(report.errors, report.causes, strict=False):
        parts.append(Text(f"error {cause}: {error}", style="red"))
    return Group(*parts)


def _queue_summary(queue: dict[str, Any]) -> dict[str, Any]:
    return {
        "queue": f"{queue['name']} ({queue['role']})",
        "exists": queue["exists"],
        "answers": queue["answered"],
        "policy": queue["policy"],
        "kms key": queue["kms_key"],
        "error": queue["error"],
    }


_DECISION_STYLE = {"allowed": "green", "indeterminate": "yellow"}


def _permissions(queue: str, rows: list[PermissionRow]) -> list[Any]:
    """A narrow table of decisions, then why: the deciding statements and notes per action."""
    table = Table(title=f"{queue}: permissions")
    for column in ("action", "queue policy", "identity", "decision"):
        table.add_column(column)
    reasons: list[Padding] = []
    for row in rows:
        action = row.action.removeprefix("sqs:")
        table.add_row(
            action,
            row.queue_policy,
            row.identity,
            Text(row.decision, style=_DECISION_STYLE.get(row.decision, "red")),
        )
        why = ", ".join(row.statements) or "no statement applies"
        text = Text(f"{action}: {why}" + (f"; {row.note}" if row.note else ""))
        reasons.append(Padding(text, (0, 0, 0, 2)))
    return [table, *reasons]
