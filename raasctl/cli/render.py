"""The one place that prints results (a table, or one JSON document, on stdout) and draws
progress bars (on stderr, only on a terminal).

Commands describe a table as a `TableSpec` (title, columns, rows of plain values) and hand it
to `emit`; how a spec becomes a rich table, and how a cell's value is shown, is decided here
once, so every command's tables look alike.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import click

from raasctl.cli.context import AppContext
from raasctl.redaction import redact

# rich is loaded when something is drawn: a command whose output is JSON, or a worker run
# from crontab, starts without it.
if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.progress import Progress, TaskID
    from rich.table import Table
    from rich.text import Text

Justify = Literal["left", "center", "right"]
Overflow = Literal["fold", "crop", "ellipsis", "ignore"]
Per = Literal["s", "h"]
# Wide enough for any row; rich still sizes a table to its content.
UNBOUNDED_WIDTH = 1_000_000


# ---------------------------------------------------------------- tables


@dataclass(frozen=True)
class Column:
    heading: str
    justify: Justify = "left"
    overflow: Overflow = "ellipsis"  # "fold" for ids and keys that must be read in full
    style: str | None = None


@dataclass(frozen=True)
class TableSpec:
    """A table as data. Cells are plain values (None shows as "-", a list as "a, b") or a
    rich `Text` where a cell needs a style. A spec renders wherever rich renders."""

    title: str | None
    columns: Sequence[Column | str]
    rows: Sequence[Sequence[Any]] = field(default_factory=list)
    show_header: bool = True

    def __rich__(self) -> Table:
        return build_table(self)


def build_table(spec: TableSpec, *, whole: bool = False) -> Table:
    """`whole`: every cell in full on one line (for a pipe or a file, where nothing is read
    at a terminal's width and a wrapped run id or a cut key is useless)."""
    from rich.table import Table

    table = Table(title=spec.title, show_header=spec.show_header)
    for column in spec.columns:
        column = Column(column) if isinstance(column, str) else column
        table.add_column(
            column.heading,
            justify=column.justify,
            overflow="ignore" if whole else column.overflow,
            no_wrap=whole,
            style=column.style,
        )
    for row in spec.rows:
        table.add_row(*(cell(value) for value in row))
    return table


def cell(value: Any) -> str | Text:
    """How one value is shown in a table."""
    from rich.text import Text

    if isinstance(value, Text):
        return value
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return redact(", ".join(str(v) for v in value)) or "-"
    return redact(str(value))


def emit(app: AppContext, data: Any, *, table: RenderableType | None = None) -> None:
    """Results go to stdout: `data` as JSON with --format json, otherwise `table` (usually a
    TableSpec) or a table made from `data` by `auto_table`."""
    if app.json:
        # The JSON-escaped form of every secret is registered too.
        click.echo(redact(json.dumps(data, indent=2, default=str)))
        return
    from rich.console import Console

    renderable = table if table is not None else auto_table(data)
    if sys.stdout.isatty():
        Console(file=sys.stdout, soft_wrap=True).print(renderable)
        return
    # Off a terminal no width applies: a table as wide as its widest row, never cut.
    if isinstance(renderable, TableSpec):
        renderable = build_table(renderable, whole=True)
    Console(file=sys.stdout, soft_wrap=True, width=UNBOUNDED_WIDTH).print(renderable)


def auto_table(data: Any, title: str | None = None) -> TableSpec:
    """A list of flat mappings becomes rows; a mapping becomes key/value pairs (nested
    mappings as dotted keys)."""
    if isinstance(data, Sequence) and not isinstance(data, str):
        rows = [dict(_flatten(row)) for row in data if isinstance(row, Mapping)]
        columns = list(dict.fromkeys(key for row in rows for key in row))
        return TableSpec(title, columns, [[row.get(column) for column in columns] for row in rows])
    pairs = _flatten(data if isinstance(data, Mapping) else {"value": data})
    return TableSpec(
        title,
        [Column("key", style="bold"), Column("value")],
        [list(pair) for pair in pairs],
        show_header=False,
    )


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            items.extend(_flatten(value, f"{name}."))
        else:
            items.append((name, value))
    return items


def format_duration(seconds: float | None) -> str:
    """An ETA or a duration as h:mm:ss; "-" when unknown."""
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def format_rate(per_unit: float, per: Per) -> str:
    return f"{per_unit:,.0f}/{per}"


# ---------------------------------------------------------------- progress


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


class ProgressBar:
    """One live bar: label, bar, done/total, then a detail (by default the rate since the bar
    started and the ETA at that rate). Without a terminal it draws nothing."""

    def __init__(
        self, progress: Progress | None, label: str, per: Per, clock: Callable[[], float]
    ) -> None:
        self._progress = progress
        self._task: TaskID | None = None
        if progress is not None:
            self._task = progress.add_task(label, total=None, detail="")
        self._per = per
        self._clock = clock
        self._started = clock()
        self._total: int | None = None

    @property
    def shown(self) -> bool:
        return self._progress is not None

    def set_total(self, total: int) -> None:
        self._total = total
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total)

    def update(self, done: int, *, total: int | None = None, detail: str | None = None) -> None:
        """`total` None keeps the one known; `detail` None shows the bar's own rate and ETA."""
        if total is not None:
            self._total = total
        if self._progress is None or self._task is None:
            return
        if detail is None:
            detail = self.rate_and_eta(done)
        self._progress.update(self._task, completed=done, total=self._total, detail=detail)

    def rate_and_eta(self, done: int) -> str:
        elapsed = self._clock() - self._started
        per_second = done / elapsed if elapsed > 0 else 0.0
        eta = None
        if self._total is not None and per_second > 0:
            eta = max(self._total - done, 0) / per_second
        per_unit = per_second * (3600 if self._per == "h" else 1)
        return f"{format_rate(per_unit, self._per)}  ETA {format_duration(eta)}"


@contextmanager
def progress_bar(
    label: str,
    *,
    per: Per = "s",
    console: Console | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[ProgressBar]:
    """A transient progress bar on stderr (or `console`) while the block runs, only when that
    is a terminal: crontab and CI logs get no escape codes."""
    if console is None and not sys.stderr.isatty():
        yield ProgressBar(None, label, per, clock)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = console or Console(stderr=True)
    if not console.file.isatty():
        yield ProgressBar(None, label, per, clock)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        console=console,
        transient=True,
    )
    with progress:
        yield ProgressBar(progress, label, per, clock)


# ---------------------------------------------------------------- refreshing views


@dataclass(frozen=True)
class Frame:
    """One refresh of a watched view: its data, its table, and whether it is final."""

    data: Any
    table: RenderableType
    final: bool = False


def refresh(
    app: AppContext,
    frame: Callable[[], Frame],
    every_s: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Show `frame()` every `every_s` seconds until a frame is final or Ctrl-C (which ends
    it normally, exit 0). On a terminal the table is redrawn in place; elsewhere (a pipe, a
    log) each refresh is printed after the last: one JSON line, or a table."""
    try:
        if sys.stdout.isatty() and not app.json:
            _refresh_live(frame, every_s, sleep)
            return
        while True:
            current = frame()
            if app.json:
                click.echo(redact(json.dumps(current.data, default=str)))
            else:
                emit(app, current.data, table=current.table)
            sys.stdout.flush()
            if current.final:
                return
            sleep(every_s)
    except KeyboardInterrupt:
        return


def _refresh_live(
    frame: Callable[[], Frame], every_s: float, sleep: Callable[[float], None]
) -> None:
    from rich.console import Console
    from rich.live import Live

    current = frame()
    with Live(current.table, console=Console(file=sys.stdout), auto_refresh=False) as live:
        while not current.final:
            sleep(every_s)
            current = frame()
            live.update(current.table, refresh=True)
