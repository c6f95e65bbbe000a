"""Every run ends with counts that match what happened, also when processes are SIGKILLed:
on the last receive while the call is in flight, at random points of a drain, and in the
middle of an enqueue. `python -m raasctl` subprocesses on the embedded default."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from accounting_service import AccountingService
from callback_server import CallbackServer
from support import moto_deployment

from raasctl.config import PACKAGED_FIXTURES

DEPOSITS = "clientDepositUpdate"


def write_config(env: dict[str, Any]) -> Path:
    path = Path("raasctl.yaml").resolve()
    path.write_text(yaml.safe_dump({"default_env": "crash", "environments": {"crash": env}}))
    return path


def process_env(token: str) -> dict[str, str]:
    env = dict(os.environ, CALLBACK_TOKEN=token)
    env.pop("RAASCTL_ENV", None)
    return env


def raasctl(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raasctl", "--format", "json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "raasctl", "--format", "json", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


def show(run_id: str, env: dict[str, str]) -> dict[str, Any]:
    result = raasctl("runs", "show", run_id, env=env)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def wait_until(condition: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def test_a_worker_killed_twice_while_the_call_is_in_flight_leaves_the_run_failed_then_complete(
    tmp_path: Path,
) -> None:
    one = tmp_path / "raas"
    one.mkdir()
    fixture = json.loads((PACKAGED_FIXTURES / "raas" / "clientDepositUpdate.json").read_text())
    entry = fixture["Report_Entry"][0]
    (one / f"{DEPOSITS}.json").write_text(json.dumps({"Report_Entry": [entry]}))
    with AccountingService() as service:
        service.hang.add(entry["Deposit_ID"])  # applied, and the answer never comes
        write_config(
            {
                "source": {"kind": "fixtures", "path": str(one)},
                "queue": {"kind": "sqlite", "max_receive_count": 2, "visibility_timeout_s": 1},
                "sink": {
                    "kind": "http",
                    "base_url": service.base_url,
                    "token": "env:CALLBACK_TOKEN",
                },
            }
        )
        env = process_env("acct-token-crash-1")
        run_id = json.loads(raasctl("run", DEPOSITS, env=env).stdout)["run_id"]

        for attempt in (1, 2):  # the second receive is the last allowed one
            worker = start("worker", env=env)
            wait_until(lambda attempt=attempt: service.posts >= attempt)
            kill(worker)
            time.sleep(1.2)  # the message's 1 s visibility runs out

        drained = raasctl("worker", "--until-empty", env=env)
        assert drained.returncode in (0, 3), drained.stderr
        view = show(run_id, env)
        # Counted once, failed, as the DLQ (where the queue moved it) says.
        assert (view["status"], view["done"], view["failed"], view["succeeded"]) == (
            "failed",
            1,
            1,
            0,
        )
        status = json.loads(raasctl("queue", "status", env=env).stdout)
        assert status["dlq"]["visible"] == 1

        service.heal()
        assert raasctl("queue", "redrive", "--yes", env=env).returncode == 0
        assert raasctl("worker", "--until-empty", env=env).returncode == 0
        view = show(run_id, env)
        assert (view["status"], view["done"], view["failed"], view["succeeded"]) == (
            "complete",
            1,
            0,
            1,
        )
        assert list(service.applied.values()) == [1]


def test_twenty_kills_at_random_points_of_a_drain_leave_every_count_true(tmp_path: Path) -> None:
    queue = {"kind": "sqlite", "max_receive_count": 10, "visibility_timeout_s": 2}
    kills_in_a_drain({"queue": queue}, copies=200, kills=20, seed=11)


def test_kills_at_random_points_of_a_ledger_drain_never_leave_an_apply_uncounted() -> None:
    """On one embedded file the ledger's apply, the run's counts and the deletes commit in one
    transaction: whenever a worker is killed, the applications and the succeeded count are
    the same number, and the drain ends with each entry applied and counted once."""
    db = Path("env.db").resolve()
    write_config(
        {
            "queue": {"kind": "sqlite", "path": str(db), "visibility_timeout_s": 2},
            "state": {"kind": "sqlite", "path": str(db)},
            "sink": {"kind": "sqlite", "path": str(db)},
        }
    )
    env = process_env("unused")
    mock = raasctl("enqueue-mock", DEPOSITS, "--copies", "6000", env=env)
    assert mock.returncode == 0, mock.stderr
    run_id = json.loads(mock.stdout)["run_id"]
    randomly = random.Random(5)
    seen = []
    for _ in range(8):
        kill_at = time.monotonic() + randomly.uniform(0.6, 1.4)
        worker = start("worker", env=env)
        time.sleep(max(0.0, kill_at - time.monotonic()))
        kill(worker)
        applications, succeeded = ledger_and_count(db, run_id)
        assert applications == succeeded
        seen.append(applications)
    assert sum(0 < applied < 60_000 for applied in seen) >= 3, f"kills mid-drain: {seen}"
    time.sleep(2.2)  # what the last one held becomes visible again
    final = raasctl("worker", "--until-empty", env=env, timeout=300)
    assert final.returncode == 0, final.stderr

    view = show(run_id, env)
    assert (view["status"], view["total"], view["succeeded"]) == ("complete", 60_000, 60_000)
    assert ledger_and_count(db, run_id) == (60_000, 60_000)
    status = json.loads(raasctl("queue", "status", env=env).stdout)
    assert status["queue"]["visible"] == status["queue"]["in_flight"] == 0
    assert status["dlq"]["visible"] == 0


def ledger_and_count(db: Path, run_id: str) -> tuple[int, int]:
    """The run's applications in the ledger, and its succeeded count."""
    conn = sqlite3.connect(db)
    try:
        (applications,) = conn.execute(
            "SELECT COUNT(*) FROM ledger_applications WHERE run_id = ?", (run_id,)
        ).fetchone()
        (succeeded,) = conn.execute(
            "SELECT succeeded FROM state_runs WHERE run_id = ?", (run_id,)
        ).fetchone()
    finally:
        conn.close()
    return applications, succeeded


@pytest.mark.timeout(300)  # up to a lease (60 s) passes before the re-run may start
def test_a_run_killed_mid_enqueue_frees_its_lock_and_a_re_run_enqueues_exactly_the_rest(
    tmp_path: Path,
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from workday_server import deposit_entry

    count = 20_000
    raas = tmp_path / "raas"
    raas.mkdir()
    (raas / f"{DEPOSITS}.json").write_text(
        json.dumps({"Report_Entry": [deposit_entry(n) for n in range(count)]})
    )
    write_config({"source": {"kind": "fixtures", "path": str(raas)}})
    env = process_env("unused")
    db = Path(os.environ["RAASCTL_STATE_DIR"]) / "crash.db"

    # A 4 s lease (60 s by default) keeps the test short; the mechanism is the same.
    producer = start("run", DEPOSITS, "--lease", "4", env=env)
    wait_until(lambda: queued(db) >= 3_000, timeout_s=60)  # mid-enqueue
    kill(producer)
    assert queued(db) < count, "the kill must land mid-enqueue"

    began = time.monotonic()
    while True:
        rerun = raasctl("run", DEPOSITS, "--lease", "4", env=env)
        if rerun.returncode == 0:
            break
        assert "RAAS_RUN_LOCKED" in rerun.stderr, rerun.stderr
        # Within the lease (and the 70 s the issue asks for with the default 60 s lease).
        assert time.monotonic() - began < 20, "the killed run's lock did not free itself"
        time.sleep(0.5)
    summary = json.loads(rerun.stdout)

    drained = raasctl("worker", "--until-empty", "--concurrency", "16", env=env, timeout=240)
    assert drained.returncode == 0, drained.stderr
    runs = json.loads(raasctl("runs", "list", env=env).stdout)
    [killed] = [row for row in runs if row["run_id"] != summary["run_id"]]
    [second] = [row for row in runs if row["run_id"] == summary["run_id"]]
    assert killed["status"] == "abandoned" and killed["total"] == killed["succeeded"] > 0
    # Exactly the missing entries: what the killed run got through counts as duplicates.
    assert summary["enqueued"] == count - killed["total"]
    assert summary["duplicates"] == killed["total"]
    assert (second["status"], second["succeeded"]) == ("complete", summary["enqueued"])


def queued(db: Path) -> int:
    """Messages in the embedded queue, read as a second reader would (0 before it exists)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM queue_messages").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


@pytest.fixture(autouse=True)
def _tests_folder_on_path() -> None:
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)


# ---------------------------------------------------------------- SQS + DynamoDB (moto's server)


@pytest.fixture
def aws() -> Any:
    """SQS with a DLQ after 2 receives and visibility 1 s, and a DynamoDB state table, on
    moto's server."""
    queue = {"wait_time_s": 1, "visibility_timeout_s": 1}
    with moto_deployment("crash", queue=queue, visibility_s=1) as deployment:
        yield deployment


def test_on_sqs_a_worker_killed_twice_on_the_last_receive_leaves_counts_that_agree(
    tmp_path: Path, aws: Any
) -> None:
    base, _, _ = aws
    one = tmp_path / "raas"
    one.mkdir()
    entry = json.loads((PACKAGED_FIXTURES / "raas" / f"{DEPOSITS}.json").read_text())[
        "Report_Entry"
    ][0]
    (one / f"{DEPOSITS}.json").write_text(json.dumps({"Report_Entry": [entry]}))
    with AccountingService() as service:
        service.hang.add(entry["Deposit_ID"])
        write_config(
            {
                **base,
                "source": {"kind": "fixtures", "path": str(one)},
                "sink": {
                    "kind": "http",
                    "base_url": service.base_url,
                    "token": "env:CALLBACK_TOKEN",
                },
            }
        )
        env = process_env("acct-token-crash-2")
        run_id = json.loads(raasctl("run", DEPOSITS, env=env).stdout)["run_id"]
        for attempt in (1, 2):
            worker = start("worker", env=env)
            wait_until(lambda attempt=attempt: service.posts >= attempt)
            kill(worker)
            time.sleep(1.5)

        assert raasctl("worker", "--until-empty", env=env).returncode in (0, 3)
        view = show(run_id, env)
        assert (view["status"], view["done"], view["failed"]) == ("failed", 1, 1)
        assert json.loads(raasctl("queue", "status", env=env).stdout)["dlq"]["visible"] == 1

        service.heal()
        assert raasctl("queue", "redrive", "--yes", env=env).returncode == 0
        assert raasctl("worker", "--until-empty", env=env).returncode == 0
        view = show(run_id, env)
        assert (view["status"], view["failed"], view["succeeded"]) == ("complete", 0, 1)
        assert list(service.applied.values()) == [1]


@pytest.fixture
def aws_five_s_visibility() -> Any:
    """As `aws`, with a 5 s visibility: a drain of hundreds on moto under load can outlast 1 s
    between heartbeats, and a message left to its visibility (moto's DynamoDB answers some
    concurrent transactions with a 500) comes back in 5 s instead of the default 30 s. Such a
    message is received again, so the DLQ takes one only after 10 receives, not 2."""
    queue = {"wait_time_s": 1, "visibility_timeout_s": 5}
    with moto_deployment("crash", queue=queue, visibility_s=5, max_receive=10) as deployment:
        yield deployment


@pytest.mark.timeout(300)
def test_on_sqs_a_run_killed_mid_enqueue_is_abandoned_and_the_re_run_sends_what_is_missing(
    tmp_path: Path, aws_five_s_visibility: Any
) -> None:
    from workday_server import deposit_entry

    base, sqs, url = aws_five_s_visibility
    count = 200  # moto's SQS slows as a queue grows: a couple of hundred, not tens of thousands
    raas = tmp_path / "raas"
    raas.mkdir()
    (raas / f"{DEPOSITS}.json").write_text(
        json.dumps({"Report_Entry": [deposit_entry(n) for n in range(count)]})
    )
    write_config({**base, "source": {"kind": "fixtures", "path": str(raas)}})
    env = process_env("unused")

    def queued() -> int:
        attributes = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])

    producer = start("run", DEPOSITS, "--lease", "6", env=env)
    wait_until(lambda: queued() >= 30, timeout_s=60)
    kill(producer)
    got_through = queued()
    assert got_through < count, "the kill must land mid-enqueue"

    began = time.monotonic()
    while (rerun := raasctl("run", DEPOSITS, "--lease", "6", env=env)).returncode != 0:
        assert "RAAS_RUN_LOCKED" in rerun.stderr, rerun.stderr
        assert time.monotonic() - began < 20, "the killed run's lock did not free itself"
        time.sleep(1)
    summary = json.loads(rerun.stdout)

    # What the killed run's sends got through is claimed and confirmed: the re-run counts it
    # as duplicates; at most the batches in flight at the kill are uncertain and sent again.
    assert summary["duplicates"] >= got_through - 80
    assert summary["enqueued"] + summary["duplicates"] == count
    drained = raasctl("worker", "--until-empty", "--concurrency", "16", env=env, timeout=240)
    assert drained.returncode == 0, drained.stderr
    runs = json.loads(raasctl("runs", "list", env=env).stdout)
    [killed] = [row for row in runs if row["run_id"] != summary["run_id"]]
    [second] = [row for row in runs if row["run_id"] == summary["run_id"]]
    assert killed["status"] == "abandoned" and killed["total"] == killed["done"]
    assert (second["status"], second["done"]) == ("complete", summary["enqueued"])
    assert killed["done"] + second["done"] >= count  # every entry applied (a few twice-sent)


@pytest.mark.timeout(300)
def test_on_sqs_kills_at_random_points_of_a_drain_leave_every_count_true() -> None:
    """Path 4 on SQS + DynamoDB, scaled to what moto's SQS drains in a test's time: 200
    messages and 8 kills (the embedded test above does 2,000 and 20)."""
    queue = {"wait_time_s": 1, "visibility_timeout_s": 3}
    with moto_deployment("kills", queue=queue, max_receive=10) as (base, _, _):
        kills_in_a_drain(base, copies=20, kills=8, seed=5)


def kills_in_a_drain(base: dict[str, Any], *, copies: int, kills: int, seed: int) -> None:
    """Drain `copies` x 10 mock messages into a callback that fails 5% of calls (half of them
    applied but answered too late), SIGKILLing a worker `kills` times at random points, then
    drain to the end: every count must agree with the callback's and the DLQ's."""
    randomly = random.Random(seed)
    visibility = base["queue"]["visibility_timeout_s"]
    with CallbackServer(fail_rate=0.05, seed=seed, timeout_delay_s=0.4) as server:
        write_config(
            {
                **base,
                "sink": {
                    "kind": "http",
                    "base_url": server.base_url,
                    "token": "env:CALLBACK_TOKEN",
                    "timeout_s": 0.3,
                },
                "concurrency": 8,
            }
        )
        env = process_env(server.token)
        mock = raasctl("enqueue-mock", DEPOSITS, "--copies", str(copies), env=env)
        assert mock.returncode == 0, mock.stderr
        run_id = json.loads(mock.stdout)["run_id"]
        backoff = ("--backoff-base", "0.2", "--backoff-cap", "0.5")
        for _ in range(kills):
            worker = start("worker", *backoff, env=env)
            time.sleep(randomly.uniform(0.3, 1.5))
            kill(worker)
        time.sleep(visibility + 0.2)  # what the last one held becomes visible again
        final = raasctl("worker", "--until-empty", *backoff, env=env, timeout=300)
        assert final.returncode in (0, 3), final.stderr

        view = show(run_id, env)
        dlq = json.loads(raasctl("queue", "status", env=env).stdout)["dlq"]["visible"]
        assert view["status"] in ("complete", "failed")
        assert view["total"] == copies * 10 and view["done"] == copies * 10
        assert view["succeeded"] == len(server.applied_keys())  # what the callback applied
        assert view["failed"] + view["dead_lettered"] == dlq  # what the DLQ holds
        assert server.twice_applied() == []  # exactly once (a repeat answered 409)
