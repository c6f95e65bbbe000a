"""The worker registry and the global rate schedule: the store port on SQLite and DynamoDB
(moto), the limiter's pacing across limiters sharing a store, `raasctl workers`, `runs show`'s
worker count, `rate_limit_scope`, and the in-flight-elsewhere progress message."""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from click.testing import CliRunner
from fleet import max_in_window
from moto import mock_aws

from raasctl.cli import main
from raasctl.cli.worker_cmd import progress_detail
from raasctl.globalrate import GlobalRateLimiter
from raasctl.state.base import RunRecord
from raasctl.state.dynamodb import DynamoState, create_table
from raasctl.state.sqlite import SqliteState
from raasctl.state.workers import WorkerRecord, WorkerStore
from raasctl.worker.elsewhere import ElsewhereWatch
from raasctl.worker.results import WorkerStats
from raasctl.workers_registry import Presence, live_workers, serving

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WorkerStore]:
    if request.param == "sqlite":
        state = SqliteState(tmp_path / "state.db")
        yield state.workers()
        state.close()
        return
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        table = f"raasctl-test-{uuid.uuid4().hex[:8]}"
        create_table(client, table)
        yield DynamoState(client, table).workers()


def record(worker_id: str, *, refreshed: datetime = NOW, **fields: Any) -> WorkerRecord:
    values: dict[str, Any] = {
        "worker_id": worker_id,
        "env": "local",
        "host": "host-a",
        "pid": 4242,
        "crons": (),
        "started_at": NOW - timedelta(minutes=5),
        "refreshed_at": refreshed,
    }
    values.update(fields)
    return WorkerRecord(**values)


# ---------------------------------------------------------------- the store port


def test_a_record_is_written_listed_replaced_and_removed(store: WorkerStore) -> None:
    first = record("w1", crons=("clientDepositUpdate",), rate_scope="global", rate_limit=20.0)
    store.put_worker(first)
    store.put_worker(record("w2", env="other"))
    assert store.list_workers("local") == [first]
    refreshed = record("w1", refreshed=NOW + timedelta(seconds=10), processed=120, per_second=12.5)
    store.put_worker(refreshed)
    assert store.list_workers("local") == [refreshed]
    store.remove_worker("local", "w1")
    store.remove_worker("local", "never-there")
    assert store.list_workers("local") == []
    assert [r.worker_id for r in store.list_workers("other")] == ["w2"]


def test_leases_never_share_a_slot_and_start_no_sooner_than_now(store: WorkerStore) -> None:
    interval = 0.05
    first = store.lease_slots("local", 10, interval, 1000.0)
    assert first.first_s == pytest.approx(1000.0)
    # Asked at the same moment: the next lease starts where the first ends.
    second = store.lease_slots("local", 4, interval, 1000.0)
    assert second.first_s == pytest.approx(1000.5)
    # Asked after the schedule fell behind: from now, not from the old end.
    later = store.lease_slots("local", 4, interval, 2000.0)
    assert later.first_s == pytest.approx(2000.0)
    assert later.requests >= 1
    # Another environment has its own schedule.
    assert store.lease_slots("other", 4, interval, 1000.0).first_s == pytest.approx(1000.0)


def test_concurrent_leases_tile_the_schedule(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "state.db")
    store = state.workers()
    with ThreadPoolExecutor(8) as pool:
        leases = list(pool.map(lambda _: store.lease_slots("local", 5, 0.1, 500.0), range(40)))
    spans = sorted(
        (lease.first_s, lease.first_s + lease.count * lease.interval_s) for lease in leases
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start == pytest.approx(end)  # no overlap, no gap
    state.close()


# ---------------------------------------------------------------- the limiter


def test_limiters_sharing_a_schedule_start_at_the_one_rate(tmp_path: Path) -> None:
    """Three limiters (three workers) with four threads each, all wanting more than the
    rate: together they keep to it, spaced so that no second holds more than rate + 1."""
    rate, seconds = 40.0, 2.0
    state = SqliteState(tmp_path / "state.db")
    limiters = [GlobalRateLimiter(state.workers(), "local", rate) for _ in range(3)]
    starts: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def slot(limiter: GlobalRateLimiter) -> None:
        while time.monotonic() < deadline:
            limiter.begin()
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=slot, args=(lim,)) for lim in limiters for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    state.close()
    starts.sort()
    assert max_in_window(starts) <= math.ceil(rate) + 1
    assert len(starts) >= 0.9 * rate * seconds
    assert all(limiter.stats().starts > 0 for limiter in limiters)
    requests = sum(limiter.stats().requests for limiter in limiters)
    assert requests / len(starts) <= 0.2


def test_tokens_back_leased_slots_and_an_empty_receive_probes_without_one(
    tmp_path: Path,
) -> None:
    state = SqliteState(tmp_path / "state.db")
    limiter = GlobalRateLimiter(state.workers(), "local", 10.0)
    granted = limiter.acquire(10)
    assert 1 <= granted <= 10
    assert limiter.stats().leases >= 1  # and perhaps the next, ahead of need
    limiter.give_back(granted)  # the receive came back empty
    leases = limiter.stats().leases
    assert [limiter.acquire(10) for _ in range(3)] == [1, 1, 1]  # probes: no slot, no lease
    assert limiter.stats().leases == leases
    assert limiter.begin() is False  # a message came: its start waits for a leased slot
    stop = threading.Event()
    stop.set()
    assert limiter.acquire(5, stop=stop) in (0, 1, 2, 3, 4, 5)
    state.close()


# ---------------------------------------------------------------- the registry


def test_presence_registers_refreshes_and_removes_itself(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "state.db")
    store = state.workers()
    clock = [100.0]
    processed = [0]
    presence = Presence(
        store,
        "local",
        crons=["clientDepositUpdate"],
        rate_scope="global",
        rate_limit=20.0,
        processed=lambda: processed[0],
        clock=lambda: clock[0],
        now=lambda: NOW + timedelta(seconds=clock[0] - 100.0),
        refresh_s=10.0,
    )
    presence.register()
    (registered,) = store.list_workers("local")
    assert registered.crons == ("clientDepositUpdate",) and registered.processed == 0
    processed[0], clock[0] = 50, 105.0
    presence.tick(clock[0])  # not due yet
    assert store.list_workers("local")[0].processed == 0
    processed[0], clock[0] = 100, 110.0
    presence.tick(clock[0])
    (refreshed,) = store.list_workers("local")
    assert refreshed.processed == 100 and refreshed.per_second == pytest.approx(10.0)
    assert refreshed.refreshed_at == NOW + timedelta(seconds=10)
    # Three missed refreshes make it stale; within them it is live.
    assert live_workers(store, "local", refreshed.refreshed_at + timedelta(seconds=30))
    assert not live_workers(store, "local", refreshed.refreshed_at + timedelta(seconds=31))
    presence.remove()
    assert store.list_workers("local") == []
    state.close()


def test_serving_counts_live_workers_that_take_the_runs_cron() -> None:
    run = RunRecord(
        run_id="r1", cron="clientDepositUpdate", env="local", mock=False, created_at=NOW
    )
    workers = [
        record("all"),
        record("deposits", crons=("clientDepositUpdate",)),
        record("bills", crons=("clientBillPaidStatus",)),
        record("elsewhere", env="prod"),
    ]
    assert serving(workers, run) == 2
    assert serving(workers, RunRecord(**{**run.__dict__, "finished_at": NOW})) == 0


# ---------------------------------------------------------------- the command line


def config_file(tmp_path: Path, **env: Any) -> Path:
    db = tmp_path / "local.db"
    path = tmp_path / "raasctl.yaml"
    environment = {
        "queue": {"kind": "sqlite", "path": str(db)},
        "state": {"kind": "sqlite", "path": str(db)},
        "sink": {"kind": "sqlite", "path": str(db)},
        **env,
    }
    path.write_text(
        yaml.safe_dump({"default_env": "local", "environments": {"local": environment}})
    )
    return path


def test_workers_lists_the_live_ones_as_a_table_and_as_json(
    tmp_path: Path, runner: CliRunner
) -> None:
    config = config_file(tmp_path)
    state = SqliteState(tmp_path / "local.db")
    now = datetime.now(UTC)
    store = state.workers()
    store.put_worker(
        record(
            "a1b2c3",
            refreshed=now,
            crons=("clientDepositUpdate",),
            processed=1234,
            per_second=19.5,
            rate_scope="global",
            rate_limit=20.0,
        )
    )
    store.put_worker(record("dead01", refreshed=now - timedelta(seconds=31)))
    state.close()
    result = runner.invoke(main, ["--config", str(config), "workers", "--format", "json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["worker_id"] == "a1b2c3" and row["host"] == "host-a" and row["pid"] == 4242
    assert row["crons"] == ["clientDepositUpdate"] and row["processed"] == 1234
    assert row["per_second"] == 19.5 and row["rate_limit"] == 20.0
    assert row["rate_scope"] == "global"
    table = runner.invoke(main, ["--config", str(config), "workers"], env={"COLUMNS": "200"})
    assert table.exit_code == 0
    assert "a1b2c3" in table.stdout and "20/s global" in table.stdout
    assert "dead01" not in table.stdout


def test_workers_without_a_state_file_lists_none_and_creates_nothing(
    tmp_path: Path, runner: CliRunner
) -> None:
    config = config_file(tmp_path)
    result = runner.invoke(main, ["--config", str(config), "workers", "--format", "json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []
    assert "RAAS_STATE_FILE_MISSING" in result.stderr
    assert not (tmp_path / "local.db").exists()


def test_runs_show_says_how_many_workers_serve_the_run(tmp_path: Path, runner: CliRunner) -> None:
    config = config_file(tmp_path)
    state = SqliteState(tmp_path / "local.db")
    state.create_run(
        RunRecord(run_id="r1", cron="clientDepositUpdate", env="local", mock=False, created_at=NOW)
    )
    now = datetime.now(UTC)
    state.workers().put_worker(record("w1", refreshed=now))
    state.workers().put_worker(record("w2", refreshed=now, crons=("clientBillPaidStatus",)))
    state.close()
    result = runner.invoke(
        main, ["--config", str(config), "runs", "show", "r1", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["workers"] == 1


def test_rate_limit_scope_is_validated(tmp_path: Path, runner: CliRunner) -> None:
    config = config_file(tmp_path, rate_limit_scope="cluster")
    result = runner.invoke(main, ["--config", str(config), "config", "validate"])
    assert result.exit_code == 2
    assert "rate_limit_scope" in result.stderr


def test_worker_rate_scope_option_takes_process_or_global(runner: CliRunner) -> None:
    result = runner.invoke(main, ["worker", "--rate-scope", "fleet"])
    assert result.exit_code == 2
    assert "--rate-scope" in result.stderr


# ---------------------------------------------------------------- in flight elsewhere


def test_the_waiting_message_counts_down_from_the_visibility_timeout() -> None:
    clock = [0.0]
    watch = ElsewhereWatch(60, lambda: clock[0])
    watch.saw(in_flight=10, held=0)
    clock[0] = 18.0
    watch.saw(in_flight=10, held=0)
    waiting = watch.current()
    assert waiting is not None and waiting.count == 10
    assert waiting.visible_in_s == pytest.approx(42.0)
    stats = WorkerStats(
        processed=5,
        succeeded=5,
        failed=0,
        dead_lettered=0,
        retries=0,
        in_flight=0,
        elapsed_s=30.0,
        per_hour=600.0,
        runs_done=49990,
        runs_total=50000,
        eta_s=0.0,
        in_flight_elsewhere=waiting.count,
        visible_again_s=waiting.visible_in_s,
    )
    assert progress_detail(stats).startswith("10 in flight elsewhere, visible again in about 42 s")
    # Messages this worker holds itself are not elsewhere; a receive that brought some ends it.
    watch.saw(in_flight=10, held=10)
    assert watch.current() is None
    watch.saw(in_flight=3, held=0)
    watch.clear()
    assert watch.current() is None
