"""`raasctl enqueue-mock`: load-test copies that no deduplication drops, and its guard rails."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import moto.sqs.models
import pytest
from click.testing import CliRunner, Result
from moto import mock_aws
from moto.core.utils import unix_time_millis

from raasctl.cli import main
from raasctl.config import load_config
from raasctl.runtime import Runtime

DEPOSITS = 10  # entries in fixtures/client_deposits.json


def runtime() -> Runtime:
    config = load_config().config
    name, env = config.environment(None)
    return Runtime(config, name, env)


def visible() -> int:
    queue = runtime().queue()
    try:
        return queue.depth().visible
    finally:
        queue.close()


def mock(runner: CliRunner, *args: str, **kwargs: Any) -> Result:
    return runner.invoke(main, ["enqueue-mock", *args, "--format", "json"], **kwargs)


# ---------------------------------------------------------------- embedded queue


def test_copies_are_all_enqueued_as_one_mock_run(runner: CliRunner) -> None:
    result = mock(runner, "clientDepositUpdate", "--copies", "100")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary) == {"run_id", "cron", "enqueued", "elapsed_s", "per_second", "per_hour"}
    assert (summary["cron"], summary["enqueued"]) == ("clientDepositUpdate", 100 * DEPOSITS)
    assert summary["per_second"] > 0
    assert visible() == 100 * DEPOSITS
    record = runtime().state().get_run(summary["run_id"])
    assert record is not None
    assert (record.mock, record.total, record.status) == (True, 100 * DEPOSITS, "running")
    shown = runner.invoke(main, ["runs", "show", summary["run_id"], "--format", "json"])
    assert shown.exit_code == 0, shown.stderr
    shown_run = json.loads(shown.stdout)
    assert (shown_run["mock"], shown_run["total"], shown_run["status"]) == (True, 1000, "running")
    # No progress bar without a terminal: stderr holds only JSON log lines.
    assert all(line.startswith("{") for line in result.stderr.splitlines())


def test_every_copy_has_its_own_key_and_group(runner: CliRunner) -> None:
    result = mock(runner, "clientDepositUpdate", "--copies", "3")
    run_id = json.loads(result.stdout)["run_id"]
    peeked = runtime().queue().peek(30)
    assert len(peeked) == 3 * DEPOSITS
    bodies = [json.loads(message.body) for message in peeked]
    assert all(body["mock"] is True and body["run_id"] == run_id for body in bodies)
    keys = {body["key"] for body in bodies}
    assert len(keys) == 3 * DEPOSITS
    first = bodies[0]
    deposit = first["payload"]["deposit_id"]
    assert first["key"].startswith(f"clientDepositUpdate:{deposit}:")
    assert first["key"].endswith(f":mock:{run_id}:0")
    groups = {message.group_id for message in peeked}
    assert len(groups) == 3 * DEPOSITS
    assert f"{deposit}:0" in groups


def test_a_real_run_after_a_mock_run_still_adds_its_entries_once(runner: CliRunner) -> None:
    assert mock(runner, "clientDepositUpdate", "--copies", "100").exit_code == 0
    first = runner.invoke(main, ["run", "clientDepositUpdate", "--format", "json"])
    real = json.loads(first.stdout)["enqueued"]
    assert real > 0
    second = runner.invoke(main, ["run", "clientDepositUpdate", "--format", "json"])
    assert json.loads(second.stdout)["enqueued"] == 0
    assert visible() == 100 * DEPOSITS + real


def test_default_fixtures_of_the_other_crons(runner: CliRunner) -> None:
    for cron in ("clientBillPaidStatus", "clientBillUnpaidStatus", "lspBillUpdateStatus"):
        result = mock(runner, cron, "--copies", "2")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["enqueued"] > 0


def test_rate_caps_the_send_rate(runner: CliRunner) -> None:
    result = mock(runner, "clientDepositUpdate", "--copies", "4", "--rate", "100")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["enqueued"] == 4 * DEPOSITS
    # 40 messages at 100/s in batches of 10: the last batch waits at least 0.3 s.
    assert summary["elapsed_s"] >= 0.3
    assert summary["per_second"] <= 140


def test_drained_by_the_worker_the_mock_run_completes(runner: CliRunner) -> None:
    result = mock(runner, "clientDepositUpdate", "--copies", "100")
    run_id = json.loads(result.stdout)["run_id"]
    drained = runner.invoke(main, ["worker", "--until-empty", "--format", "json"])
    assert drained.exit_code == 0, drained.stderr
    assert json.loads(drained.stdout)["succeeded"] == 100 * DEPOSITS
    record = runtime().state().get_run(run_id)
    assert record is not None
    assert (record.succeeded, record.status) == (100 * DEPOSITS, "complete")


# ---------------------------------------------------------------- fixtures


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"Report_Entry": [{"Deposit_ID": "D-1"}, {"Deposit_ID": ', "is not valid JSON"),
        ("", "is empty"),
        ("{}", "has no entries"),
        ('{"Report_Entry": []}', "has no entries"),
        (
            '{"Report_Entry": [{"Deposit_ID": "D-1"}, {"Customer": "Contoso"}]}',
            "entry 2: Deposit_ID: field required",
        ),
        (
            '{"Report_Entry": [{"Deposit_ID": "D-1", "Deposit_Amount": "lots"}]}',
            "entry 1: Deposit_Amount",
        ),
    ],
)
def test_a_bad_fixture_is_refused_before_anything_is_sent(
    runner: CliRunner, content: str, message: str
) -> None:
    fixture = Path("seed.json")
    fixture.write_text(content, encoding="utf-8")
    result = mock(runner, "clientDepositUpdate", "--fixture", str(fixture), "--copies", "5")
    assert result.exit_code == 2
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert "RAAS_FIXTURE_INVALID" in line
    assert "seed.json" in line and message in line
    assert visible() == 0
    assert runtime().state().list_runs() == []


def test_a_missing_fixture_is_a_usage_error(runner: CliRunner) -> None:
    result = mock(runner, "clientDepositUpdate", "--fixture", "nowhere.json")
    assert result.exit_code == 2
    assert "nowhere.json" in result.stderr and "not found" in result.stderr


def test_unknown_cron(runner: CliRunner) -> None:
    result = mock(runner, "depositUpdate")
    assert result.exit_code == 2
    assert "RAAS_UNKNOWN_CRON" in result.stderr and "clientDepositUpdate" in result.stderr


# ---------------------------------------------------------------- protected environments


@pytest.fixture
def protected() -> None:
    Path("raasctl.yaml").write_text(
        "default_env: prod\nenvironments:\n  prod: {protected: true}\n", encoding="utf-8"
    )


@pytest.mark.usefixtures("protected")
def test_a_protected_environment_is_refused(runner: CliRunner) -> None:
    result = mock(runner, "clientDepositUpdate")
    assert result.exit_code == 2
    assert "RAAS_PROTECTED_ENV" in result.stderr and "prod" in result.stderr
    assert visible() == 0


@pytest.mark.usefixtures("protected")
def test_allow_protected_without_a_terminal_needs_yes(runner: CliRunner) -> None:
    refused = mock(runner, "clientDepositUpdate", "--allow-protected")
    assert refused.exit_code == 2
    assert "--yes" in refused.stderr
    assert visible() == 0
    allowed = mock(runner, "clientDepositUpdate", "--allow-protected", "--yes")
    assert allowed.exit_code == 0, allowed.stderr
    assert visible() == DEPOSITS


@pytest.mark.usefixtures("protected")
def test_allow_protected_asks_on_a_terminal(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("raasctl.cli.mock_cmd.stdin_is_terminal", lambda: True)
    declined = mock(runner, "clientDepositUpdate", "--allow-protected", input="n\n")
    assert declined.exit_code == 2
    assert "protected environment prod" in declined.stderr
    assert visible() == 0
    confirmed = mock(runner, "clientDepositUpdate", "--allow-protected", input="y\n")
    assert confirmed.exit_code == 0, confirmed.stderr
    assert visible() == DEPOSITS


# ---------------------------------------------------------------- SQS (moto)


@pytest.fixture
def quick_moto_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto recomputes a queue's attributes on every send, checking each message's visibility
    with a clock that builds several datetimes per call: 1,000 messages took minutes. The same
    milliseconds from time.time() bring that to seconds without changing what moto does."""

    def now_ms(dt: datetime | None = None) -> float:
        return time.time() * 1000.0 if dt is None else unix_time_millis(dt)

    monkeypatch.setattr(moto.sqs.models, "unix_time_millis", now_ms)


@pytest.mark.usefixtures("quick_moto_clock")
def test_on_a_content_deduplicated_fifo_queue_no_copy_is_dropped(runner: CliRunner) -> None:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(
            QueueName="raas-cron-jobs-load.fifo",
            Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
        )["QueueUrl"]
        Path("raasctl.yaml").write_text(
            "default_env: aws\n"
            "environments:\n"
            "  aws:\n"
            "    aws: {region: us-east-1, endpoint_url: null}\n"
            f"    queue: {{kind: sqs, url: '{url}'}}\n",
            encoding="utf-8",
        )

        def count() -> int:
            attributes = sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            return int(attributes["ApproximateNumberOfMessages"])

        result = mock(runner, "clientDepositUpdate", "--copies", "100")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["enqueued"] == 100 * DEPOSITS
        assert count() == 100 * DEPOSITS

        first = runner.invoke(main, ["run", "clientDepositUpdate", "--format", "json"])
        assert first.exit_code == 0, first.stderr
        after_first = count()
        assert after_first > 100 * DEPOSITS
        second = runner.invoke(main, ["run", "clientDepositUpdate", "--format", "json"])
        assert second.exit_code == 0, second.stderr
        assert count() == after_first
