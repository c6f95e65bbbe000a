"""`queue peek --format json` decodes bodies; `enqueue-mock` says how many messages it sends
and `--dry-run` shows the count and a sample without sending."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from raasctl.cli import main, mock_cmd
from raasctl.config import load_config
from raasctl.queues.base import OutgoingMessage
from raasctl.runtime import Runtime


def local_runtime() -> Runtime:
    config = load_config().config
    name, env = config.environment(None)
    return Runtime(config, name, env)


def test_peek_decodes_json_bodies_and_keeps_others_as_text(runner: CliRunner) -> None:
    queue = local_runtime().queue()
    envelope = {"v": 1, "cron": "clientDepositUpdate", "key": "clientDepositUpdate:D-1:abc"}
    queue.send_batch(
        [
            OutgoingMessage(json.dumps(envelope), group_id="D-1", dedup_id="a"),
            OutgoingMessage("not json {", group_id="D-2", dedup_id="b"),
        ]
    )
    queue.close()
    result = runner.invoke(main, ["queue", "peek", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    first, second = json.loads(result.stdout)["messages"]
    assert (first["body"], first["body_is_json"]) == (envelope, True)
    assert (second["body"], second["body_is_json"]) == ("not json {", False)


def depth() -> int:
    queue = local_runtime().queue()
    try:
        return queue.depth().visible
    finally:
        queue.close()


def test_dry_run_prints_the_count_and_a_sample_and_sends_nothing(runner: CliRunner) -> None:
    args = ["enqueue-mock", "clientDepositUpdate", "--copies", "300", "--dry-run"]
    result = runner.invoke(main, ["--format", "json", *args])
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert (plan["payloads"], plan["copies"], plan["messages"]) == (10, 300, 3000)
    assert Path(plan["fixture"]).is_absolute()
    sample = plan["sample"]["body"]
    assert sample["mock"] is True and sample["cron"] == "clientDepositUpdate"
    assert sample["key"].endswith(":mock:<run_id>:0")
    assert plan["sample"]["group_id"] == f"{sample['payload']['deposit_id']}:0"
    assert not Path(".raasctl").exists()  # not even a state file


def test_the_count_is_logged_before_sending(runner: CliRunner) -> None:
    result = runner.invoke(
        main, ["--log-format", "text", "enqueue-mock", "lspBillUpdateStatus", "--copies", "4"]
    )
    assert result.exit_code == 0, result.stderr
    planned = [line for line in result.stderr.splitlines() if "RAAS_MOCK_PLANNED" in line]
    assert len(planned) == 1
    assert "sending 20 messages (4 copies × 5 payloads)" in planned[0]
    assert depth() == 20


@pytest.fixture
def protected() -> None:
    Path("raasctl.yaml").write_text(
        "default_env: prod\nenvironments:\n  prod: {deployed: true, protected: true}\n"
    )


@pytest.mark.usefixtures("protected")
def test_the_protected_prompt_states_the_count(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mock_cmd, "stdin_is_terminal", lambda: True)
    args = ["enqueue-mock", "clientDepositUpdate", "--copies", "7", "--allow-protected"]
    result = runner.invoke(main, args, input="n\n")
    assert result.exit_code == 2
    assert "Enqueue 70 messages (7 copies × 10 payloads) of mock data" in result.stderr
    assert "into protected environment prod?" in result.stderr
    monkeypatch.setattr(mock_cmd, "stdin_is_terminal", lambda: False)
    result = runner.invoke(main, ["--log-format", "text", *args])  # no terminal: needs --yes
    assert result.exit_code == 2
    assert "confirm sending 70 messages (7 copies × 10 payloads) with --yes" in result.stderr
