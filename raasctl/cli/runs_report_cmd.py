"""`raasctl runs report RUN_ID|latest [--html FILE] [--format json]`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Group
from rich.text import Text

from raasctl.cli.context import AppContext, pass_app
from raasctl.cli.options import format_option
from raasctl.cli.render import Column, TableSpec, emit, format_duration
from raasctl.codes import ErrorCode, InfoCode
from raasctl.errors import RuntimeFailure, UsageError
from raasctl.logs import event
from raasctl.report_html import render_html
from raasctl.runstats import RunReport, build_report

SPARK = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 60


@click.command("report")
@click.argument("run_id", metavar="RUN_ID|latest")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Also write the report as one self-contained HTML page with charts.",
)
@format_option
@pass_app
def report(app: AppContext, run_id: str, html_path: Path | None) -> None:
    """A run's load-test report from the statistics its workers recorded each second: the
    summary (entries, outcomes, wall time, rate per second and hour, the bound min(rate
    limit, concurrency / p50 latency) and how close the run came to it), sink latency
    p50/p90/p95/p99/max, and throughput over time as a sparkline.

    --html FILE writes one page that references nothing outside itself (inline styles and
    SVG charts: throughput, latency percentiles and workers over time, and the summary).
    JSON: {"run_id", "cron", "status", "elapsed_s", "per_second", "per_hour",
    "bound_per_second", "latency_ms": {"p50", "p90", "p95", "p99", "max"}, "timeline":
    [{"t", "succeeded", "failed", "retries", "dead_lettered", "workers"}]}. An unknown RUN_ID
    exits 1 (RAAS_RUN_NOT_FOUND).

    Example: raasctl runs report latest --html report.html
    """
    built = _report(app, run_id)
    if html_path is not None:
        path = html_path.resolve()
        try:
            path.write_text(render_html(built), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--html {path}: cannot write it: {exc.strerror or exc}") from None
        event(InfoCode.REPORT_WRITTEN, f"report written to {path}", path=str(path))
    emit(app, built.as_json(), table=_terminal(built))


def _report(app: AppContext, run_id: str) -> RunReport:
    missing = app.runtime.missing_embedded_file("state")
    if missing is not None:
        which = "no run found" if run_id == "latest" else f"run {run_id} not found"
        raise RuntimeFailure(
            f"{which}: no embedded state file {missing} yet", code=ErrorCode.RUN_NOT_FOUND
        )
    state = app.runtime.state()
    try:
        if run_id == "latest":
            newest = state.list_runs(limit=1)
            if not newest:
                raise RuntimeFailure(
                    f"no runs in environment {app.runtime.env_name} yet",
                    code=ErrorCode.RUN_NOT_FOUND,
                )
            run_id = newest[0].run_id
        run = state.get_run(run_id)
        if run is None:
            raise RuntimeFailure(f"run {run_id} not found", code=ErrorCode.RUN_NOT_FOUND)
        stats = state.stats()
        try:
            rows = stats.rows(run_id)
        finally:
            stats.close()
    finally:
        state.close()
    return build_report(run, rows, datetime.now(UTC))


def _terminal(built: RunReport) -> Group:
    run = built.run
    of_bound = "-" if built.of_bound is None else f"{built.of_bound:.0%}"
    summary = TableSpec(
        f"Run {run.run_id}",
        ["", Column("", justify="right")],
        [
            ("cron", run.cron),
            ("status", run.status),
            ("entries", f"{run.done}/{'-' if run.total is None else run.total}"),
            ("succeeded", run.succeeded),
            ("failed", run.failed),
            ("dead-lettered", run.dead_lettered),
            ("superseded", run.superseded),
            ("retries", run.retries),
            ("wall time", format_duration(built.elapsed_s)),
            ("per second", _number(built.per_second, 2)),
            ("per hour", _number(built.per_hour, 0)),
            ("bound per second", _number(built.bound_per_second, 2)),
            ("of the bound", of_bound),
        ],
        show_header=False,
    )
    names = list(built.latency_ms)
    latency = TableSpec(
        "Sink latency (ms)",
        [Column(name, justify="right") for name in names],
        [[_number(built.latency_ms[name], 1) for name in names]],
    )
    handled = [s.succeeded + s.failed + s.retries + s.dead_lettered for s in built.timeline]
    line = sparkline(handled, SPARK_WIDTH)
    peak = max(handled, default=0)
    spark = Text(
        f"throughput  {line}  (peak {peak}/s over {len(handled)} s)"
        if line
        else "throughput  (no statistics recorded for this run)"
    )
    return Group(summary, latency, spark)


def sparkline(values: list[int], width: int) -> str:
    """Values grouped into at most `width` columns (each the mean of its group), drawn with
    eight block heights from the smallest to the largest."""
    if not values:
        return ""
    size = -(-len(values) // width)  # ceil
    means = [
        sum(values[i : i + size]) / len(values[i : i + size]) for i in range(0, len(values), size)
    ]
    top = max(means)
    if top <= 0:
        return SPARK[0] * len(means)
    return "".join(
        SPARK[min(len(SPARK) - 1, int(mean / top * (len(SPARK) - 1) + 0.5))] for mean in means
    )


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
