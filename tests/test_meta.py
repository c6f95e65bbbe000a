"""Every command has help text ending with an example, and appears in the README."""

from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest

from raasctl.cli import all_commands, main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(all_commands(group).items()):
        path = f"{prefix}{name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, f"{path} "))
    return found


COMMANDS = _commands(main)


def test_there_are_commands() -> None:
    assert {"config", "config show", "schedule crontab"} <= {path for path, _ in COMMANDS}


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[path for path, _ in COMMANDS])
def test_command_has_help_with_an_example(path: str, command: click.Command) -> None:
    assert command.help, f"{path} has no help text"
    assert "Example:" in command.help, f"{path}'s help has no example"


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[path for path, _ in COMMANDS])
def test_command_is_in_the_readme(path: str, command: click.Command) -> None:
    assert f"raasctl {path}" in README, f"README's command reference lacks `raasctl {path}`"


ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "raasctl"


def test_ci_checks_format_lint_and_types_before_the_readmes_tests() -> None:
    steps = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for step in ("ruff format --check .", "ruff check .", "mypy", "python -m pytest -q"):
        assert step in steps, f".ci/run does not run `{step}`"
    assert steps.index("mypy") < steps.index("python -m pytest -q")
    # The README's test command is the one CI runs.
    assert "&& python -m pytest -q\n" in README


def test_no_module_is_over_600_lines_and_no_class_over_400() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT)
        assert len(text.splitlines()) <= 600, f"{name} is over 600 lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                assert length <= 400, f"{name}: class {node.name} is {length} lines"
