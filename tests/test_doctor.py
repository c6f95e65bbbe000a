"""`raasctl doctor`: the embedded default with no network, and a deployed environment against
moto's server, the fake Workday and a local callback, where each broken piece fails exactly
its own row."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from callback_server import CallbackServer
from click.testing import CliRunner, Result
from support import closed_port
from test_worker_processes import REGION, Moto, create_fifo_queue, moto_server  # noqa: F401
from workday_server import FakeWorkday, deposit_entry

from raasctl.cli import main
from raasctl.state.dynamodb import create_table

ROWS = ["config", "secrets", "credentials", "queue", "dlq", "state", "source", "sink"]


def doctor(runner: CliRunner, *args: str) -> tuple[Result, list[dict[str, Any]]]:
    result = runner.invoke(main, ["doctor", *args, "--format", "json"])
    return result, json.loads(result.stdout) if result.stdout.startswith("[") else []


def failing(document: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {
        env["env"]: [check["name"] for check in env["checks"] if not check["ok"]]
        for env in document
    }


def test_embedded_default_passes_with_no_network_and_creates_nothing(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the embedded doctor opened a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    result, document = doctor(runner)
    assert result.exit_code == 0, result.stderr
    assert [env["env"] for env in document] == ["local"]
    assert [check["name"] for check in document[0]["checks"]] == ROWS
    assert failing(document) == {"local": []}
    assert not Path(".raasctl").exists()
    table = runner.invoke(main, ["doctor"])
    assert table.exit_code == 0 and "Doctor" in table.stdout and "FAIL" not in table.stdout


def test_embedded_fixtures_folder_missing_a_file_fails_the_source_row(runner: CliRunner) -> None:
    folder = Path("reports")
    folder.mkdir()
    (folder / "clientDepositUpdate.json").write_text("{}")
    Path("raasctl.yaml").write_text(
        "environments:\n  local: {source: {kind: fixtures, path: reports}}\n"
    )
    result, document = doctor(runner)
    assert result.exit_code == 3
    assert failing(document) == {"local": ["source"]}
    source = next(c for c in document[0]["checks"] if c["name"] == "source")
    assert "clientBillPaidStatus" in source["detail"]


@dataclass
class Deployed:
    runner: CliRunner
    env: dict[str, Any]
    monkeypatch: pytest.MonkeyPatch

    def write(self, **changes: Any) -> None:
        env = json.loads(json.dumps(self.env))
        for dotted, value in changes.items():
            node = env
            *parents, last = dotted.split(".")
            for part in parents:
                node = node[part]
            node[last] = value
        Path("raasctl.yaml").write_text(
            yaml.safe_dump({"default_env": "uat", "environments": {"uat": env}})
        )


@pytest.fixture
def deployed(
    runner: CliRunner,
    moto_server: Moto,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Deployed]:
    url, dlq_url = create_fifo_queue(moto_server, "raas-doctor", visibility_s=30)
    create_table(moto_server.client("dynamodb"), "raasctl-uat")
    with FakeWorkday() as workday, CallbackServer() as callback:
        workday.add_report("Client_Deposits", [deposit_entry(1)])
        for name, value in {**workday.env(), "CALLBACK_TOKEN": callback.token}.items():
            monkeypatch.setenv(name, value)
        env = {
            "aws": {"region": REGION, "endpoint_url": moto_server.endpoint},
            "source": {
                "kind": "workday",
                "base_url": workday.base_url,
                "tenant": workday.tenant,
                "owner": workday.owner,
                "auth": {
                    "kind": "basic",
                    "username": "env:WORKDAY_USER",
                    "password": "env:WORKDAY_PASSWORD",
                },
                "connect_timeout_s": 2,
                "read_timeout_s": 5,
                "retries": 0,
            },
            "queue": {"kind": "sqs", "url": url, "dlq_url": dlq_url},
            "state": {"kind": "dynamodb", "table": "raasctl-uat"},
            "sink": {"kind": "http", "base_url": callback.base_url, "token": "env:CALLBACK_TOKEN"},
        }
        setup = Deployed(runner, env, monkeypatch)
        setup.write()
        yield setup
        assert callback.served == [], "doctor must never post an entry"


def test_a_deployed_environment_passes(deployed: Deployed) -> None:
    result, document = doctor(deployed.runner)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert failing(document) == {"uat": []}
    details = {check["name"]: check["detail"] for check in document[0]["checks"]}
    assert "3 resolved" in details["secrets"]
    assert "authenticated" in details["source"]
    assert "raasctl-uat is ACTIVE" in details["state"]
    assert "reachable" in details["sink"]


@pytest.mark.parametrize(
    ("broken", "row"),
    [
        ("bad password", "source"),
        ("missing queue", "queue"),
        ("missing table", "state"),
        ("callback down", "sink"),
        ("unset secret", "secrets"),
    ],
)
def test_each_broken_piece_fails_exactly_its_row(deployed: Deployed, broken: str, row: str) -> None:
    if broken == "bad password":
        deployed.monkeypatch.setenv("WORKDAY_PASSWORD", "not-the-password")
    elif broken == "missing queue":
        url = deployed.env["queue"]["url"]
        deployed.write(**{"queue.url": url.replace("raas-doctor", "raas-nope")})
    elif broken == "missing table":
        deployed.write(**{"state.table": "raasctl-nope"})
    elif broken == "callback down":
        deployed.write(**{"sink.base_url": f"http://127.0.0.1:{closed_port()}/cron-jobs"})
    else:
        deployed.monkeypatch.delenv("CALLBACK_TOKEN")
    result, document = doctor(deployed.runner)
    assert result.exit_code == 3, result.stdout + result.stderr
    assert failing(document) == {"uat": [row]}
    assert "not-the-password" not in result.stdout + result.stderr


def test_all_envs_reports_each_and_an_unusable_one_exits_2(deployed: Deployed) -> None:
    document = yaml.safe_load(Path("raasctl.yaml").read_text())
    document["environments"]["local"] = {}
    Path("raasctl.yaml").write_text(yaml.safe_dump(document))
    result, shown = doctor(deployed.runner, "--all-envs")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert failing(shown) == {"uat": [], "local": []}

    both = deployed.runner.invoke(main, ["doctor", "--env", "uat", "--all-envs"])
    assert both.exit_code == 2 and "exclude each other" in both.stderr


def test_an_unusable_configuration_exits_2(runner: CliRunner) -> None:
    Path("raasctl.yaml").write_text("environments:\n  local: {nope: 1}\n")
    result = runner.invoke(main, ["doctor"])
    assert result.exit_code == 2
    assert "nope" in result.stderr and result.stdout == ""
