"""`raasctl runs reconcile [RUN_ID]...` and `raasctl runs unlock CRON [--force]`: closing runs
and freeing run locks on an operator's say."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from raasctl.cli.context import AppContext, pass_app
from raasctl.cli.options import CronType, format_option
from raasctl.cli.render import auto_table, emit
from raasctl.codes import ErrorCode
from raasctl.errors import RuntimeFailure
from raasctl.queue_admin import queue_status
from raasctl.runs import reconcile, run_progress, unlock


@click.command("reconcile")
@click.argument("run_ids", nargs=-1, metavar="[RUN_ID]...")
@format_option
@pass_app
def reconcile_command(app: AppContext, run_ids: tuple[str, ...]) -> None:
    """Close open runs that nothing more will arrive for (default: every open run of the
    environment): all counted -> complete or failed; producer gone mid-enqueue -> abandoned;
    queue purged -> the rest count as purged. Refused (exit 1) while the queue still holds
    messages: the worker reconciles by itself when it finds the queue empty.

    Example: raasctl runs reconcile
    """
    runtime = app.runtime
    depth = queue_status(runtime).depth
    if not depth.empty:
        raise RuntimeFailure(
            f"the queue still holds messages ({depth.visible} visible, {depth.in_flight} in "
            f"flight, {depth.delayed} delayed): drain it first (raasctl worker --until-empty)",
            code=ErrorCode.QUEUE_NOT_EMPTY,
        )
    state = runtime.state()
    try:
        now = datetime.now(UTC)
        closed = reconcile(state, now, env=runtime.env_name, run_ids=run_ids or None)
        records = [state.get_run(run.run_id) for run in closed]
    finally:
        state.close()
    rows = [run_progress(record, now) for record in records if record is not None]
    emit(app, {"reconciled": rows}, table=auto_table(rows, title="Reconciled runs"))


@click.command("unlock")
@click.argument("cron", type=CronType())
@click.option("--force", is_flag=True, help="Also while its holder runs on this host.")
@format_option
@pass_app
def unlock_command(app: AppContext, cron: str, force: bool) -> None:
    """Release CRON's run lock. A lock frees itself within 60 s of its run ending; this is for
    the rest. Refused (exit 1, RAAS_RUN_LOCKED) while the holder is alive on this host,
    unless --force.

    Example: raasctl runs unlock clientDepositUpdate
    """
    runtime = app.runtime
    state = runtime.state()
    try:
        result = unlock(state, runtime.env_name, cron, datetime.now(UTC), force=force)
    finally:
        state.close()
    data = result.as_dict()
    emit(app, data, table=auto_table(data, title=f"Unlock {cron}"))
