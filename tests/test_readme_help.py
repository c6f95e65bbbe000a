"""The README's command reference is the commands' own --help: stale text fails here."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_help", ROOT / "tools" / "readme_help.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_command_reference_is_generated_from_help() -> None:
    tool = _tool()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(tool.START) == 1 and readme.count(tool.END) == 1
    assert tool.updated(readme) == readme, (
        "README.md's command reference is stale: run python tools/readme_help.py"
    )


def test_the_generator_notices_a_change() -> None:
    tool = _tool()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    stale = readme.replace("Usage: raasctl queue status [OPTIONS]", "Usage: raasctl queue status")
    assert stale != readme
    assert tool.updated(stale) == readme
    reference = tool.reference()
    assert "### `raasctl runs show`" in reference
    assert "--log-format [text|json]" in reference


def test_the_quick_start_stays_at_the_top() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.index("## Quick start") < readme.index("## Commands")
    assert "raasctl run clientDepositUpdate && raasctl worker --until-empty" in readme
