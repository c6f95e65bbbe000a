"""A run that stops early is recorded as such: it never stays `enqueueing` for ever."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from raasctl.cli import main


def test_a_run_that_fails_midway_completes_as_failed_with_its_reason(runner: CliRunner) -> None:
    folder = Path("broken")
    folder.mkdir()
    entries = ", ".join(
        json.dumps({"Deposit_ID": f"D-{n}", "Deposit_Amount": "10.00"}) for n in range(25)
    )
    # The report breaks off after 25 entries, as a dropped connection would leave it.
    (folder / "clientDepositUpdate.json").write_text('{"Report_Entry": [' + entries + ", {")
    Path("raasctl.yaml").write_text(
        "environments:\n  local: {source: {kind: fixtures, path: broken}}\n", encoding="utf-8"
    )
    failed = runner.invoke(main, ["run", "clientDepositUpdate"])
    assert failed.exit_code == 1
    assert "RAAS_REPORT_INVALID" in failed.stderr

    listed = runner.invoke(main, ["runs", "list", "--format", "json"])
    (run,) = json.loads(listed.stdout)
    shown = json.loads(
        runner.invoke(main, ["runs", "show", run["run_id"], "--format", "json"]).stdout
    )
    assert shown["total"] == shown["enqueued"]
    assert shown["status"] == "running" if shown["total"] else "failed"

    drained = runner.invoke(main, ["worker", "--until-empty", "--format", "json"])
    assert json.loads(drained.stdout)["succeeded"] == shown["total"]
    after = json.loads(
        runner.invoke(main, ["runs", "show", run["run_id"], "--format", "json"]).stdout
    )
    assert after["status"] == "failed"
    assert after["done"] == after["total"]
    assert "clientDepositUpdate.json" in after["error"]
