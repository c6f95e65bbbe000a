"""Protection by queue, not by name, and YAML that cannot turn it off unseen."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from raasctl.cli import main

PROD_DB = "prod-queue.db"


def write_config(text: str) -> None:
    Path("raasctl.yaml").write_text(text, encoding="utf-8")


TWO_ON_ONE_QUEUE = f"""\
default_env: alias
environments:
  prod:
    deployed: true
    protected: true
    queue: {{kind: sqlite, path: {PROD_DB}}}
  alias:
    queue: {{kind: sqlite, path: ./{PROD_DB}}}
"""


def test_a_second_environment_on_a_protected_queue_cannot_purge_it(runner: CliRunner) -> None:
    write_config(TWO_ON_ONE_QUEUE)

    result = runner.invoke(main, ["queue", "purge", "--yes"])

    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "RAAS_PROTECTED_ENV" in line
    assert "uses the queue of protected environment prod" in line


def test_config_validate_says_which_environment_is_protected_by_its_queue(
    runner: CliRunner,
) -> None:
    write_config(TWO_ON_ONE_QUEUE)

    result = runner.invoke(main, ["--format", "json", "config", "validate", "--all-envs"])

    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["protected"]["prod"] == "it is marked protected"
    assert "uses the queue of protected environment prod" in data["protected"]["alias"]
    assert any("environment alias is protected" in w for w in data["warnings"])


def test_a_duplicate_key_is_refused_with_its_line(runner: CliRunner) -> None:
    write_config(
        "default_env: prod\n"
        "environments:\n"
        "  prod:\n"
        "    deployed: true\n"
        "    protected: true\n"
        "    queue: {kind: sqlite}\n"
        "    protected: false\n"
    )

    result = runner.invoke(main, ["config", "validate", "--all-envs"])

    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "raasctl.yaml:7:5" in line and "duplicate key 'protected'" in line
