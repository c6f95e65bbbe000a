"""`raasctl access check | explain`."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from raasctl.access import (
    DENIED,
    EnvReport,
    PermissionRow,
    check_environment,
    explain,
    parse_context,
)
from raasctl.cli.context import AppContext, pass_app
from raasctl.cli.options import format_option
from raasctl.cli.render import auto_table, emit
from raasctl.errors import UsageError
from raasctl.logs import set_context
from raasctl.policy import INDETERMINATE

strict_option = click.option(
    "--strict", is_flag=True, help="An indeterminate answer fails too (exit 3)."
)


@click.group()
def access() -> None:
    """Check who may use each environment's queues, and explain a policy's decision.

    Example: raasctl access check --all-envs
    """


@access.command("check")
@click.option(
    "--env", "env_name", metavar="ENV", help="Environment to check (default: the global --env)."
)
@click.option("--all-envs", is_flag=True, help="Check every environment of the config.")
@strict_option
@format_option
@pass_app
def check(app: AppContext, env_name: str | None, all_envs: bool, strict: bool) -> None:
    """Report the credentials, the caller and, per queue and SQS action, whether it is allowed.

    Reads only: STS GetCallerIdentity, SQS GetQueueAttributes/GetQueueUrl, IAM GetRole and
    SimulatePrincipalPolicy; it never sends, receives or deletes a message. Environments with
    an embedded (SQLite) queue need no AWS access and are only marked. Exit 0 when everything
    is allowed, 3 when anything is denied or a queue cannot be examined; an indeterminate
    answer (unknown context or identity side) exits 0 unless --strict.

    Example: raasctl access check --all-envs --strict --format json
    """
    if env_name and all_envs:
        raise UsageError("--env and --all-envs exclude each other")
    if all_envs:
        names = list(app.loaded.config.environments)
    elif env_name:
        names = [env_name]
    else:
        names = [app.runtime.env_name]  # the global --env, RAASCTL_ENV or default_env
    reports: list[EnvReport] = []
    for name in names:
        runtime = app.runtime_for(name)
        set_context(env=runtime.env_name)
        reports.append(check_environment(runtime.env_name, runtime.env, runtime.aws))
    emit(app, [report.to_json() for report in reports], table=_check_table(reports))
    if any(report.failed(strict) for report in reports):
        raise click.exceptions.Exit(3)


@access.command("explain")
@click.option("--policy", "policy_file", required=True, metavar="FILE", help="Policy JSON file.")
@click.option(
    "--principal",
    required=True,
    metavar="ARN",
    help="Who asks: an ARN, an account id or a service (sns.amazonaws.com).",
)
@click.option("--action", required=True, metavar="ACTION", help="e.g. sqs:SendMessage.")
@click.option("--resource", metavar="ARN", help="The resource asked for (a queue ARN).")
@click.option(
    "--context",
    "context_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A known request context value; repeat a key for a list. Keys not given are unknown.",
)
@click.option(
    "--absent",
    "absent_keys",
    multiple=True,
    metavar="KEY",
    help="A context key known to be absent from the request (for Null and ...IfExists).",
)
@strict_option
@format_option
@pass_app
def explain_cmd(
    app: AppContext,
    policy_file: str,
    principal: str,
    action: str,
    resource: str | None,
    context_pairs: tuple[str, ...],
    absent_keys: tuple[str, ...],
    strict: bool,
) -> None:
    """Judge one request against one policy file, as that policy alone would.

    `allowed` means this policy grants the request (an account principal matches every
    principal of that account); the cross-account rule belongs to `access check`. A policy
    without Principal elements is read as an identity policy. A context key is unknown unless
    given with --context (its value) or --absent (not in the request); policy variables such
    as ${aws:username} take their values from the same context. The deciding statements are
    named by Sid (or #N). Exit 0 when allowed, 3 when denied; indeterminate exits 0 unless
    --strict; an unreadable or invalid policy file exits 2.

    Example: raasctl access explain --policy queue-policy.json --principal
    arn:aws:iam::111122223333:role/raas-worker --action sqs:SendMessage --resource
    arn:aws:sqs:us-east-1:111122223333:raas-cron-jobs-work-uat.fifo --context
    aws:SourceVpce=vpce-0abc --absent aws:SourceArn
    """
    context = parse_context(context_pairs, absent_keys)
    decision = explain(policy_file, principal, action, resource, context)
    emit(app, decision.to_json())
    if decision.decision in DENIED or (strict and decision.decision == INDETERMINATE):
        raise click.exceptions.Exit(3)


# --------------------------------------------------------------------------- rendering


def _check_table(reports: list[EnvReport]) -> Table:
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
    for error in report.errors:
        parts.append(Text(f"error: {error}", style="red"))
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
