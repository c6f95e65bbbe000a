"""`schedule crontab` (log folder, the worker line under flock) and `schedule systemd`
(units, cron expressions as OnCalendar)."""

from __future__ import annotations

import fcntl
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from raasctl.cli import main
from raasctl.errors import ConfigError
from raasctl.systemd import on_calendar


def test_crontab_creates_its_log_folder_and_uses_absolute_paths(runner: CliRunner) -> None:
    result = runner.invoke(main, ["schedule", "crontab", "--log-dir", "logs/cron"])
    assert result.exit_code == 0, result.stderr
    folder = Path("logs/cron").absolute()
    assert folder.is_dir()
    jobs = [line for line in result.stdout.splitlines() if line[:1].isdigit() or line[:1] == "*"]
    assert len(jobs) == 5
    for line in jobs:
        assert f">> {folder}/" in line and line.endswith(" 2>&1")
        assert f"cd {Path.cwd()} && " in line


def test_crontab_default_log_folder_is_under_the_state_dir(runner: CliRunner) -> None:
    result = runner.invoke(main, ["schedule", "crontab", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    log_dir = Path(json.loads(result.stdout)["log_dir"])
    assert log_dir == (Path.cwd() / ".raasctl" / "logs") and log_dir.is_dir()


def test_crontab_exits_2_when_the_log_folder_cannot_be_made(runner: CliRunner) -> None:
    Path("taken").write_text("a file, not a folder")
    result = runner.invoke(main, ["schedule", "crontab", "--log-dir", "taken/logs"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert f"cannot create the log folder {Path('taken/logs').absolute()}" in result.stderr
    assert "Traceback" not in result.stderr


def worker_line(stdout: str) -> str:
    return next(
        line for line in stdout.splitlines() if " worker " in line and not line.startswith("#")
    )


def test_crontab_worker_line_keeps_one_worker_under_flock(runner: CliRunner) -> None:
    result = runner.invoke(main, ["schedule", "crontab", "--log-dir", "logs"])
    line = worker_line(result.stdout)
    assert line.startswith("*/5 * * * * ")
    assert f"flock -n {Path('logs').absolute()}/worker-local.lock " in line
    assert "worker --env local --max-runtime 280 --shutdown-timeout 15" in line
    assert line.endswith(f">> {Path('logs').absolute()}/worker.log 2>&1")

    other = runner.invoke(
        main, ["schedule", "crontab", "--log-dir", "logs", "--worker-every", "10"]
    )
    assert "*/10 * * * * " in worker_line(other.stdout)
    assert "--max-runtime 580 " in worker_line(other.stdout)

    none = runner.invoke(main, ["schedule", "crontab", "--log-dir", "logs", "--no-worker"])
    assert "flock" not in none.stdout and " run clientDepositUpdate " in none.stdout


def test_worker_line_skips_a_start_while_the_lock_is_held(runner: CliRunner) -> None:
    """Run the line's own command through sh while the lock is held: flock -n
    gives up at once (exit 1) and no second worker writes to the log."""
    result = runner.invoke(main, ["schedule", "crontab", "--log-dir", "logs"])
    command = worker_line(result.stdout).split(" ", 5)[5]
    lock = Path("logs/worker-local.lock").absolute()
    # Held by this process (flock(1) and fcntl.flock take the same lock), so no helper
    # process outlives the test.
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        ran = subprocess.run(["sh", "-c", command], timeout=30, check=False)
    assert ran.returncode == 1
    log = Path("logs/worker.log")
    assert not log.exists() or log.read_text() == ""


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("15 * * * *", ["*-*-* *:15:00 UTC"]),
        ("0 * * * *", ["*-*-* *:00:00 UTC"]),
        ("*/5 * * * *", ["*-*-* *:00/5:00 UTC"]),
        ("1/5 * * * *", ["*-*-* *:01/5:00 UTC"]),
        ("@hourly", ["*-*-* *:00:00 UTC"]),
        ("@daily", ["*-*-* 00:00:00 UTC"]),
        ("0 9-17/2 * * 1-5", ["Mon..Fri *-*-* 09,11,13,15,17:00:00 UTC"]),
        ("5,10 1 2 3 *", ["*-03-02 01:05,10:00 UTC"]),
        ("0 0 * jan-mar 0,7", ["Sun *-01..03-* 00:00:00 UTC"]),
        ("0 */6 * * sat,sun", ["Sun,Sat *-*-* 00/6:00:00 UTC"]),
        ("0 0 * * 0-6", ["*-*-* 00:00:00 UTC"]),
        ("0-4 0 * * *", ["*-*-* 00:00..04:00 UTC"]),
        # cron: either day field; systemd: all fields, so two calendars
        ("30 8 1,15 * mon", ["*-*-01,15 08:30:00 UTC", "Mon *-*-* 08:30:00 UTC"]),
    ],
)
def test_cron_expressions_as_systemd_calendars(expression: str, expected: list[str]) -> None:
    assert on_calendar(expression) == expected


def test_calendar_carries_the_time_zone() -> None:
    assert on_calendar("30 * * * *", "Europe/Berlin") == ["*-*-* *:30:00 Europe/Berlin"]


@pytest.mark.parametrize("expression", ["0 0 L * *", "0 0 * * 5#2", "not cron"])
def test_inexpressible_or_bad_expressions_are_config_errors(expression: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(repr(expression))):
        on_calendar(expression)


def test_systemd_prints_a_worker_service_and_a_pair_per_cron(runner: CliRunner) -> None:
    result = runner.invoke(main, ["schedule", "systemd", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    units = json.loads(result.stdout)["units"]
    assert set(units) == {"raasctl-local-worker.service"} | {
        f"raasctl-local-{cron}.{kind}"
        for cron in (
            "clientDepositUpdate",
            "clientBillPaidStatus",
            "clientBillUnpaidStatus",
            "lspBillUpdateStatus",
        )
        for kind in ("service", "timer")
    }
    worker = units["raasctl-local-worker.service"]
    assert "Restart=always" in worker.splitlines()
    assert "Environment=RAASCTL_ENV=local" in worker.splitlines()
    assert f"Environment=RAASCTL_STATE_DIR={Path.cwd() / '.raasctl'}" in worker.splitlines()
    exec_start = next(line for line in worker.splitlines() if line.startswith("ExecStart="))
    assert shlex.split(exec_start)[-3:] == ["worker", "--env", "local"]
    unpaid = units["raasctl-local-clientBillUnpaidStatus.timer"].splitlines()
    assert "OnCalendar=*-*-* *:30:00 UTC" in unpaid
    assert "Unit=raasctl-local-clientBillUnpaidStatus.service" in unpaid
    service = units["raasctl-local-clientBillUnpaidStatus.service"].splitlines()
    assert "Type=oneshot" in service
    assert any(line.endswith("run clientBillUnpaidStatus --env local") for line in service)

    printed = runner.invoke(main, ["schedule", "systemd"])
    assert "# raasctl-local-worker.service\n[Unit]\n" in printed.stdout


def test_systemd_output_dir_writes_the_files(runner: CliRunner) -> None:
    result = runner.invoke(main, ["schedule", "systemd", "--output-dir", "units"])
    assert result.exit_code == 0, result.stderr
    written = result.stdout.split()
    assert len(written) == 9
    folder = Path("units").absolute()
    assert sorted(written) == sorted(str(path) for path in folder.iterdir())
    timer = (folder / "raasctl-local-clientBillPaidStatus.timer").read_text()
    assert "OnCalendar=*-*-* *:00:00 UTC\n" in timer


def test_systemd_output_dir_that_cannot_be_made_exits_2(runner: CliRunner) -> None:
    Path("taken").write_text("x")
    result = runner.invoke(main, ["schedule", "systemd", "--output-dir", "taken/units"])
    assert result.exit_code == 2
    assert "cannot write the units into" in result.stderr and "Traceback" not in result.stderr


def test_systemd_refuses_a_schedule_it_cannot_express(runner: CliRunner) -> None:
    Path("raasctl.yaml").write_text(
        "environments:\n  local: {}\ncrons:\n  clientDepositUpdate: {schedule: '0 0 L * *'}\n"
    )
    result = runner.invoke(main, ["schedule", "systemd"])
    assert result.exit_code == 2
    assert "'0 0 L * *' uses L or #" in result.stderr
