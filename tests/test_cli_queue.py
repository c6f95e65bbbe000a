"""`raasctl queue status | peek | purge | redrive` on the embedded queue and on SQS (moto)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result
from moto import mock_aws
from support import closed_port

from raasctl.cli import main
from raasctl.config import load_config
from raasctl.queues.base import OutgoingMessage, Queue
from raasctl.runtime import Runtime


def queue_of(env: str | None = None) -> Queue:
    config = load_config().config
    name, environment = config.environment(env)
    return Runtime(config, name, environment).queue()


def body(key: str) -> str:
    return json.dumps({"v": 1, "cron": "clientDepositUpdate", "run_id": "r1", "key": key})


def fill(queue: Queue, count: int) -> None:
    queue.send_batch(
        [
            OutgoingMessage(
                body(f"clientDepositUpdate:D-{n}:abc"),
                group_id=f"D-{n}",
                dedup_id=f"k{n}",
                attributes={"cron": "clientDepositUpdate", "run_id": "r1"},
            )
            for n in range(count)
        ]
    )


def dead_letter_one(queue: Queue, reason: str = "unknown cron") -> None:
    [got] = queue.receive(1, 0)
    queue.dead_letter(got, reason)


def cli(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(main, [*args])


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def local() -> Iterator[Queue]:
    queue = queue_of()
    fill(queue, 4)
    dead_letter_one(queue)
    queue.receive(1, 0)  # one in flight
    yield queue
    queue.close()


# ---------------------------------------------------------------- status and peek


def test_status_reports_the_depth_of_the_queue_and_its_dlq(runner: CliRunner, local: Queue) -> None:
    data = as_json(cli(runner, "queue", "status", "--format", "json"))
    assert data == {
        "env": "local",
        "queue": {"visible": 2, "in_flight": 1, "delayed": 0},
        "dlq": {"visible": 1},
    }


def test_status_as_a_table(runner: CliRunner, local: Queue) -> None:
    result = cli(runner, "queue", "status")
    assert result.exit_code == 0
    assert "visible" in result.stdout and "DLQ visible" in result.stdout
    assert "local.db" in result.stdout
    assert result.stderr == ""


def test_peek_shows_messages_and_the_limit_holds(runner: CliRunner, local: Queue) -> None:
    data = as_json(cli(runner, "queue", "peek", "--format", "json"))
    assert data["env"] == "local" and data["dlq"] is False
    assert len(data["messages"]) == 3
    first = data["messages"][0]
    assert set(first) == {
        "message_id",
        "group_id",
        "receive_count",
        "attributes",
        "body",
        "body_is_json",
    }
    assert first["body"]["key"].startswith("clientDepositUpdate:D-")
    assert first["attributes"] == {"cron": "clientDepositUpdate", "run_id": "r1"}

    limited = as_json(cli(runner, "queue", "peek", "--limit", "1", "--format", "json"))
    assert len(limited["messages"]) == 1
    assert local.depth().visible == 2  # peeking took nothing


def test_peek_at_the_dlq_shows_the_reason(runner: CliRunner, local: Queue) -> None:
    data = as_json(cli(runner, "queue", "peek", "--dlq", "--format", "json"))
    [dead] = data["messages"]
    assert dead["attributes"]["reason"] == "unknown cron"

    table = runner.invoke(main, ["queue", "peek", "--dlq"], env={"COLUMNS": "200"})
    assert table.exit_code == 0
    assert "unknown cron" in table.stdout
    assert "clientDepositUpdate:D-0:abc" in table.stdout  # the envelope's key


# ---------------------------------------------------------------- purge and redrive


def test_purge_needs_yes(runner: CliRunner, local: Queue) -> None:
    result = cli(runner, "queue", "purge")
    assert result.exit_code == 2
    assert "RAAS_USAGE" in result.stderr and "--yes" in result.stderr
    assert result.stdout == ""
    assert local.depth().visible == 2


def test_purge_the_queue_then_the_dlq(runner: CliRunner, local: Queue) -> None:
    result = cli(runner, "queue", "purge", "--yes", "--format", "json")
    # freed_bytes (issue 16) is new beside the original keys; the rest is as it was.
    purged = as_json(result)
    assert isinstance(purged.pop("freed_bytes"), int)
    assert purged == {"env": "local", "dlq": False, "purged": 3}
    assert "RAAS_QUEUE_PURGED" in result.stderr
    depth = local.depth()
    assert depth.empty and depth.dlq_visible == 1

    assert (
        as_json(cli(runner, "queue", "purge", "--dlq", "--yes", "--format", "json"))["purged"] == 1
    )
    assert local.depth().dlq_visible == 0


def test_redrive_needs_yes_and_moves_the_dlq_back(runner: CliRunner, local: Queue) -> None:
    refused = cli(runner, "queue", "redrive")
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    assert local.depth().dlq_visible == 1

    result = cli(runner, "queue", "redrive", "--yes", "--format", "json")
    assert as_json(result) == {"env": "local", "moved": 1, "task_handle": None}
    assert "RAAS_QUEUE_REDRIVEN" in result.stderr
    depth = local.depth()
    assert (depth.visible, depth.dlq_visible) == (3, 0)


@pytest.fixture
def protected() -> Iterator[Queue]:
    Path("raasctl.yaml").write_text(
        "default_env: prod\n"
        "environments:\n"
        "  prod:\n"
        "    protected: true\n"
        "    queue: {kind: sqlite}\n",
        encoding="utf-8",
    )
    queue = queue_of()
    fill(queue, 2)
    dead_letter_one(queue)
    yield queue
    queue.close()


@pytest.mark.parametrize("command", [["purge"], ["purge", "--dlq"], ["redrive"]])
def test_a_protected_environment_refuses_without_allow_protected(
    runner: CliRunner, protected: Queue, command: list[str]
) -> None:
    result = cli(runner, "queue", *command, "--yes")
    assert result.exit_code == 2
    assert "RAAS_PROTECTED_ENV" in result.stderr and "prod" in result.stderr
    depth = protected.depth()
    assert (depth.visible, depth.dlq_visible) == (1, 1)

    without_yes = cli(runner, "queue", *command, "--allow-protected")
    assert without_yes.exit_code == 2 and "RAAS_USAGE" in without_yes.stderr


def test_a_protected_environment_with_allow_protected_and_yes(
    runner: CliRunner, protected: Queue
) -> None:
    assert (
        as_json(cli(runner, "queue", "redrive", "--yes", "--allow-protected", "--format", "json"))[
            "moved"
        ]
        == 1
    )
    assert (
        as_json(cli(runner, "queue", "purge", "--yes", "--allow-protected", "--format", "json"))[
            "purged"
        ]
        == 2
    )
    assert protected.depth().empty


def test_status_and_peek_work_on_a_protected_environment(
    runner: CliRunner, protected: Queue
) -> None:
    assert as_json(cli(runner, "queue", "status", "--format", "json"))["env"] == "prod"
    assert len(as_json(cli(runner, "queue", "peek", "--format", "json"))["messages"]) == 1


# ---------------------------------------------------------------- SQS


def write_sqs_config(url: str, endpoint_url: str | None = None) -> None:
    endpoint = f"'{endpoint_url}'" if endpoint_url else "null"
    Path("raasctl.yaml").write_text(
        "default_env: aws\n"
        "environments:\n"
        "  aws:\n"
        f"    aws: {{region: us-east-1, endpoint_url: {endpoint}}}\n"
        f"    queue: {{kind: sqs, url: '{url}'}}\n",
        encoding="utf-8",
    )


@pytest.fixture
def sqs() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("sqs", region_name="us-east-1")
        dlq = client.create_queue(QueueName="raas-dlq.fifo", Attributes={"FifoQueue": "true"})
        arn = client.get_queue_attributes(QueueUrl=dlq["QueueUrl"], AttributeNames=["QueueArn"])
        policy = {"deadLetterTargetArn": arn["Attributes"]["QueueArn"], "maxReceiveCount": 5}
        url = client.create_queue(
            QueueName="raas.fifo",
            Attributes={"FifoQueue": "true", "RedrivePolicy": json.dumps(policy)},
        )["QueueUrl"]
        write_sqs_config(url)
        yield client


def test_sqs_status_and_redrive(runner: CliRunner, sqs: Any) -> None:
    queue = queue_of()
    fill(queue, 3)
    dead_letter_one(queue)
    data = as_json(cli(runner, "queue", "status", "--format", "json"))
    assert data == {
        "env": "aws",
        "queue": {"visible": 2, "in_flight": 0, "delayed": 0},
        "dlq": {"visible": 1},
    }
    # moto has no StartMessageMoveTask: the adapter moves the messages itself.
    assert as_json(cli(runner, "queue", "redrive", "--yes", "--format", "json"))["moved"] == 1
    assert as_json(cli(runner, "queue", "status", "--format", "json"))["queue"]["visible"] == 3


def test_sqs_queue_that_does_not_exist(runner: CliRunner, sqs: Any) -> None:
    write_sqs_config("https://sqs.us-east-1.amazonaws.com/123456789012/missing.fifo")
    result = cli(runner, "queue", "status")
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert "RAAS_QUEUE_NOT_FOUND" in line and "missing.fifo" in line
    assert result.stdout == ""


def test_an_unreachable_endpoint(runner: CliRunner) -> None:
    port = closed_port()
    endpoint = f"http://127.0.0.1:{port}"
    write_sqs_config(f"{endpoint}/123456789012/raas.fifo", endpoint_url=endpoint)
    result = cli(runner, "queue", "status")
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert "RAAS_QUEUE_UNREACHABLE" in line and "raas.fifo" in line
