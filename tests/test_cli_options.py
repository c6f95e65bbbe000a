"""The CRON parameter type and the shared options, through the command line."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from raasctl.cli import main
from raasctl.cli.options import CRON, cron_argument, cron_option, limit_option
from raasctl.config import CRON_NAMES

# Every place a cron is taken, with a name to put in it.
CRON_PLACES = [
    ["run", "{}"],
    ["run", "{}", "--dry-run"],
    ["enqueue-mock", "{}"],
    ["worker", "--cron", "{}", "--until-empty"],
    ["runs", "list", "--cron", "{}"],
]


def args(place: list[str], cron: str) -> list[str]:
    return [part.format(cron) for part in place]


@pytest.mark.parametrize("place", CRON_PLACES, ids=[" ".join(p) for p in CRON_PLACES])
@pytest.mark.parametrize("cron", ["clientdepositupdate", "ClientDepositUpdate", "refunds"])
def test_an_unknown_or_miscased_cron_is_a_usage_error_listing_the_known_ones(
    runner: CliRunner, place: list[str], cron: str
) -> None:
    result = runner.invoke(main, args(place, cron))
    assert result.exit_code == 2
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "RAAS_UNKNOWN_CRON" in line and f"unknown cron {cron!r}" in line
    for known in CRON_NAMES:
        assert known in line
    assert "Traceback" not in result.stderr


def test_a_known_cron_is_accepted_where_a_cron_is_taken(runner: CliRunner) -> None:
    result = runner.invoke(main, ["runs", "list", "--cron", "clientBillPaidStatus"])
    assert result.exit_code == 0, result.stderr
    dry = runner.invoke(main, ["run", "clientBillPaidStatus", "--dry-run", "--format", "json"])
    assert dry.exit_code == 0, dry.stderr
    assert json.loads(dry.stdout)["cron"] == "clientBillPaidStatus"


def test_the_cron_type_in_a_command_of_its_own() -> None:
    seen: list[object] = []

    @click.command()
    @cron_argument
    @cron_option("Also these.", multiple=True)
    @limit_option(5, "things")
    def command(cron: str, crons: tuple[str, ...], limit: int) -> None:
        seen.append((cron, crons, limit))

    result = CliRunner().invoke(
        command, ["lspBillUpdateStatus", "--cron", "clientDepositUpdate", "--limit", "7"]
    )
    assert result.exit_code == 0, result.output
    assert seen == [("lspBillUpdateStatus", ("clientDepositUpdate",), 7)]
    help_text = CliRunner().invoke(command, ["--help"]).stdout
    assert "--cron CRON" in help_text and "How many things." in help_text
    assert "default: 5" in help_text
    out_of_range = CliRunner().invoke(command, ["lspBillUpdateStatus", "--limit", "0"])
    assert out_of_range.exit_code == 2


def test_the_cron_type_completes_known_names() -> None:
    ctx = click.Context(click.Command("x"))
    param = click.Argument(["cron"], type=CRON)
    names = [item.value for item in CRON.shell_complete(ctx, param, "clientBill")]
    assert names == ["clientBillPaidStatus", "clientBillUnpaidStatus"]


def test_limit_is_checked_where_it_is_shared(runner: CliRunner) -> None:
    for command in (["queue", "peek"], ["runs", "list"]):
        result = runner.invoke(main, [*command, "--limit", "0"])
        assert result.exit_code == 2, command
        assert "--limit" in result.stderr
