"""`runs show latest|--cron`, `runs show --follow` and `queue status --watch`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from raasctl.cli import main


def run_id_of(runner: CliRunner, cron: str) -> str:
    result = runner.invoke(main, ["--format", "json", "run", cron])
    assert result.exit_code == 0, result.stderr
    return str(json.loads(result.stdout)["run_id"])


def test_latest_and_cron_pick_the_newest_run(runner: CliRunner) -> None:
    deposits = run_id_of(runner, "clientDepositUpdate")
    paid = run_id_of(runner, "clientBillPaidStatus")
    for args, expected in (
        (["latest"], paid),
        (["--cron", "clientDepositUpdate"], deposits),
        (["latest", "--cron", "clientDepositUpdate"], deposits),
        ([deposits], deposits),
    ):
        result = runner.invoke(main, ["--format", "json", "runs", "show", *args])
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["run_id"] == expected, args


def test_no_run_of_that_cron_and_no_argument_are_clear_errors(runner: CliRunner) -> None:
    run_id_of(runner, "clientDepositUpdate")
    result = runner.invoke(
        main, ["--log-format", "text", "runs", "show", "--cron", "lspBillUpdateStatus"]
    )
    assert result.exit_code == 1
    assert "RAAS_RUN_NOT_FOUND: no lspBillUpdateStatus runs in environment local" in result.stderr
    result = runner.invoke(main, ["--log-format", "text", "runs", "show"])
    assert result.exit_code == 2
    assert "RUN_ID, `latest` or --cron CRON" in result.stderr


def test_follow_of_a_finished_run_prints_it_once(runner: CliRunner) -> None:
    run_id_of(runner, "clientDepositUpdate")
    assert runner.invoke(main, ["worker", "--until-empty"]).exit_code == 0
    result = runner.invoke(
        main, ["--format", "json", "runs", "show", "latest", "--follow", "--every", "0.01"]
    )
    assert result.exit_code == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert json.loads(line)["status"] == "complete"


def as_at_a_terminal() -> None:
    """In the child, before raasctl starts: Ctrl-C as a user's shell delivers it. A suite
    started in the background by a non-interactive shell inherits SIGINT ignored, and Python
    then keeps ignoring it, so the Ctrl-C these tests send would never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "raasctl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        preexec_fn=as_at_a_terminal,
    )


def test_follow_prints_a_line_each_interval_until_the_run_is_finished(runner: CliRunner) -> None:
    run_id = run_id_of(runner, "clientDepositUpdate")
    follower = spawn("--format", "json", "runs", "show", run_id, "--follow", "--every", "0.05")
    try:
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())
        second = json.loads(follower.stdout.readline())
        assert first["status"] == second["status"] == "running"
        assert first["done"] == 0
        assert runner.invoke(main, ["worker", "--until-empty"]).exit_code == 0
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    last = json.loads(out.splitlines()[-1])
    assert (last["status"], last["done"], last["total"]) == ("complete", 11, 11)


@pytest.mark.parametrize("output", ["json", "table"])
def test_watch_refreshes_until_ctrl_c_and_exits_0(runner: CliRunner, output: str) -> None:
    run_id_of(runner, "clientDepositUpdate")
    watcher = spawn("--format", output, "queue", "status", "--watch", "0.05")
    try:
        assert watcher.stdout is not None
        lines = [watcher.stdout.readline() for _ in range(12)]
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, err
    assert "Traceback" not in err
    if output == "json":
        assert all(json.loads(line)["queue"]["visible"] == 11 for line in lines)
    else:
        text = "".join(lines) + out
        assert text.count(f"Queue {Path('.raasctl', 'local.db').absolute()}") >= 2


def test_watch_redraws_in_place_on_a_terminal(runner: CliRunner) -> None:
    import pty
    import select
    import time

    run_id_of(runner, "clientDepositUpdate")
    main_fd, terminal = pty.openpty()
    watcher = subprocess.Popen(
        [sys.executable, "-m", "raasctl", "queue", "status", "--watch", "0.05"],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "120", "LINES": "40"},
        preexec_fn=as_at_a_terminal,
    )
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 20
    try:
        # Several redraws: rich's Live moves the cursor back up over the last frame.
        while seen.count(b"\x1b[1A") < 3 and time.monotonic() < deadline:
            ready, _, _ = select.select([main_fd], [], [], 0.5)
            if ready:
                seen += os.read(main_fd, 65536)
        watcher.send_signal(signal.SIGINT)
        code = watcher.wait(timeout=20)
    finally:
        watcher.kill()
        os.close(main_fd)
    assert seen.count(b"\x1b[1A") >= 3
    assert b"visible" in seen
    assert code == 0
