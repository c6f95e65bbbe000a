"""`state prune` (embedded and DynamoDB) and the space `queue purge` gives back."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws
from test_worker_processes import deposit_payload

from raasctl import prune as prune_module
from raasctl.cli import main
from raasctl.envelope import Envelope
from raasctl.queues.sqlite import SqliteQueue
from raasctl.state.base import RunRecord
from raasctl.state.dynamodb import DynamoState, create_table
from raasctl.state.sqlite import SqliteState

NOW = datetime.now(UTC)


def add_run(state: SqliteState | DynamoState, run_id: str, age: timedelta | None) -> None:
    """A run created 30 days ago, finished `age` ago (None: still running)."""
    state.create_run(
        RunRecord(
            run_id=run_id,
            cron="clientDepositUpdate",
            env="local",
            mock=False,
            created_at=NOW - timedelta(days=30),
        )
    )
    state.finish_enqueue(run_id, entries=1, enqueued=1, invalid=0, duplicates=0)
    if age is not None:
        assert state.mark_finished(run_id, NOW - age)


def db() -> Path:
    return Path(".raasctl/local.db")


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def prune_json(runner: CliRunner, *args: str) -> dict[str, object]:
    result = runner.invoke(main, ["state", "prune", *args, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def seed_embedded() -> None:
    state = SqliteState(db())
    add_run(state, "old-finished", timedelta(days=10))
    add_run(state, "new-finished", timedelta(days=1))
    add_run(state, "old-running", None)
    assert state.record_applied("clientDepositUpdate:D-1:abc", "old-finished", NOW)
    state.close()


def test_prune_deletes_only_finished_runs_older_than_the_cutoff(runner: CliRunner) -> None:
    seed_embedded()
    result = prune_json(runner)  # default 7d
    assert result["runs"] == 1
    remaining = {row[0] for row in rows(db(), "SELECT run_id FROM state_runs")}
    assert remaining == {"new-finished", "old-running"}
    # idempotency records outlive their runs: they keep an entry from being applied twice
    assert rows(db(), "SELECT run_id FROM state_applied") == [("old-finished",)]
    assert result["files"] == [str(db().absolute())]
    again = prune_json(runner, "--older-than", "12h")
    assert again["runs"] == 1
    assert {row[0] for row in rows(db(), "SELECT run_id FROM state_runs")} == {"old-running"}


def test_prune_deletes_per_entry_rows_of_pruned_runs_with_them(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extension point for a per-entry table keyed by run_id."""
    seed_embedded()
    conn = sqlite3.connect(db())
    conn.execute("CREATE TABLE state_entry_outcomes (run_id TEXT, key TEXT)")
    conn.executemany(
        "INSERT INTO state_entry_outcomes VALUES (?, ?)",
        [("old-finished", "a"), ("old-finished", "b"), ("new-finished", "c")],
    )
    conn.commit()
    conn.close()
    monkeypatch.setattr(prune_module, "RUN_ENTRY_TABLES", ("state_entry_outcomes",))
    result = prune_json(runner)
    assert (result["runs"], result["entry_rows"]) == (1, 2)
    assert rows(db(), "SELECT key FROM state_entry_outcomes") == [("c",)]


def test_prune_removes_expired_dedup_ids_keeps_live_ones_and_the_ledger(
    runner: CliRunner,
) -> None:
    def send(queue: SqliteQueue, ids: range) -> None:
        for n in ids:
            envelope = Envelope.new(
                cron="clientDepositUpdate", run_id="r", key=f"k{n}", payload=deposit_payload(n)
            )
            assert not queue.send_batch([envelope.to_message(f"D-{n}")]).failed

    current = SqliteQueue(db())
    send(current, range(5, 8))
    current.close()
    run = runner.invoke(main, ["worker", "--until-empty", "--format", "json"])
    assert run.exit_code == 0, run.stderr
    # Sent last, so no later send's own sweep has removed them: ids that expired long ago.
    hour_ago = SqliteQueue(db(), clock=lambda: time.time() - 3600)
    send(hour_ago, range(5))
    hour_ago.purge()
    hour_ago.close()
    ledger = rows(db(), "SELECT entry_key FROM ledger_applications ORDER BY entry_key")
    assert len(ledger) == 3

    result = prune_json(runner)
    assert result["dedup_rows"] == 5
    assert ledger == rows(db(), "SELECT entry_key FROM ledger_applications ORDER BY entry_key")
    # the live ids still deduplicate: sending them again adds nothing
    queue = SqliteQueue(db())
    envelope = Envelope.new(
        cron="clientDepositUpdate", run_id="r", key="k6", payload=deposit_payload(6)
    )
    assert queue.send_batch([envelope.to_message("D-6")]).duplicates
    queue.close()


def test_purge_and_prune_give_the_space_back(runner: CliRunner) -> None:
    mock = runner.invoke(main, ["enqueue-mock", "clientDepositUpdate", "--copies", "500"])
    assert mock.exit_code == 0, mock.stderr
    before = db().stat().st_size
    purged = runner.invoke(main, ["queue", "purge", "--yes", "--format", "json"])
    assert purged.exit_code == 0, purged.stderr
    shown = json.loads(purged.stdout)
    after = db().stat().st_size
    assert shown["purged"] == 5000
    assert after < before / 2
    assert shown["freed_bytes"] >= (before - after) * 0.9
    result = prune_json(runner)
    assert result["bytes_before"] >= result["bytes_after"]  # type: ignore[operator]
    assert result["freed_bytes"] == result["bytes_before"] - result["bytes_after"]  # type: ignore[operator]


def test_an_empty_purge_frees_nothing(runner: CliRunner) -> None:
    purged = runner.invoke(main, ["queue", "purge", "--yes", "--format", "json"])
    assert json.loads(purged.stdout)["freed_bytes"] == 0


def test_prune_without_a_state_file_prunes_nothing(runner: CliRunner) -> None:
    result = prune_json(runner)
    assert (result["runs"], result["dedup_rows"], result["files"]) == (0, 0, [])
    assert not db().exists()


def test_a_bad_duration_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(main, ["state", "prune", "--older-than", "a week"])
    assert result.exit_code == 2
    assert "--older-than" in result.stderr and "'a week' is not a duration" in result.stderr


def test_prune_on_dynamodb_deletes_finished_runs_in_batches(runner: CliRunner) -> None:
    Path("raasctl.yaml").write_text(
        "default_env: uat\nenvironments:\n  uat: {state: {kind: dynamodb, table: raasctl-uat}}\n"
    )
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, "raasctl-uat")
        state = DynamoState(client, "raasctl-uat")
        for n in range(60):
            add_run(state, f"old-{n:02d}", timedelta(days=8))
        add_run(state, "recent", timedelta(hours=1))
        add_run(state, "running", None)
        result = runner.invoke(main, ["--env", "uat", "state", "prune", "--format", "json"])
        assert result.exit_code == 0, result.stderr
        left = {run.run_id for run in state.list_runs(limit=100)}
        assert state.get_run("old-00") is None and state.get_run("recent") is not None
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["kind"], shown["runs"]) == ("dynamodb", 60)
    assert left == {"recent", "running"}


def test_prune_on_a_missing_dynamodb_table_is_one_line(runner: CliRunner) -> None:
    Path("raasctl.yaml").write_text(
        "default_env: uat\nenvironments:\n  uat: {state: {kind: dynamodb, table: raasctl-nope}}\n"
    )
    with mock_aws():
        result = runner.invoke(main, ["--env", "uat", "state", "prune"])
    assert result.exit_code == 1
    assert "RAAS_STATE_NOT_FOUND" in result.stderr
    assert "raasctl-nope" in result.stderr and "Traceback" not in result.stderr
