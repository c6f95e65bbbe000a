"""`raasctl worker [--cron CRON]... [--concurrency N] [--rate PER_SECOND] [--until-empty]
[--max-messages N] [--max-runtime SECONDS]`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from raasctl.cli.context import AppContext, pass_app
from raasctl.cli.options import cron_option, format_option, rate_option
from raasctl.cli.render import (
    ProgressBar,
    auto_table,
    emit,
    format_duration,
    format_rate,
    progress_bar,
)
from raasctl.cli.worker_signals import stop_on_signals
from raasctl.worker import Worker, WorkerStats, log_stats, open_worker, worker_options

TERMINAL_REFRESH_S = 1.0


@click.command("worker")
@cron_option(
    "Only this cron's messages (repeatable); others are released, uncounted. Refused "
    "on a queue with a DLQ, which would dead-letter them: use one queue per cron there.",
    multiple=True,
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 512),
    help="Messages handled at once (default: the environment's `concurrency`).",
)
@rate_option(
    "Start at most this many messages per second, evenly spaced "
    "(default: the environment's `rate_limit`; none means unlimited)."
)
@click.option(
    "--rate-scope",
    type=click.Choice(["process", "global"]),
    help="Whose rate --rate is: this worker's (process), or one shared by every worker of the "
    "environment on every host (global; default: the environment's `rate_limit_scope`).",
)
@click.option("--until-empty", is_flag=True, help="Stop once the queue is empty.")
@click.option(
    "--max-messages", type=click.IntRange(min=1), metavar="N", help="Stop after N messages."
)
@click.option(
    "--max-runtime",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop receiving after this long; in-flight work finishes.",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="After a stop, how long in-flight work may take to finish.",
)
@click.option(
    "--stats-every",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Interval of RAAS_WORKER_STATS log lines when stderr is not a terminal.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Serve Prometheus metrics on this port (/metrics): messages by outcome and cron, "
    "sink latency, in flight, rate-limiter waits.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    metavar="HOST",
    help="Address --metrics-port listens on (0.0.0.0: every interface).",
)
# Hidden: the DESIGN.md defaults (2 s doubling, capped at 60 s) suit the downstream; tests
# and drills shorten them.
@click.option("--backoff-base", type=click.FloatRange(min=0), default=2.0, hidden=True)
@click.option("--backoff-cap", type=click.FloatRange(min=0), default=60.0, hidden=True)
# Hidden: the registry refresh (10 s) suits operators; tests of staleness shorten it.
@click.option("--registry-every", type=click.FloatRange(min=0.1), default=10.0, hidden=True)
@format_option
@pass_app
def worker(
    app: AppContext,
    crons: tuple[str, ...],
    concurrency: int | None,
    rate: float | None,
    rate_scope: str | None,
    until_empty: bool,
    max_messages: int | None,
    max_runtime: float | None,
    shutdown_timeout: float,
    stats_every: float,
    metrics_port: int | None,
    metrics_host: str,
    backoff_base: float,
    backoff_cap: float,
    registry_every: float,
) -> None:
    """Apply queued entries to the accounting system at the rate it allows.

    Runs until stopped (SIGTERM or Ctrl-C: receiving stops, in-flight work finishes within
    --shutdown-timeout, messages not started are released; a second signal quits at once,
    exit 130, after printing the summary so far; a second SIGTERM within 2 s of the first
    is the same request), or until --until-empty,
    --max-messages or --max-runtime says so. Retryable failures come back after a backoff
    (2 s doubling to 60 s) until the queue's receive limit moves them to the DLQ; permanent
    ones go to the DLQ at once. A FIFO message group's messages are applied in order. With
    --cron, other crons' messages are released unprocessed; each release counts toward the
    queue's maxReceiveCount, so --cron is refused (exit 2) on a queue with a DLQ. A missing
    queue, denied access or no credentials end the worker at once (exit 1); other queue
    errors are retried. Progress goes to stderr; the summary to stdout. Exit 3 when
    messages failed or were dead-lettered. Every second it handled messages, the worker
    records their outcomes and its sink calls' latency for `raasctl runs report`.

    Example: raasctl worker --until-empty --concurrency 16 --rate 10
    """
    with progress_bar("worker", per="h") as bar:
        options = worker_options(
            app.runtime.env,
            crons=frozenset(crons),
            concurrency=concurrency,
            rate_per_s=rate,
            rate_scope=rate_scope,
            registry_refresh_s=registry_every,
            until_empty=until_empty,
            max_messages=max_messages,
            max_runtime_s=max_runtime,
            shutdown_timeout_s=shutdown_timeout,
            stats_interval_s=TERMINAL_REFRESH_S if bar.shown else stats_every,
            backoff_base_s=backoff_base,
            backoff_cap_s=backoff_cap,
            log_idle=not bar.shown,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
        )
        with (
            open_worker(app.runtime, options, on_stats=_on_stats(bar)) as running,
            stop_on_signals(
                running, show_summary=lambda: _show_summary(app, running), on_terminal=bar.shown
            ),
        ):
            result = running.run()
    _show_summary(app, running, result.summary())
    if not result.ok:
        raise click.exceptions.Exit(3)


def _show_summary(app: AppContext, running: Worker, summary: dict[str, Any] | None = None) -> None:
    """The summary on stdout: at the end, or so far when a second signal quits at once."""
    summary = summary if summary is not None else running.result().summary()
    emit(app, summary, table=auto_table(summary, title="Worker"))


def _on_stats(bar: ProgressBar) -> Callable[[WorkerStats], None]:
    """On a terminal the live bar (done/total, rate per hour, ETA, outcomes); otherwise the
    periodic RAAS_WORKER_STATS log line."""
    if not bar.shown:
        return log_stats

    def update(stats: WorkerStats) -> None:
        bar.update(stats.runs_done, total=stats.runs_total, detail=progress_detail(stats))

    return update


def progress_detail(stats: WorkerStats) -> str:
    """The worker's own rate and ETA (over the runs it serves, not only this process's
    share) and its outcome counters; while the queue is empty, that it waits and how to stop."""
    if stats.idle and stats.in_flight == 0:
        return f"waiting for messages (Ctrl-C to stop)  ok {stats.succeeded}  failed {stats.failed}"
    waiting = stats.waiting_elsewhere()
    if waiting is not None:  # messages another worker holds (or held, and died)
        return f"{waiting}  ok {stats.succeeded}  failed {stats.failed}"
    return (
        f"{format_rate(stats.per_hour, 'h')}  ETA {format_duration(stats.eta_s)}"
        f"  ok {stats.succeeded}  retries {stats.retries}"
        f"  failed {stats.failed}  DLQ {stats.dead_lettered}  in flight {stats.in_flight}"
    )
