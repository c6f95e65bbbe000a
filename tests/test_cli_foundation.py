"""The command surface of the foundation: config lookup, validation, redaction, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws

from raasctl.cli import main

WORKDAY_ENV = """
environments:
  local: {}
  work-uat:
    deployed: true
    source:
      kind: workday
      base_url: https://wd2-impl-services1.workday.com
      tenant: acme_uat
      owner: ISU_Accounting
      auth: {kind: basic, username: env:WORKDAY_USER, password: env:WORKDAY_PASSWORD}
    sink:
      kind: http
      base_url: https://accounting.example.internal/cron-jobs
      token: ssm:/accounting/callback-token
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def show_env(runner: CliRunner, *args: str, env: dict[str, str] | None = None) -> str:
    result = runner.invoke(main, [*args, "config", "show", "--format", "json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["env"]


def test_built_in_default_when_no_file(runner: CliRunner) -> None:
    result = runner.invoke(main, ["config", "show", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["file"] is None
    assert data["env"] == "local"
    assert data["environment"]["queue"]["kind"] == "sqlite"


def test_lookup_order_option_then_envvar_then_cwd(runner: CliRunner, tmp_path: Path) -> None:
    write(Path("raasctl.yaml"), "default_env: cwd\nenvironments: {cwd: {}}\n")
    from_envvar = write(tmp_path / "envvar.yaml", "default_env: ev\nenvironments: {ev: {}}\n")
    from_option = write(tmp_path / "option.yaml", "default_env: opt\nenvironments: {opt: {}}\n")
    assert show_env(runner) == "cwd"
    assert show_env(runner, env={"RAASCTL_CONFIG": str(from_envvar)}) == "ev"
    assert (
        show_env(runner, "--config", str(from_option), env={"RAASCTL_CONFIG": str(from_envvar)})
        == "opt"
    )


def test_env_option_and_envvar(runner: CliRunner) -> None:
    write(Path("raasctl.yaml"), "environments: {local: {}, other: {concurrency: 3}}\n")
    assert show_env(runner, "--env", "other") == "other"
    assert show_env(runner, env={"RAASCTL_ENV": "other"}) == "other"


def test_format_is_accepted_before_the_command(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--format", "json", "config", "show"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["env"] == "local"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("environments:\n  local: {concurrency: [\n", "raasctl.yaml:3:1: invalid YAML"),
        ("environments:\n  local: {bogus: 1}\n", "environments.local.bogus: unknown key"),
        (
            "environments:\n  local: {concurrency: many}\n",
            "environments.local.concurrency: Input should be a valid integer",
        ),
        (
            "environments:\n  x: {queue: {kind: sqs}}\ndefault_env: x\n",
            "environments.x.queue.url: Field required",
        ),
        (
            "environments:\n  x: {sink: {kind: http, base_url: https://a, token: abc123}}\n",
            "environments.x.sink.token: must be a reference",
        ),
        (
            "crons: {clientDepositUpdate: {schedule: 'every hour'}}\n",
            "crons.clientDepositUpdate.schedule",
        ),
        ("crons: {nightlyThing: {}}\n", "unknown cron 'nightlyThing'"),
        ("default_env: staging\n", "default_env 'staging' is not among environments"),
    ],
)
def test_config_errors_name_the_field_and_exit_2(
    runner: CliRunner, text: str, expected: str
) -> None:
    write(Path("raasctl.yaml"), text)
    result = runner.invoke(main, ["config", "validate"])
    assert result.exit_code == 2
    assert expected in result.stderr
    assert result.stderr.count("\n") == 1, "one line"
    assert "Traceback" not in result.output


def test_missing_config_file_is_exit_2(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--config", "nope.yaml", "config", "show"])
    assert result.exit_code == 2
    assert "config file nope.yaml not found" in result.stderr


def test_unknown_environment_lists_the_known_ones(runner: CliRunner) -> None:
    write(Path("raasctl.yaml"), WORKDAY_ENV)
    result = runner.invoke(main, ["--env", "prod", "config", "show"])
    assert result.exit_code == 2
    assert "unknown environment 'prod' (known: local, work-uat)" in result.stderr


def test_example_config_is_valid(runner: CliRunner) -> None:
    example = Path(__file__).resolve().parent.parent / "raasctl.example.yaml"
    result = runner.invoke(main, ["--config", str(example), "config", "validate", "--all-envs"])
    assert result.exit_code == 0, result.stderr
    result = runner.invoke(
        main, ["--config", str(example), "--env", "prod", "config", "show", "--format", "json"]
    )
    data = json.loads(result.stdout)
    assert data["environment"]["protected"] is True
    assert data["environment"]["deployed"] is True


SECRET = "pa55-word-never-shown"


def test_secrets_are_never_printed(runner: CliRunner) -> None:
    write(Path("raasctl.yaml"), WORKDAY_ENV)
    env = {"WORKDAY_USER": "isu_accounting", "WORKDAY_PASSWORD": SECRET}
    show = runner.invoke(main, ["--env", "work-uat", "config", "show", "--format", "json"], env=env)
    assert show.exit_code == 0
    auth = json.loads(show.stdout)["environment"]["source"]["auth"]
    assert auth["password"] == "<secret env:WORKDAY_PASSWORD>"
    with mock_aws():
        boto3.client("ssm", region_name="us-east-1").put_parameter(
            Name="/accounting/callback-token", Value="tok-" + SECRET, Type="SecureString"
        )
        checked = runner.invoke(
            main,
            [
                "--env",
                "work-uat",
                "-v",
                "config",
                "validate",
                "--resolve-secrets",
                "--format",
                "json",
            ],
            env=env,
        )
    assert checked.exit_code == 0, checked.stderr
    for result in (show, checked):
        assert SECRET not in result.stdout
        assert SECRET not in result.stderr


def test_unset_env_reference_names_the_variable(runner: CliRunner) -> None:
    write(Path("raasctl.yaml"), WORKDAY_ENV)
    with mock_aws():
        boto3.client("ssm", region_name="us-east-1").put_parameter(
            Name="/accounting/callback-token", Value="x" * 12, Type="SecureString"
        )
        result = runner.invoke(
            main,
            ["--env", "work-uat", "config", "validate", "--resolve-secrets"],
            env={"WORKDAY_USER": "isu"},
        )
    assert result.exit_code == 2
    assert (
        "environments.work-uat.source.auth.password: environment variable WORKDAY_PASSWORD "
        "is not set" in result.stderr
    )


def test_ssm_reference_uses_the_environment_prefix(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(Path("raasctl.yaml"), WORKDAY_ENV)
    monkeypatch.setenv("SSM_ENVIRONMENT_PREFIX", "/work-uat")
    env = {"WORKDAY_USER": "isu", "WORKDAY_PASSWORD": SECRET}
    with mock_aws():
        ssm = boto3.client("ssm", region_name="us-east-1")
        args = ["--env", "work-uat", "config", "validate", "--resolve-secrets"]
        missing = runner.invoke(main, args, env=env)
        ssm.put_parameter(
            Name="/work-uat/accounting/callback-token", Value="prefixed-token", Type="SecureString"
        )
        found = runner.invoke(main, args, env=env)
    assert missing.exit_code == 2
    assert "SSM parameter /work-uat/accounting/callback-token not found" in missing.stderr
    assert found.exit_code == 0, found.stderr


def test_redaction_filter_covers_logs_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from raasctl.codes import InfoCode
    from raasctl.logs import configure, event
    from raasctl.redaction import register_secret

    configure(0, json_lines=True)
    register_secret(SECRET)
    event(InfoCode.RUN_STARTED, f"connecting with {SECRET}", detail=f"p={SECRET}")
    err = capsys.readouterr().err
    record = json.loads(err)
    assert SECRET not in err
    assert record["code"] == "RAAS_RUN_STARTED"
    assert record["detail"] == "p=***"


def test_schedule_keeps_paid_and_unpaid_30_minutes_apart(runner: CliRunner) -> None:
    result = runner.invoke(main, ["schedule", "show", "--format", "json", "--count", "4"])
    assert result.exit_code == 0
    rows = {row["cron"]: row for row in json.loads(result.stdout)}
    from datetime import datetime

    paid = [datetime.fromisoformat(t) for t in rows["clientBillPaidStatus"]["next_runs"]]
    unpaid = [datetime.fromisoformat(t) for t in rows["clientBillUnpaidStatus"]["next_runs"]]
    assert all(at.minute == 0 for at in paid)
    assert all(at.minute == 30 for at in unpaid)
    gaps = {abs((u - p).total_seconds()) for p in paid for u in unpaid}
    assert min(gaps) == 30 * 60


def test_validate_warns_when_two_crons_start_in_the_same_minute(runner: CliRunner) -> None:
    write(
        Path("raasctl.yaml"),
        "crons:\n  clientBillUnpaidStatus: {schedule: '0 */2 * * *'}\n",
    )
    result = runner.invoke(main, ["config", "validate", "--format", "json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert any("clientBillPaidStatus and clientBillUnpaidStatus" in w for w in data["warnings"])
    assert "RAAS_SCHEDULE_OVERLAP" in result.stderr


def test_schedule_time_zone_is_applied(runner: CliRunner) -> None:
    write(
        Path("raasctl.yaml"),
        "crons:\n  clientDepositUpdate: {schedule: '0 6 * * *', timezone: America/Los_Angeles}\n",
    )
    result = runner.invoke(main, ["schedule", "show", "--format", "json"])
    row = next(r for r in json.loads(result.stdout) if r["cron"] == "clientDepositUpdate")
    assert all(t.startswith(t[:11]) and t.endswith(("-08:00", "-07:00")) for t in row["next_runs"])
    assert all("T06:00:00" in t for t in row["next_runs"])


def test_crontab_lines_call_run_with_env_and_log_file(runner: CliRunner, tmp_path: Path) -> None:
    write(Path("raasctl.yaml"), WORKDAY_ENV)
    # A folder under the test's own tmp_path: the crontab now creates its log folder.
    log_dir = tmp_path / "var/log/r"
    result = runner.invoke(
        main, ["--env", "work-uat", "schedule", "crontab", "--log-dir", str(log_dir)]
    )
    assert result.exit_code == 0
    lines = [line for line in result.stdout.splitlines() if " run " in line]
    assert len(lines) == 4
    paid = next(line for line in lines if "clientBillPaidStatus" in line)
    assert paid.startswith("0 * * * * ")
    assert "--config" in paid and "run clientBillPaidStatus --env work-uat" in paid
    assert paid.endswith(f">> {log_dir}/clientBillPaidStatus.log 2>&1")


def test_version_and_module_entry_point() -> None:
    import subprocess
    import sys

    from raasctl import __version__

    out = subprocess.run(
        [sys.executable, "-m", "raasctl", "--version"], capture_output=True, text=True, check=True
    )
    assert __version__ in out.stdout


def test_state_create_table_on_dynamodb_and_embedded(runner: CliRunner) -> None:
    write(
        Path("raasctl.yaml"),
        "environments:\n  local: {}\n  uat: {state: {kind: dynamodb, table: raasctl-uat}}\n",
    )
    embedded = runner.invoke(main, ["state", "create-table", "--format", "json"])
    assert embedded.exit_code == 0
    assert json.loads(embedded.stdout)["kind"] == "sqlite"
    with mock_aws():
        args = ["--env", "uat", "state", "create-table", "--format", "json"]
        first = runner.invoke(main, args)
        again = runner.invoke(main, args)
        tables = boto3.client("dynamodb", region_name="us-east-1").list_tables()["TableNames"]
    assert first.exit_code == 0, first.stderr
    assert again.exit_code == 0, again.stderr
    assert json.loads(first.stdout)["table"] == "raasctl-uat"
    assert tables == ["raasctl-uat"]


def test_a_generated_crontab_line_runs_as_written(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSM_ENVIRONMENT_PREFIX", "/work-uat")
    result = runner.invoke(main, ["schedule", "crontab", "--format", "json"])
    lines = json.loads(result.stdout)["lines"]
    assert "SSM_ENVIRONMENT_PREFIX=/work-uat" in lines
    assert any(line.startswith("RAASCTL_STATE_DIR=") for line in lines)
    line = next(line for line in lines if " run clientBillPaidStatus " in line)
    command = line.split(" && ", 1)[1].split(" >> ")[0].split()
    args = command[command.index("run") :]
    monkeypatch.delenv("SSM_ENVIRONMENT_PREFIX")
    ran = runner.invoke(main, [*args, "--dry-run", "--format", "json"])
    assert ran.exit_code == 0, ran.stderr
    assert json.loads(ran.stdout)["cron"] == "clientBillPaidStatus"


def test_env_after_the_command_is_checked_too(runner: CliRunner) -> None:
    result = runner.invoke(main, ["schedule", "show", "--env", "nope"])
    assert result.exit_code == 2
    assert "unknown environment 'nope' (known: local)" in result.stderr


def test_runtime_secret_errors_name_the_field(runner: CliRunner) -> None:
    write(Path("raasctl.yaml"), WORKDAY_ENV)
    result = runner.invoke(main, ["--env", "work-uat", "run", "clientDepositUpdate"])
    assert result.exit_code == 2
    assert (
        "environments.work-uat.source.auth.username: environment variable WORKDAY_USER "
        "is not set" in result.stderr
    )


def test_failures_are_json_lines_when_logs_are(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--env", "nope", "config", "show"])
    (line,) = result.stderr.splitlines()
    record = json.loads(line)
    assert record["code"] == "RAAS_UNKNOWN_ENV"
    assert record["level"] == "error"
    assert record["exit_code"] == 2


def test_unreadable_config_and_state_folder_are_one_line_errors(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    Path("raasctl.yaml").write_bytes(b"\xff\xfe")
    result = runner.invoke(main, ["config", "show"])
    assert result.exit_code == 2
    assert "raasctl.yaml: not UTF-8 text" in result.stderr
    Path("raasctl.yaml").unlink()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("RAASCTL_STATE_DIR", str(blocker / "state"))
    result = runner.invoke(main, ["queue", "status"])
    assert result.exit_code == 2
    assert "(RAASCTL_STATE_DIR)" in result.stderr
    assert "Traceback" not in result.output


def test_a_misspelt_command_is_answered_with_the_close_ones(runner: CliRunner) -> None:
    result = runner.invoke(main, ["wroker"])

    assert result.exit_code == 2
    assert "No such command 'wroker'" in result.output
    assert "'worker', 'workers'" in result.output


def test_a_command_loads_only_its_own_module() -> None:
    # A fresh interpreter: this one has loaded every command for other tests.
    probe = (
        "import sys\n"
        "from raasctl.cli import main\n"
        "try:\n"
        "    main(['worker', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('raasctl.cli.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )

    loaded = result.stdout.strip().splitlines()[-1]
    assert "raasctl.cli.worker_cmd" in loaded
    for other in ("access_cmd", "mock_cmd", "doctor_cmd", "runs_cmd", "state_cmd"):
        assert f"raasctl.cli.{other}" not in loaded


def test_a_worker_that_prints_json_loads_neither_rich_nor_prometheus(tmp_path: Path) -> None:
    # What a crontab'd worker pays at every start: no drawing library, no metrics exporter.
    probe = (
        "import sys\n"
        "from raasctl.cli import main\n"
        "try:\n"
        "    main(['-q', 'worker', '--until-empty', '--format', 'json'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m.split('.')[0] for m in sys.modules if m.startswith(('rich', 'prom'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
        env={**os.environ, "RAASCTL_STATE_DIR": str(tmp_path / "state")},
    )

    assert '"processed": 0' in result.stdout  # it ran, on an empty embedded queue
    assert result.stdout.strip().splitlines()[-1] == "[]"
