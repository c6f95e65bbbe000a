"""`raasctl access test FILE`: a policy regression suite, judged offline."""

from __future__ import annotations

import click
from rich.table import Table

from raasctl.cli.context import AppContext, pass_app
from raasctl.cli.options import format_option
from raasctl.cli.render import emit
from raasctl.suite import SuiteResult, load_suite, run_suite


@click.command("test")
@click.argument("suite_file", metavar="FILE", type=click.Path(dir_okay=False))
@format_option
@pass_app
def test_cmd(app: AppContext, suite_file: str) -> None:
    """Judge every case of a policy suite and report the ones whose decision is not the one
    they expect.

    FILE is YAML (a list of cases) or JSON lines (.jsonl, one case a line). A case has
    `principal`, `action`, optional `resource`, `context` (key: value, or a list for a
    multi-valued key) and `absent` (keys known to be absent), `expect` (allowed,
    explicit_deny, implicit_deny or indeterminate), an optional `name`, and either `policy`
    (one policy judged alone, as `explain --policy`) or `identity_policy` and/or
    `resource_policy` (combined as `explain --identity-policy --resource-policy`); each policy
    is inline or a path relative to FILE. Offline: no AWS call. Exit 0 when every case
    passes, 3 when any fails, 2 for an invalid file or case (named by its line).

    Example: raasctl access test examples/access/queue-policy-suite.yaml --format json
    """
    result = run_suite(load_suite(suite_file))
    emit(app, result.to_json(), table=_failures(result))
    if result.failed:
        raise click.exceptions.Exit(3)


def _failures(result: SuiteResult) -> Table:
    table = Table(title=f"{result.passed} of {result.cases} cases pass")
    for column in ("case", "expect", "decision", "statements"):
        table.add_column(column)
    for failure in result.failed:
        table.add_row(
            failure["name"],
            failure["expect"],
            failure["decision"],
            ", ".join(failure["statements"]) or "-",
        )
    return table
