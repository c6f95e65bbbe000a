"""raasctl works from any folder: packaged fixtures, paths relative to the config file,
read-only commands that never create a state file, absolute paths in what it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from importlib.resources import files
from pathlib import Path

import pytest
from click.testing import CliRunner

from raasctl.cli import main
from raasctl.config import CRON_NAMES

REPO = Path(__file__).resolve().parent.parent


def test_the_embedded_default_runs_from_an_empty_folder_without_a_config(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAASCTL_")}
    done = subprocess.run(
        [sys.executable, "-m", "raasctl", "--format", "json", "run", "clientDepositUpdate"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["entries"] == 11
    assert result["enqueued"] == 11
    assert (empty / ".raasctl" / "local.db").is_file()
    assert sorted(p.name for p in empty.iterdir()) == [".raasctl"]


def test_the_fixtures_are_package_data() -> None:
    packaged = files("raasctl").joinpath("fixtures")
    for cron in CRON_NAMES:
        assert packaged.joinpath("raas", f"{cron}.json").is_file()
    assert packaged.joinpath("client_deposits.json").is_file()
    for cron in set(CRON_NAMES) - {"clientDepositUpdate"}:
        assert packaged.joinpath("mock", f"{cron}.json").is_file()
    # A wheel carries only what pyproject declares: every fixture file must match a pattern.
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["raasctl"]
    shipped = [
        path.relative_to(REPO / "raasctl").as_posix()
        for path in (REPO / "raasctl" / "fixtures").rglob("*")
        if path.is_file()
    ]
    assert len(shipped) == 8
    for name in shipped:
        assert any(fnmatch(name, pattern) for pattern in declared), name


def test_relative_paths_in_a_config_file_resolve_against_its_folder(
    runner: CliRunner, tmp_path: Path
) -> None:
    folder = tmp_path / "conf"
    (folder / "reports").mkdir(parents=True)
    for cron in CRON_NAMES:
        source = REPO / "raasctl" / "fixtures" / "raas" / f"{cron}.json"
        (folder / "reports" / f"{cron}.json").write_text(source.read_text())
    (folder / "raasctl.yaml").write_text(
        "environments:\n"
        "  local:\n"
        "    source: {kind: fixtures, path: reports}\n"
        "    queue: {kind: sqlite, path: data/q.db}\n"
        "    state: {kind: sqlite, path: data/state.db}\n"
        "    sink: {kind: sqlite, path: data/ledger.db}\n"
    )
    config = str(folder / "raasctl.yaml")
    result = runner.invoke(main, ["--config", config, "config", "validate"])
    assert result.exit_code == 0, result.stderr
    result = runner.invoke(main, ["--config", config, "--format", "json", "config", "show"])
    environment = json.loads(result.stdout)["environment"]
    assert environment["source"]["path"] == str(folder / "reports")
    assert environment["queue"]["path"] == str(folder / "data" / "q.db")
    result = runner.invoke(main, ["--config", config, "run", "clientBillPaidStatus"])
    assert result.exit_code == 0, result.stderr
    assert (folder / "data" / "q.db").is_file()
    assert not Path("data").exists()  # nothing in the working directory


def test_a_relative_mock_fixture_stays_relative_to_the_working_directory(
    runner: CliRunner, tmp_path: Path
) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "raasctl.yaml").write_text("environments:\n  local: {}\n")
    seed = REPO / "raasctl" / "fixtures" / "client_deposits.json"
    Path("mine.json").write_text(seed.read_text())
    config = str(folder / "raasctl.yaml")
    arguments = ["enqueue-mock", "clientDepositUpdate", "--fixture", "mine.json"]
    result = runner.invoke(main, ["--config", config, "--format", "json", *arguments])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["enqueued"] == 10


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["queue", "status"], "RAAS_STATE_FILE_MISSING: no embedded queue file"),
        (["queue", "peek"], "RAAS_STATE_FILE_MISSING: no embedded queue file"),
        (["runs", "show", "latest"], "RAAS_RUN_NOT_FOUND: no run found: no embedded state"),
        (["runs", "show", "r-1"], "RAAS_RUN_NOT_FOUND: run r-1 not found: no embedded state"),
    ],
)
def test_read_only_commands_never_create_a_state_file(
    runner: CliRunner, command: list[str], says: str
) -> None:
    result = runner.invoke(main, ["--log-format", "text", *command])
    assert result.exit_code == 1
    state_file = Path(".raasctl", "local.db").absolute()
    assert f"raasctl: error {says}" in result.stderr
    assert str(state_file) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not state_file.exists()
    assert not state_file.parent.exists()


def test_runs_list_without_a_state_file_is_empty_and_says_where_it_looked(
    runner: CliRunner,
) -> None:
    result = runner.invoke(main, ["--format", "json", "runs", "list"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert str(Path(".raasctl", "local.db").absolute()) in result.stderr
    assert not Path(".raasctl").exists()


def test_state_paths_in_messages_are_absolute(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAASCTL_STATE_DIR", "relative-state")
    result = runner.invoke(main, ["queue", "status"])
    assert str(Path("relative-state", "local.db").absolute()) in result.stderr
