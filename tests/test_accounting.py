"""Every run ends, with counts that match what happened (issue: exact accounting), on the
embedded default: redrives, purges, re-runs, and an older version across a redrive. The
paths that need a killed process are in tests/test_accounting_crashes.py.

Every test also checks exactly-once at the accounting service: no key applied twice."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from accounting_service import AccountingService
from click.testing import CliRunner
from support import moto_deployment

from raasctl.cli import main
from raasctl.config import PACKAGED_FIXTURES

DEPOSITS = "clientDepositUpdate"
FIXTURE = PACKAGED_FIXTURES / "raas" / f"{DEPOSITS}.json"
ENTRIES = len(json.loads(FIXTURE.read_text())["Report_Entry"])


def deposit_ids() -> list[str]:
    return [entry["Deposit_ID"] for entry in json.loads(FIXTURE.read_text())["Report_Entry"]]


@pytest.fixture
def service() -> Iterator[AccountingService]:
    with AccountingService() as running:
        yield running


Configure = Callable[..., None]


def write_env(env: dict[str, Any]) -> None:
    Path("raasctl.yaml").write_text(
        yaml.safe_dump({"default_env": "acct", "environments": {"acct": env}}), encoding="utf-8"
    )


def sink(service: AccountingService) -> dict[str, Any]:
    return {"kind": "http", "base_url": service.base_url, "token": "env:CALLBACK_TOKEN"}


def source(folder: Path | None) -> dict[str, Any]:
    return {"kind": "fixtures", "path": str((folder or FIXTURE.parent).resolve())}


@pytest.fixture(params=["embedded", "sqs+dynamodb"])
def configure(request: pytest.FixtureRequest) -> Iterator[Configure]:
    """Writes the environment's config: the embedded default, or SQS and DynamoDB on moto's
    server (in its own thread, on 127.0.0.1), both with a DLQ after 2 receives."""
    if request.param == "embedded":

        def embedded(service: AccountingService, folder: Path | None = None) -> None:
            write_env(
                {
                    "source": source(folder),
                    "queue": {"kind": "sqlite", "max_receive_count": 2, "visibility_timeout_s": 30},
                    "sink": sink(service),
                }
            )

        yield embedded
        return
    with moto_deployment("acct", queue={"wait_time_s": 0}) as (aws, _, _):

        def deployed(service: AccountingService, folder: Path | None = None) -> None:
            write_env({**aws, "source": source(folder), "sink": sink(service)})

        yield deployed


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBACK_TOKEN", "acct-callback-token-1")


def cli(runner: CliRunner, *args: str) -> Any:
    result = runner.invoke(main, ["--format", "json", *args])
    assert "Traceback" not in result.stderr, result.stderr
    return result


def run(runner: CliRunner) -> dict[str, Any]:
    result = cli(runner, "run", DEPOSITS)
    assert result.exit_code in (0, 3), result.stderr
    return dict(json.loads(result.stdout))


def drain(runner: CliRunner) -> dict[str, Any]:
    # Backoff 0: a retry is visible again at once, so receive counts run out in a test's time.
    result = cli(runner, "worker", "--until-empty", "--backoff-base", "0", "--backoff-cap", "0")
    assert result.exit_code in (0, 3), result.stderr
    return dict(json.loads(result.stdout))


def show(runner: CliRunner, run_id: str) -> dict[str, Any]:
    result = cli(runner, "runs", "show", run_id)
    assert result.exit_code == 0, result.stderr
    return dict(json.loads(result.stdout))


def counts(view: dict[str, Any]) -> tuple[Any, ...]:
    names = ("status", "total", "succeeded", "failed", "dead_lettered", "superseded", "purged")
    return tuple(view[name] for name in names)


def test_a_redrive_moves_failed_entries_to_succeeded_instead_of_counting_them_again(
    runner: CliRunner, service: AccountingService, configure: Configure
) -> None:
    configure(service)
    refused, unavailable = deposit_ids()[:2]
    service.refuse.add(refused)  # 400: to the DLQ at once
    service.unavailable.add(unavailable)  # 503 until its receives run out
    run_id = run(runner)["run_id"]

    drain(runner)
    assert counts(show(runner, run_id)) == ("failed", ENTRIES, ENTRIES - 2, 1, 1, 0, 0)

    service.heal()
    assert cli(runner, "queue", "redrive", "--yes").exit_code == 0
    drain(runner)

    assert counts(show(runner, run_id)) == ("complete", ENTRIES, ENTRIES, 0, 0, 0, 0)
    assert len(service.applied) == ENTRIES and max(service.applied.values()) == 1


def test_a_purge_ends_the_purged_runs_purged(
    runner: CliRunner, service: AccountingService, configure: Configure
) -> None:
    configure(service)
    mock = cli(runner, "enqueue-mock", DEPOSITS, "--copies", "20")
    assert mock.exit_code == 0, mock.stderr
    run_id = json.loads(mock.stdout)["run_id"]

    assert cli(runner, "queue", "purge", "--yes").exit_code == 0
    drain(runner)  # finds the queue empty, and reconciles

    view = show(runner, run_id)
    assert counts(view) == ("purged", 20 * 10, 0, 0, 0, 0, 20 * 10)
    listed = json.loads(cli(runner, "runs", "list").stdout)
    assert [row["status"] for row in listed if row["run_id"] == run_id] == ["purged"]
    assert not service.applied


def test_a_re_run_before_the_drain_counts_its_duplicates_and_ends_complete_with_total_0(
    runner: CliRunner, service: AccountingService, configure: Configure
) -> None:
    configure(service)
    first = run(runner)
    second = run(runner)

    assert (second["enqueued"], second["duplicates"]) == (0, ENTRIES)
    assert counts(show(runner, second["run_id"])) == ("complete", 0, 0, 0, 0, 0, 0)
    drain(runner)
    assert counts(show(runner, first["run_id"])) == ("complete", ENTRIES, ENTRIES, 0, 0, 0, 0)
    assert len(service.applied) == ENTRIES and max(service.applied.values()) == 1


def test_after_a_purge_a_re_run_enqueues_the_purged_entries_again(
    runner: CliRunner, service: AccountingService, configure: Configure
) -> None:
    configure(service)
    first = run(runner)
    assert cli(runner, "queue", "purge", "--yes").exit_code == 0

    second = run(runner)
    assert (second["enqueued"], second["duplicates"]) == (ENTRIES, 0)
    drain(runner)

    assert counts(show(runner, first["run_id"]))[0] == "purged"
    assert counts(show(runner, second["run_id"])) == ("complete", ENTRIES, ENTRIES, 0, 0, 0, 0)
    assert len(service.applied) == ENTRIES and max(service.applied.values()) == 1


def test_an_older_version_redriven_after_a_newer_one_is_superseded_not_applied(
    runner: CliRunner, service: AccountingService, tmp_path: Path, configure: Configure
) -> None:
    report = json.loads(FIXTURE.read_text())
    deposit = dict(report["Report_Entry"][0], Deposit_Amount="100.00")
    folder = tmp_path / "raas"
    folder.mkdir()
    path = folder / f"{DEPOSITS}.json"
    configure(service, folder)
    record = deposit["Deposit_ID"]

    # Hour 1: D-1 = 100.00 fails until dead-lettered.
    path.write_text(json.dumps({"Report_Entry": [deposit]}))
    service.unavailable.add(record)
    hour_1 = run(runner)["run_id"]
    drain(runner)
    assert counts(show(runner, hour_1)) == ("failed", 1, 0, 1, 0, 0, 0)

    # Hour 2: D-1 = 200.00 is applied.
    service.heal()
    path.write_text(json.dumps({"Report_Entry": [dict(deposit, Deposit_Amount="200.00")]}))
    hour_2 = run(runner)["run_id"]
    drain(runner)
    assert service.amounts[record] == "200.00"

    # The redrive brings hour 1's 100.00 back: it is older than what is applied.
    assert cli(runner, "queue", "redrive", "--yes").exit_code == 0
    drained = cli(runner, "worker", "--until-empty")
    assert drained.exit_code == 0, drained.stderr

    assert service.amounts[record] == "200.00"
    assert "RAAS_ENTRY_SUPERSEDED" in drained.stderr
    assert counts(show(runner, hour_1)) == ("complete", 1, 0, 0, 0, 1, 0)
    assert counts(show(runner, hour_2)) == ("complete", 1, 1, 0, 0, 0, 0)
    assert max(service.applied.values()) == 1


def test_runs_reconcile_waits_for_an_empty_queue_then_closes_the_purged_runs(
    runner: CliRunner, service: AccountingService, configure: Configure
) -> None:
    configure(service)
    run_id = run(runner)["run_id"]

    refused = cli(runner, "runs", "reconcile")
    assert refused.exit_code == 1 and "RAAS_QUEUE_NOT_EMPTY" in refused.stderr

    assert cli(runner, "queue", "purge", "--yes").exit_code == 0
    reconciled = cli(runner, "runs", "reconcile")

    assert reconciled.exit_code == 0, reconciled.stderr
    [row] = json.loads(reconciled.stdout)["reconciled"]
    assert (row["run_id"], row["status"], row["purged"]) == (run_id, "purged", ENTRIES)


def test_runs_unlock_frees_a_lock_whose_holder_is_gone_and_refuses_a_live_one(
    runner: CliRunner, service: AccountingService, configure: Configure
) -> None:
    from datetime import UTC, datetime

    from raasctl.config import load_config
    from raasctl.leases import this_process
    from raasctl.runs import run_lock
    from raasctl.runtime import Runtime

    configure(service)
    config = load_config().config
    name, env = config.environment(None)
    state = Runtime(config, name, env).state()
    now = datetime.now(UTC)
    lock = run_lock(name, DEPOSITS)
    state.acquire_lock(lock, "run-live", 60, now, holder=this_process())

    refused = cli(runner, "runs", "unlock", DEPOSITS)
    assert refused.exit_code == 1 and "RAAS_RUN_LOCKED" in refused.stderr
    assert state.lock_info(lock) is not None
    forced = cli(runner, "runs", "unlock", DEPOSITS, "--force")
    assert forced.exit_code == 0 and json.loads(forced.stdout)["owner"] == "run-live"

    state.acquire_lock(lock, "run-dead", 60, now, holder="this-host-is-elsewhere:1")
    freed = cli(runner, "runs", "unlock", DEPOSITS)
    assert freed.exit_code == 0 and json.loads(freed.stdout)["released"] is True
    assert state.lock_info(lock) is None
    state.close()


# ---------------------------------------------------------------- enqueue claims (SQS)


def test_on_sqs_a_re_run_inside_the_window_counts_its_duplicates_itself(
    runner: CliRunner, service: AccountingService
) -> None:
    """SQS drops a duplicate silently within its deduplication window: without claims the
    re-run's total would count messages that never arrive, and it would never complete."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="raas-acct.fifo", Attributes={"FifoQueue": "true"})[
            "QueueUrl"
        ]
        env = {
            "aws": {"region": "us-east-1"},
            "source": {"kind": "fixtures", "path": str(FIXTURE.parent)},
            "queue": {"kind": "sqs", "url": url, "wait_time_s": 0},
            "sink": {"kind": "http", "base_url": service.base_url, "token": "env:CALLBACK_TOKEN"},
        }
        Path("raasctl.yaml").write_text(
            yaml.safe_dump({"default_env": "acct", "environments": {"acct": env}})
        )
        first = run(runner)
        second = run(runner)

        assert (second["enqueued"], second["duplicates"]) == (0, ENTRIES)
        assert counts(show(runner, second["run_id"])) == ("complete", 0, 0, 0, 0, 0, 0)
        drain(runner)
        assert counts(show(runner, first["run_id"])) == ("complete", ENTRIES, ENTRIES, 0, 0, 0, 0)
    assert len(service.applied) == ENTRIES and max(service.applied.values()) == 1


def test_a_claim_stands_only_while_its_run_is_live_recent_and_not_purged(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from raasctl.claims import ClaimBook
    from raasctl.envelope import dedup_id
    from raasctl.producer import Pending
    from raasctl.queues.base import OutgoingMessage
    from raasctl.state.base import RunRecord
    from raasctl.state.sqlite import SqliteState

    state = SqliteState(tmp_path / "state.db")
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def make_run(run_id: str, *, finished_enqueue: bool) -> None:
        state.create_run(RunRecord(run_id, DEPOSITS, "t", False, now - timedelta(minutes=1)))
        if finished_enqueue:
            state.finish_enqueue(run_id, entries=1, enqueued=1, invalid=0, duplicates=0)

    def pending(key: str) -> Pending:
        return Pending(key, OutgoingMessage("{}", group_id="g", dedup_id=dedup_id(key)))

    make_run("live", finished_enqueue=True)
    make_run("dead", finished_enqueue=False)  # enqueueing, and no lease: its producer died
    state.put_claims("live", ["k-live", "k-old"], now - timedelta(seconds=30))
    state.put_claims("live", ["k-old"], now - timedelta(seconds=301))
    state.put_claims("dead", ["k-dead"], now - timedelta(seconds=30))
    state.put_claims("dead", ["k-dead-sent"], now - timedelta(seconds=30), sent=True)

    book = ClaimBook(state, "new", purged_at=None, now=lambda: now)
    keys = ("k-live", "k-old", "k-dead", "k-dead-sent", "k-new")
    send, duplicates = book.sort([pending(k) for k in keys])

    # k-live's claim stands (its run finished enqueueing), and so does k-dead-sent's: the
    # dead producer's send was confirmed, so its message is in the queue.
    assert duplicates == 2
    by_key = {item.key: item.message.dedup_id for item in send}
    assert set(by_key) == {"k-old", "k-dead", "k-new"}
    assert by_key["k-dead"] == dedup_id("k-dead#new")  # taken over: a new id
    assert by_key["k-new"] == dedup_id("k-new")
    assert {k: c.run_id for k, c in state.claims(list(by_key)).items()} == dict.fromkeys(
        by_key, "new"
    )
    assert not any(claim.sent for claim in state.claims(list(by_key)).values())
    book.confirm([by_key["k-new"]])  # the queue took it
    assert state.claims(["k-new"])["k-new"].sent

    after_purge = ClaimBook(state, "newer", purged_at=now, now=lambda: now + timedelta(seconds=1))
    send, duplicates = after_purge.sort([pending("k-new")])
    assert duplicates == 0 and [item.key for item in send] == ["k-new"]
    state.close()


def test_state_prune_removes_the_outcomes_of_the_runs_it_prunes(runner: CliRunner) -> None:
    from datetime import UTC, datetime, timedelta

    from raasctl.config import load_config
    from raasctl.runtime import Runtime
    from raasctl.state.base import EntryStatus, RunRecord

    config = load_config().config
    name, env = config.environment(None)
    state = Runtime(config, name, env).state()
    long_ago = datetime.now(UTC) - timedelta(days=9)
    for run_id in ("old", "open"):
        state.create_run(RunRecord(run_id, DEPOSITS, name, False, long_ago))
        state.record_outcomes(run_id, {"k1": EntryStatus.SUCCEEDED}, long_ago)
    state.mark_finished("old", long_ago)

    pruned = cli(runner, "state", "prune", "--older-than", "7d")

    assert pruned.exit_code == 0, pruned.stderr
    assert state.get_run("old") is None and state.outcome("old", "k1") is None
    assert state.outcome("open", "k1") is EntryStatus.SUCCEEDED  # not finished: kept
    state.close()
