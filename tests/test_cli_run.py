"""`raasctl run` end to end: embedded defaults, SQS on moto, and a fake Workday over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result
from moto import mock_aws
from workday_server import FakeWorkday, Reply, deposit_entry

from raasctl.cli import main
from raasctl.config import load_config
from raasctl.envelope import Envelope, entry_key
from raasctl.runtime import Runtime

DEPOSITS_IN_FIXTURE = 11


def runtime() -> Runtime:
    """The runtime the command used (./raasctl.yaml when written, else the defaults)."""
    config = load_config().config
    name, env = config.environment(None)
    return Runtime(config, name, env)


def visible() -> int:
    queue = runtime().queue()
    try:
        return queue.depth().visible
    finally:
        queue.close()


def run(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(main, ["run", *args, "--format", "json"])


def log_events(result: Result, code: str) -> list[dict[str, Any]]:
    """stderr is not a terminal under CliRunner, so logs are JSON lines."""
    events = []
    for line in result.stderr.splitlines():
        if line.startswith("{"):
            document = json.loads(line)
            if document.get("code") == code:
                events.append(document)
    return events


# ---------------------------------------------------------------- embedded defaults


def test_run_enqueues_every_entry_and_records_the_run(runner: CliRunner) -> None:
    result = run(runner, "clientDepositUpdate")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary) == {"run_id", "cron", "entries", "enqueued", "invalid", "duplicates"}
    assert summary["run_id"].startswith("clientDepositUpdate-")
    assert (summary["entries"], summary["enqueued"], summary["invalid"]) == (
        DEPOSITS_IN_FIXTURE,
        DEPOSITS_IN_FIXTURE,
        0,
    )
    assert visible() == DEPOSITS_IN_FIXTURE
    record = runtime().state().get_run(summary["run_id"])
    assert record is not None
    assert (record.total, record.mock, record.status) == (DEPOSITS_IN_FIXTURE, False, "running")
    (complete,) = log_events(result, "RAAS_ENQUEUE_COMPLETE")
    assert (complete["run_id"], complete["enqueued"]) == (summary["run_id"], DEPOSITS_IN_FIXTURE)


def test_each_message_carries_its_payload_and_the_key_of_that_payload(runner: CliRunner) -> None:
    assert run(runner, "clientDepositUpdate").exit_code == 0
    queue = runtime().queue()
    try:
        messages = queue.peek(DEPOSITS_IN_FIXTURE)
    finally:
        queue.close()
    assert len(messages) == DEPOSITS_IN_FIXTURE
    for message in messages:
        envelope = Envelope.from_body(message.body)
        # The payload is written once and the key hashes that text: they must agree.
        assert envelope.key == entry_key(envelope.cron, message.group_id or "", envelope.payload)
        assert message.body == envelope.to_body()


def test_rerunning_the_same_report_adds_no_messages(runner: CliRunner) -> None:
    assert run(runner, "clientDepositUpdate").exit_code == 0
    again = run(runner, "clientDepositUpdate")
    assert again.exit_code == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["enqueued"], summary["duplicates"]) == (0, DEPOSITS_IN_FIXTURE)
    assert visible() == DEPOSITS_IN_FIXTURE
    # Nothing to do: the run is complete at once.
    record = runtime().state().get_run(summary["run_id"])
    assert record is not None and record.status == "complete"
    assert log_events(again, "RAAS_RUN_COMPLETE")


def test_entries_applied_already_are_not_enqueued_again(runner: CliRunner) -> None:
    dry = runner.invoke(main, ["run", "clientBillPaidStatus", "--dry-run", "--format", "json"])
    keys = [item["key"] for item in json.loads(dry.stdout)["payloads"]]
    state = runtime().state()
    for key in keys[:4]:
        state.record_applied(key, "earlier-run", datetime.now(UTC))
    result = run(runner, "clientBillPaidStatus")
    summary = json.loads(result.stdout)
    assert (summary["enqueued"], summary["duplicates"]) == (len(keys) - 4, 4)
    assert visible() == len(keys) - 4


def test_one_entry_can_be_several_messages(runner: CliRunner) -> None:
    result = run(runner, "lspBillUpdateStatus")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["enqueued"] > summary["entries"]
    assert visible() == summary["enqueued"]
    record = runtime().state().get_run(summary["run_id"])
    assert record is not None and record.total == summary["enqueued"]


def test_dry_run_enqueues_nothing_and_records_no_run(runner: CliRunner) -> None:
    result = runner.invoke(main, ["run", "clientDepositUpdate", "--dry-run", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["entries"], data["messages"], data["invalid"]) == (DEPOSITS_IN_FIXTURE,) * 2 + (0,)
    first = data["payloads"][0]
    assert set(first) == {"key", "entity_id", "payload"}
    assert first["key"].startswith(f"clientDepositUpdate:{first['entity_id']}:")
    assert first["payload"]["deposit_id"] == first["entity_id"]
    assert visible() == 0
    assert runtime().state().list_runs() == []


def test_dry_run_table_on_stdout(runner: CliRunner) -> None:
    result = runner.invoke(main, ["run", "clientBillPaidStatus", "--dry-run"])
    assert result.exit_code == 0, result.stderr
    assert "nothing enqueued" in result.stdout
    assert "clientBillPaidStatus:" in result.stdout


def test_a_second_overlapping_run_is_refused(runner: CliRunner) -> None:
    state = runtime().state()
    lock = "run:local:clientDepositUpdate"
    assert state.acquire_lock(lock, "the-other-run", 3600, datetime.now(UTC))
    result = run(runner, "clientDepositUpdate")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "RAAS_RUN_LOCKED" in result.stderr and lock in result.stderr
    assert visible() == 0
    assert runtime().state().list_runs() == []
    # Another cron has its own lock; once released, the cron runs again.
    assert run(runner, "clientBillPaidStatus").exit_code == 0
    state.release_lock(lock, "the-other-run")
    assert run(runner, "clientDepositUpdate").exit_code == 0


def test_unknown_cron_lists_the_known_ones(runner: CliRunner) -> None:
    result = run(runner, "clientDepositUpdat")
    assert result.exit_code == 2
    assert "RAAS_UNKNOWN_CRON" in result.stderr
    for cron in ("clientDepositUpdate", "clientBillPaidStatus", "lspBillUpdateStatus"):
        assert cron in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "27/11/2026"], "is not a date"),
        (["--since", "2026-11-27", "--until", "2026-11-20"], "after it ends"),
    ],
)
def test_bad_window_is_a_usage_error(runner: CliRunner, args: list[str], message: str) -> None:
    result = run(runner, "clientDepositUpdate", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert visible() == 0


def test_table_summary(runner: CliRunner) -> None:
    result = runner.invoke(main, ["run", "clientBillUnpaidStatus"])
    assert result.exit_code == 0, result.stderr
    assert "enqueued" in result.stdout and "duplicates" in result.stdout


# ---------------------------------------------------------------- SQS (moto)


def test_run_into_sqs_on_moto(runner: CliRunner) -> None:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(
            QueueName="raas-cron-jobs-test.fifo", Attributes={"FifoQueue": "true"}
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

        first = run(runner, "clientDepositUpdate")
        assert first.exit_code == 0, first.stderr
        assert json.loads(first.stdout)["enqueued"] == DEPOSITS_IN_FIXTURE
        assert count() == DEPOSITS_IN_FIXTURE
        message = sqs.receive_message(
            QueueUrl=url, MessageAttributeNames=["All"], AttributeNames=["All"]
        )["Messages"][0]
        body = json.loads(message["Body"])
        assert body["mock"] is False and body["cron"] == "clientDepositUpdate"
        assert message["Attributes"]["MessageGroupId"] == body["payload"]["deposit_id"]
        assert message["MessageAttributes"]["run_id"]["StringValue"] == body["run_id"]
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
        again = run(runner, "clientDepositUpdate")
        assert again.exit_code == 0, again.stderr
        assert count() == DEPOSITS_IN_FIXTURE


# ---------------------------------------------------------------- Workday over HTTP


@pytest.fixture
def workday(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWorkday]:
    with FakeWorkday() as fake:
        for name, value in fake.env().items():
            monkeypatch.setenv(name, value)
        Path("raasctl.yaml").write_text(
            "default_env: wd\n"
            "environments:\n"
            "  wd:\n"
            "    source:\n"
            "      kind: workday\n"
            f"      base_url: {fake.base_url}\n"
            f"      tenant: {fake.tenant}\n"
            f"      owner: {fake.owner}\n"
            "      auth:\n"
            "        {kind: basic, username: env:WORKDAY_USER, password: env:WORKDAY_PASSWORD}\n"
            "      read_timeout_s: 0.3\n"
            "      retries: 1\n",
            encoding="utf-8",
        )
        yield fake


def test_run_against_workday_sends_the_window_as_prompts(
    runner: CliRunner, workday: FakeWorkday
) -> None:
    workday.add_report("Client_Deposits", [deposit_entry(n) for n in range(1, 26)])
    result = run(runner, "clientDepositUpdate", "--since", "2026-11-20", "--until", "2026-11-27")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["enqueued"] == 25
    (request,) = workday.report_requests
    assert request.query["From_Date"] == "2026-11-20+00:00"
    assert request.query["To_Date"] == "2026-11-27+00:00"
    assert request.auth == "basic"
    assert visible() == 25


def test_invalid_entries_are_reported_and_the_rest_enqueued(
    runner: CliRunner, workday: FakeWorkday
) -> None:
    entries = [deposit_entry(n) for n in range(1, 6)]
    entries[1]["Deposit_Amount"] = "twelve"
    del entries[3]["Deposit_ID"]
    workday.add_report("Client_Deposits", entries)
    result = run(runner, "clientDepositUpdate")
    assert result.exit_code == 3, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["entries"], summary["enqueued"], summary["invalid"]) == (5, 3, 2)
    invalid = log_events(result, "RAAS_ENTRY_INVALID")
    assert [(e["entry"], e["field"]) for e in invalid] == [
        (2, "Deposit_Amount"),
        (4, "Deposit_ID"),
    ]
    assert "entry 2" in invalid[0]["msg"] and "Deposit_Amount" in invalid[0]["msg"]
    assert visible() == 3
    record = runtime().state().get_run(summary["run_id"])
    assert record is not None and (record.invalid, record.total) == (2, 3)


def test_refused_credentials_fail_with_auth_failed(
    runner: CliRunner, workday: FakeWorkday, monkeypatch: pytest.MonkeyPatch
) -> None:
    workday.add_report("Client_Deposits", [deposit_entry(1)])
    monkeypatch.setenv("WORKDAY_PASSWORD", "a-wrong-password")
    result = run(runner, "clientDepositUpdate")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "RAAS_AUTH_FAILED" in result.stderr
    assert "a-wrong-password" not in result.stderr
    assert visible() == 0
    # The lock was released: with the right password the next run goes ahead.
    monkeypatch.setenv("WORKDAY_PASSWORD", workday.password)
    assert run(runner, "clientDepositUpdate").exit_code == 0


def test_a_report_that_is_not_json_fails(runner: CliRunner, workday: FakeWorkday) -> None:
    workday.add_report("Client_Deposits", body="<html>maintenance</html>")
    result = run(runner, "clientDepositUpdate")
    assert result.exit_code == 1
    assert "RAAS_REPORT_INVALID" in result.stderr
    assert visible() == 0


def test_a_timeout_after_the_retries_fails(runner: CliRunner, workday: FakeWorkday) -> None:
    workday.add_report("Client_Deposits", [deposit_entry(1)])
    workday.script(Reply(delay_s=0.6), Reply(delay_s=0.6))
    result = run(runner, "clientDepositUpdate")
    assert result.exit_code == 1
    assert "RAAS_SOURCE_FAILED" in result.stderr and "timed out" in result.stderr
    assert "after 2 attempts" in result.stderr
    assert visible() == 0


def test_a_connection_lost_midway_says_how_much_was_enqueued(
    runner: CliRunner, workday: FakeWorkday
) -> None:
    # The body stalls after its first chunk (500 entries) past the read timeout.
    workday.add_report("Client_Deposits", [deposit_entry(n) for n in range(1, 1201)])
    workday.script(Reply(stall_s=1.0))
    result = run(runner, "clientDepositUpdate")
    assert result.exit_code == 1
    assert "RAAS_SOURCE_FAILED" in result.stderr
    sent = visible()
    assert sent > 0
    assert f"{sent} messages were enqueued before the failure" in result.stderr
