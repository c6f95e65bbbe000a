"""The one place that prints results: a rich table, or one JSON document."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from raasctl.cli.context import AppContext


def emit(app: AppContext, data: Any, *, table: Table | None = None) -> None:
    """Results go to stdout: JSON with --format json, otherwise `table` or a generic one."""
    if app.json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    console = Console(file=sys.stdout, soft_wrap=True)
    console.print(table if table is not None else auto_table(data))


def auto_table(data: Any, title: str | None = None) -> Table:
    """A list of flat mappings becomes rows; a mapping becomes key/value pairs."""
    if isinstance(data, Sequence) and not isinstance(data, str):
        rows = [dict(_flatten(row)) for row in data if isinstance(row, Mapping)]
        columns = list(dict.fromkeys(key for row in rows for key in row))
        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(_cell(row.get(column)) for column in columns))
        return table
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in _flatten(data if isinstance(data, Mapping) else {"value": data}):
        table.add_row(key, _cell(value))
    return table


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            items.extend(_flatten(value, f"{name}."))
        else:
            items.append((name, value))
    return items


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)
