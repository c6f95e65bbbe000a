"""The worker as real processes: SIGKILL mid-drain, two workers on one queue, a faulty
downstream, and the deployed path end to end (moto server, fake Workday, fake accounting).

Each test runs `python -m raasctl` subprocesses against real SQLite files in tmp_path,
`moto.server.ThreadedMotoServer` on 127.0.0.1 and HTTP servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from callback_server import CallbackServer
from moto.server import ThreadedMotoServer
from workday_server import FakeWorkday, deposit_entry

from raasctl.envelope import Envelope
from raasctl.queues.sqlite import SqliteQueue
from raasctl.state.base import RunRecord
from raasctl.state.dynamodb import DynamoState, create_table
from raasctl.state.sqlite import SqliteState

DEPOSITS = "clientDepositUpdate"
REGION = "us-east-1"


# ---------------------------------------------------------------- helpers


def write_config(path: Path, env_name: str, env: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"default_env": env_name, "environments": {env_name: env}}))
    return path


def raasctl_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)  # the isolated fixture's fake AWS credentials and state dir
    env.update(extra)
    env.pop("RAASCTL_ENV", None)
    return env


def raasctl(
    config: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raasctl", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env or raasctl_env(),
        timeout=timeout,
    )


def start_worker(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "raasctl", "--config", str(config), "worker", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or raasctl_env(),
    )


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, dict[str, Any], str]:
    stdout, stderr = process.communicate(timeout=timeout)
    summary = json.loads(stdout) if stdout.strip().startswith("{") else {}
    return process.returncode, summary, stderr


def codes(stderr: str) -> list[str]:
    return [json.loads(line)["code"] for line in stderr.splitlines() if line.startswith("{")]


def wait_for(condition: Any, timeout: float = 30, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(every)


def deposit_payload(n: int, **extra: Any) -> dict[str, Any]:
    return {"deposit_id": f"D-{n:05d}", "amount": f"{n}.25", "currency": "USD", **extra}


def envelopes(run_id: str, payloads: Sequence[dict[str, Any]]) -> list[Envelope]:
    return [
        Envelope.new(
            cron=DEPOSITS, run_id=run_id, key=f"{DEPOSITS}:{p['deposit_id']}:{run_id}", payload=p
        )
        for p in payloads
    ]


def create_run(state: Any, run_id: str, total: int) -> None:
    state.create_run(
        RunRecord(
            run_id=run_id, cron=DEPOSITS, env="test", mock=False, created_at=datetime.now(UTC)
        )
    )
    state.finish_enqueue(run_id, entries=total, enqueued=total, invalid=0, duplicates=0)


def enqueue_embedded(db: Path, run_id: str, payloads: Sequence[dict[str, Any]]) -> list[str]:
    queue, state = SqliteQueue(db, max_receive_count=5), SqliteState(db)
    try:
        create_run(state, run_id, len(payloads))
        batch = envelopes(run_id, payloads)
        for start in range(0, len(batch), 10):
            chunk = batch[start : start + 10]
            result = queue.send_batch([e.to_message(e.payload["deposit_id"]) for e in chunk])
            assert not result.failed and not result.duplicates
        return [e.key for e in batch]
    finally:
        queue.close()
        state.close()


def embedded_env(db: Path, *, visibility_s: int = 2, max_receive_count: int = 5) -> dict[str, Any]:
    return {
        "queue": {
            "kind": "sqlite",
            "path": str(db),
            "max_receive_count": max_receive_count,
            "visibility_timeout_s": visibility_s,
        },
        "state": {"kind": "sqlite", "path": str(db)},
        "sink": {"kind": "sqlite", "path": str(db)},
        "concurrency": 4,
    }


def ledger_keys(db: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT entry_key FROM ledger_applications")]


@dataclass
class Moto:
    server: ThreadedMotoServer
    endpoint: str

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint)


@pytest.fixture
def moto_server() -> Iterator[Moto]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server._server.server_port  # type: ignore[union-attr]
    yield Moto(server, f"http://127.0.0.1:{port}")
    server.stop()


def create_fifo_queue(
    moto: Moto, name: str, *, visibility_s: int, max_receive: int = 5
) -> tuple[str, str]:
    sqs = moto.client("sqs")
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq.fifo", Attributes={"FifoQueue": "true"})[
        "QueueUrl"
    ]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = sqs.create_queue(
        QueueName=f"{name}.fifo",
        Attributes={
            "FifoQueue": "true",
            "VisibilityTimeout": str(visibility_s),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)}
            ),
        },
    )["QueueUrl"]
    return url, dlq_url


def sqs_depth(moto: Moto, url: str) -> int:
    attributes = moto.client("sqs").get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


# ---------------------------------------------------------------- crash


def assert_each_key_applied_by_one_post(
    server: CallbackServer, keys: Sequence[str], *, in_flight_at_kill: int
) -> None:
    """What the accounting service saw: every key applied, each by exactly one POST (201);
    a key is POSTed again (409) only when it was in flight at the kill, i.e. applied but not
    yet recorded as applied. A worker that ignored its idempotency records, or applied a key
    twice, fails here (the ledger's UNIQUE key could never show it)."""
    statuses = server.statuses()
    assert server.applied_keys() == set(keys)
    assert server.twice_applied() == []
    assert statuses[201] == len(keys)
    assert statuses[409] <= in_flight_at_kill
    assert sum(statuses.values()) == len(keys) + statuses[409]  # no other answers


def test_sigkill_mid_drain_then_restart_applies_every_entry_exactly_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "crash.db"
    keys = enqueue_embedded(db, "run-crash", [deposit_payload(n) for n in range(120)])
    with CallbackServer() as server:
        env = embedded_env(db)
        env["sink"] = {"kind": "http", "base_url": server.base_url, "token": "env:CALLBACK_TOKEN"}
        config = write_config(tmp_path / "raasctl.yaml", "crash", env)
        process_env = raasctl_env(CALLBACK_TOKEN=server.token)

        first = start_worker(config, "--rate", "40", env=process_env)
        wait_for(lambda: len(server.applied_keys()) >= 30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        applied_before = len(server.applied_keys())
        assert 30 <= applied_before < 120, "the kill must land mid-drain"

        code, summary, stderr = finish(
            start_worker(config, "--until-empty", "--format", "json", env=process_env)
        )

        assert code == 0, stderr
        assert_each_key_applied_by_one_post(server, keys, in_flight_at_kill=env["concurrency"])
    queue = SqliteQueue(db)
    depth = queue.depth()
    queue.close()
    assert depth.empty and depth.dlq_visible == 0
    state = SqliteState(db)
    assert all(state.is_applied(key) for key in keys)
    run = state.get_run("run-crash")
    state.close()
    assert run is not None and run.failed == 0 and run.dead_lettered == 0
    # Counting follows the delete, so a crash may lose a count but never adds one.
    assert run.succeeded <= 120
    assert summary["succeeded"] >= 120 - applied_before


def test_sigkill_mid_drain_on_sqs_then_restart_applies_every_entry_exactly_once(
    tmp_path: Path, moto_server: Moto
) -> None:
    url, dlq_url = create_fifo_queue(moto_server, "raas-crash", visibility_s=2)
    db = tmp_path / "state.db"
    payloads = [deposit_payload(n) for n in range(60)]
    state = SqliteState(db)
    create_run(state, "run-sqs", len(payloads))
    state.close()
    batch = envelopes("run-sqs", payloads)
    sqs = moto_server.client("sqs")
    for start in range(0, len(batch), 10):
        entries = []
        for n, envelope in enumerate(batch[start : start + 10]):
            message = envelope.to_message(envelope.payload["deposit_id"])
            entries.append(
                {
                    "Id": str(n),
                    "MessageBody": message.body,
                    "MessageGroupId": message.group_id,
                    "MessageDeduplicationId": message.dedup_id,
                    "MessageAttributes": {
                        k: {"DataType": "String", "StringValue": v}
                        for k, v in message.attributes.items()
                    },
                }
            )
        assert not sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")
    env = {
        "aws": {"region": REGION, "endpoint_url": moto_server.endpoint},
        "queue": {
            "kind": "sqs",
            "url": url,
            "dlq_url": dlq_url,
            "visibility_timeout_s": 2,
            "wait_time_s": 1,
        },
        "state": {"kind": "sqlite", "path": str(db)},
        "concurrency": 4,
    }
    with CallbackServer() as server:
        env["sink"] = {"kind": "http", "base_url": server.base_url, "token": "env:CALLBACK_TOKEN"}
        config = write_config(tmp_path / "raasctl.yaml", "crash-sqs", env)
        process_env = raasctl_env(CALLBACK_TOKEN=server.token)

        first = start_worker(config, "--rate", "20", env=process_env)
        wait_for(lambda: len(server.applied_keys()) >= 15)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        applied_before = len(server.applied_keys())
        assert 15 <= applied_before < 60, "the kill must land mid-drain"

        code, _, stderr = finish(
            start_worker(config, "--until-empty", "--format", "json", env=process_env)
        )

        assert code == 0, stderr
        assert_each_key_applied_by_one_post(
            server,
            [e.key for e in batch],
            in_flight_at_kill=4,  # env's concurrency
        )
    assert sqs_depth(moto_server, url) == 0
    assert sqs_depth(moto_server, dlq_url) == 0
    assert "RAAS_QUEUE_EMPTY" in codes(stderr)


# ---------------------------------------------------------------- two workers


def test_two_worker_processes_on_one_embedded_queue_share_without_overlap(
    tmp_path: Path,
) -> None:
    db = tmp_path / "shared.db"
    keys = enqueue_embedded(db, "run-two", [deposit_payload(n) for n in range(400)])
    config = write_config(tmp_path / "raasctl.yaml", "two", embedded_env(db, visibility_s=30))

    # Each worker alone would need 4 s at this rate: time enough for the other to start,
    # however slow a process start is on a loaded machine.
    workers = [
        start_worker(config, "--until-empty", "--rate", "100", "--format", "json") for _ in range(2)
    ]
    results = [finish(worker) for worker in workers]

    for code, _, stderr in results:
        assert code == 0, stderr
    succeeded = [summary["succeeded"] for _, summary, _ in results]
    assert all(count > 0 for count in succeeded), succeeded  # both really took part
    assert sum(succeeded) == 400  # no message was handled by both
    assert sorted(ledger_keys(db)) == sorted(keys)
    state = SqliteState(db)
    run = state.get_run("run-two")
    state.close()
    assert run is not None and run.succeeded == 400 and run.status == "complete"
    finished = [codes(stderr).count("RAAS_RUN_COMPLETE") for _, _, stderr in results]
    assert sum(finished) == 1  # logged once, by whichever worker counted the last message


# ---------------------------------------------------------------- a faulty downstream


def test_faulty_callback_every_entry_applied_once_retries_counted_poison_in_dlq(
    tmp_path: Path,
) -> None:
    db = tmp_path / "faults.db"
    good = [deposit_payload(n) for n in range(60)]
    poison = [deposit_payload(1000 + n, poison=True) for n in range(3)]
    keys = enqueue_embedded(db, "run-faults", good + poison)
    good_keys, poison_keys = keys[:60], keys[60:]
    max_receive = 8
    # A timed-out apply is answered 3 s late, past the sink's 1.5 s timeout. Any other answer
    # is immediate: 1.5 s keeps a loaded machine's stall from timing one out too (it would be
    # retried and answered 409, one more than the injected timeouts; at 0.5 s CI saw it).
    with CallbackServer(fail_rate=0.3, seed=11, timeout_delay_s=3.0) as server:
        # The seed is fixed: check that no entry fails every allowed attempt (else it would
        # rightly end in the DLQ and this test would be about something else).
        assert all(
            any(server.fault_for(key, n) is None for n in range(1, max_receive + 1))
            for key in good_keys
        )
        env = embedded_env(db, visibility_s=10, max_receive_count=max_receive)
        env["sink"] = {
            "kind": "http",
            "base_url": server.base_url,
            "token": "env:CALLBACK_TOKEN",
            "timeout_s": 1.5,
        }
        env["concurrency"] = 8
        config = write_config(tmp_path / "raasctl.yaml", "faults", env)

        code, summary, stderr = finish(
            start_worker(
                config,
                "--until-empty",
                "--backoff-base",
                "1",
                "--backoff-cap",
                "2",
                "--format",
                "json",
                env=raasctl_env(CALLBACK_TOKEN=server.token),
            ),
        )

        faults = server.faults()
        assert code == 3, stderr  # entries were dead-lettered
        assert server.applied_keys() == set(good_keys)
        assert server.twice_applied() == []
        assert faults["error"] > 0 and faults["timeout"] > 0
        assert server.statuses()[409] == faults["timeout"]  # each timed-out apply, recognised
    assert server.token not in stderr and server.token not in json.dumps(summary)
    assert summary["succeeded"] == 60 and summary["dead_lettered"] == 3
    assert summary["failed"] == 0
    state = SqliteState(db)
    run = state.get_run("run-faults")
    state.close()
    assert run is not None
    assert (run.succeeded, run.dead_lettered, run.failed) == (60, 3, 0)
    assert run.retries == faults["error"] + faults["timeout"]
    assert run.status == "failed"  # finished, with dead-lettered entries
    queue = SqliteQueue(db)
    dlq = queue.peek(10, dlq=True)
    queue.close()
    assert sorted(json.loads(m.body)["key"] for m in dlq) == sorted(poison_keys)
    assert all("HTTP 400" in m.attributes["reason"] for m in dlq)
    assert all("poison" in m.attributes["reason"] for m in dlq)


# ---------------------------------------------------------------- the deployed path


def test_run_and_worker_end_to_end_over_the_deployed_path(
    tmp_path: Path, moto_server: Moto
) -> None:
    url, dlq_url = create_fifo_queue(moto_server, "raas-cron-jobs-work-uat", visibility_s=30)
    create_table(moto_server.client("dynamodb"), "raasctl-work-uat")
    entries = [deposit_entry(n) for n in range(1, 31)]
    with (
        FakeWorkday() as workday,
        CallbackServer(fail_rate=0.2, seed=3, timeout_delay_s=1.5) as callback,
    ):
        workday.add_report("Client_Deposits", entries)
        env = {
            "deployed": False,  # the test machine is a developer machine
            "protected": False,
            "aws": {"region": REGION, "endpoint_url": moto_server.endpoint, "profile": None},
            "source": {
                "kind": "workday",
                "base_url": workday.base_url,
                "tenant": workday.tenant,
                "owner": workday.owner,
                "auth": {
                    "kind": "basic",
                    "username": "env:WORKDAY_USER",
                    "password": "env:WORKDAY_PASSWORD",
                },
                "connect_timeout_s": 2,
                "read_timeout_s": 10,
            },
            "queue": {
                "kind": "sqs",
                "url": url,
                "dlq_url": dlq_url,
                "visibility_timeout_s": 30,
                "wait_time_s": 1,
            },
            "state": {"kind": "dynamodb", "table": "raasctl-work-uat"},
            "sink": {
                "kind": "http",
                "base_url": callback.base_url,
                "token": "env:CALLBACK_TOKEN",
                "timeout_s": 1,
            },
            "concurrency": 8,
            "rate_limit": 50,
        }
        config = write_config(tmp_path / "raasctl.yaml", "work-uat", env)
        process_env = raasctl_env(CALLBACK_TOKEN=callback.token, **workday.env())

        enqueued = raasctl(
            config, "--env", "work-uat", "run", DEPOSITS, "--format", "json", env=process_env
        )
        assert enqueued.returncode == 0, enqueued.stderr
        run = json.loads(enqueued.stdout)
        assert run["enqueued"] == 30
        assert "RAAS_ENQUEUE_COMPLETE" in codes(enqueued.stderr)

        code, summary, stderr = finish(
            start_worker(
                config,
                "--until-empty",
                "--backoff-base",
                "1",
                "--backoff-cap",
                "1",
                "--format",
                "json",
                env=process_env,
            ),
        )
        assert code == 0, stderr
        assert summary["succeeded"] == 30 and summary["failed"] == 0
        assert len(callback.applied_keys()) == 30 and callback.twice_applied() == []
        assert callback.faults(), "the seed should inject some faults"
        assert {"RAAS_RUN_COMPLETE", "RAAS_QUEUE_EMPTY"} <= set(codes(stderr))
        for secret in (callback.token, workday.password):
            assert secret not in stderr and secret not in enqueued.stderr

    shown = raasctl(config, "runs", "show", run["run_id"], "--format", "json", env=process_env)
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["status"] == "complete"
    assert (record["total"], record["succeeded"]) == (30, 30)
    faults = callback.faults()
    assert faults["error"] and faults["timeout"]
    assert record["retries"] == faults["error"] + faults["timeout"]
    assert sqs_depth(moto_server, url) == 0 and sqs_depth(moto_server, dlq_url) == 0
    state = DynamoState(moto_server.client("dynamodb"), "raasctl-work-uat")
    assert all(state.is_applied(key) for key in callback.applied_keys())


# ---------------------------------------------------------------- SIGTERM


def test_sigterm_finishes_in_flight_work_and_takes_nothing_more(tmp_path: Path) -> None:
    db = tmp_path / "term.db"
    keys = enqueue_embedded(db, "run-term", [deposit_payload(n) for n in range(10)])
    with CallbackServer(latency_s=1.0) as server:
        env = embedded_env(db, visibility_s=30)
        env["sink"] = {"kind": "http", "base_url": server.base_url, "token": "env:CALLBACK_TOKEN"}
        env["concurrency"] = 2
        config = write_config(tmp_path / "raasctl.yaml", "term", env)
        worker = start_worker(
            config, "--format", "json", env=raasctl_env(CALLBACK_TOKEN=server.token)
        )
        wait_for(lambda: len(server.served) >= 2)  # both slots are waiting on the service
        began = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code, summary, stderr = finish(worker, timeout=15)
        stopped_after = time.monotonic() - began
        applied = server.applied_keys()

    assert code == 0, stderr
    assert stopped_after < 5
    assert summary["succeeded"] == 2 and summary["processed"] == 2
    assert len(applied) == 2 and applied <= set(keys)
    stopping = [
        json.loads(line) for line in stderr.splitlines() if '"RAAS_WORKER_STOPPING"' in line
    ]
    assert stopping and stopping[0]["reason"] == "signal"
    queue = SqliteQueue(db)
    depth = queue.depth()
    queue.close()
    assert (depth.visible, depth.in_flight) == (8, 0)  # the rest wait, visible, untouched
