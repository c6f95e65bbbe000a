"""Hostile services and messages: a crawling Workday, a callback that moved or asks to wait a
day, poison messages, loose envelopes, a failing queue under --max-runtime. Each ends in a
clear outcome for that one thing, never a stuck, crashed or silently idle process."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from workday_server import FakeWorkday, Reply

from raasctl.cli import main
from raasctl.codes import ErrorCode, InfoCode
from raasctl.dates import report_window
from raasctl.envelope import Envelope, EnvelopeError
from raasctl.errors import QueueError, SinkError, SourceError
from raasctl.jobs import JOBS
from raasctl.jobs.base import EntryInvalid
from raasctl.queues.base import OutgoingMessage, ReceivedMessage
from raasctl.queues.sqlite import SqliteQueue
from raasctl.sinks.http import HttpSink
from raasctl.sinks.sqlite import SqliteLedger
from raasctl.sources.base import Prompts
from raasctl.sources.workday import WorkdaySource
from raasctl.state.base import RunRecord
from raasctl.state.sqlite import SqliteState
from raasctl.worker import Worker, WorkerOptions

DEPOSITS = "clientDepositUpdate"


# ---------------------------------------------------------------- Workday


def report_source(workday: FakeWorkday, **config: Any) -> WorkdaySource:
    return WorkdaySource(workday.config("basic", **config), workday.secret, backoff_s=0.01)


def test_a_crawling_workday_ends_at_the_fetch_deadline() -> None:
    with FakeWorkday() as workday:
        workday.add_report("Client_Deposits", [{"Deposit_ID": f"D-{n}"} for n in range(50)])
        workday.script(Reply(trickle_s=0.2))  # a byte every 0.2 s: no read timeout fires
        source = report_source(workday, fetch_timeout_s=1.5, read_timeout_s=5.0)
        began = time.monotonic()
        with pytest.raises(SourceError) as caught:
            list(source.entries(DEPOSITS, "Client_Deposits", _prompts()))
        took = time.monotonic() - began
        source.close()
    assert caught.value.code is ErrorCode.SOURCE_TIMEOUT and caught.value.exit_code == 1
    assert "fetch_timeout_s (1.5 s)" in str(caught.value)
    assert 1.4 <= took < 3.0


def test_a_retry_that_would_outlast_the_deadline_ends_the_fetch_at_once() -> None:
    with FakeWorkday() as workday:
        workday.add_report("Client_Deposits", [{"Deposit_ID": "D-1"}])
        workday.script(Reply.throttled(retry_after=600))
        source = report_source(workday, fetch_timeout_s=5.0)
        began = time.monotonic()
        with pytest.raises(SourceError) as caught:
            list(source.entries(DEPOSITS, "Client_Deposits", _prompts()))
        source.close()
    assert caught.value.code is ErrorCode.SOURCE_TIMEOUT
    assert time.monotonic() - began < 2


def test_run_reports_the_source_timeout_in_one_line(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeWorkday() as workday:
        workday.add_report("Client_Deposits", [{"Deposit_ID": "D-1"}])
        workday.script(Reply(trickle_s=0.3))
        for name, value in workday.env().items():
            monkeypatch.setenv(name, value)
        source = workday.config("basic", fetch_timeout_s=1.0).model_dump(mode="json")
        config = tmp_path / "raasctl.yaml"
        config.write_text(
            json.dumps(
                {
                    "default_env": "t",
                    "environments": {"t": {"source": source, "queue": {"kind": "sqlite"}}},
                }
            )
        )
        result = runner.invoke(main, ["--config", str(config), "run", DEPOSITS])
    assert result.exit_code == 1
    assert "RAAS_SOURCE_TIMEOUT" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------- the callback


class Redirecting(BaseHTTPRequestHandler):
    status = 301
    posts: list[str]

    def do_POST(self) -> None:
        self.posts.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(self.status)
        self.send_header("Location", "https://login.example.invalid/sso?token=abc&next=x")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture(params=[301, 307, 308])
def moved_callback(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[str]]]:
    posts: list[str] = []
    handler = type("Handler", (Redirecting,), {"status": request.param, "posts": posts})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cron-jobs", posts
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[SqliteQueue, SqliteState]]:
    db = tmp_path / "env.db"
    queue = SqliteQueue(db, fifo=False, max_receive_count=5, visibility_timeout_s=30)
    state = SqliteState(db)
    yield queue, state
    queue.close()
    state.close()


def enqueue(queue: SqliteQueue, state: SqliteState, count: int, run_id: str = "run-1") -> None:
    state.create_run(
        RunRecord(run_id=run_id, cron=DEPOSITS, env="t", mock=False, created_at=datetime.now(UTC))
    )
    messages = [
        Envelope.new(
            cron=DEPOSITS, run_id=run_id, key=f"k-{n}", payload={"deposit_id": f"D-{n}"}
        ).to_message(f"D-{n}")
        for n in range(count)
    ]
    assert not queue.send_batch(messages).failed
    state.finish_enqueue(run_id, entries=count, enqueued=count, invalid=0, duplicates=0)


def options(**overrides: Any) -> WorkerOptions:
    return WorkerOptions(**{"concurrency": 4, "until_empty": True, "wait_time_s": 0.2, **overrides})


def test_a_moved_callback_stops_the_worker_and_dead_letters_nothing(
    embedded: tuple[SqliteQueue, SqliteState], moved_callback: tuple[str, list[str]]
) -> None:
    queue, state = embedded
    url, posts = moved_callback
    enqueue(queue, state, 10)
    sink = HttpSink(url, "cb-token-hostile-0001")
    worker = Worker(queue, state, sink, options())

    with pytest.raises(SinkError) as caught:
        worker.run()
    sink.close()

    assert caught.value.code is ErrorCode.SINK_REDIRECT
    assert "redirect to https://login.example.invalid/sso" in str(caught.value)
    assert "token=abc" not in str(caught.value)  # the Location's query is not shown
    depth = queue.depth()
    assert depth.dlq_visible == 0  # nothing dead-lettered
    assert depth.visible == 10 and depth.in_flight == 0  # every message released
    assert 1 <= len(posts) <= 4  # the slots that had started; no message after the stop
    run = state.get_run("run-1")
    assert run is not None and run.done == 0 and run.status == "running"


def test_a_retry_after_of_a_day_is_capped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(429)
            self.send_header("Retry-After", "86400")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        sink = HttpSink(f"http://127.0.0.1:{server.server_address[1]}", "t", max_retry_after_s=900)
        envelope = Envelope.new(cron=DEPOSITS, run_id="r", key="k", payload={"deposit_id": "D"})
        with caplog.at_level(logging.WARNING, logger="raasctl"), pytest.raises(SinkError) as caught:
            sink.apply(envelope)
        sink.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert caught.value.retryable and caught.value.retry_after_s == 900
    capped = [r for r in caplog.records if getattr(r, "code", None) == InfoCode.RETRY_AFTER_CAPPED]
    assert capped and "86400 s cut to max_retry_after_s (900 s)" in capped[0].getMessage()


# ---------------------------------------------------------------- poison and loose messages


POISON_BODIES = {
    "deep": "[" * 100_000,
    "v true": json.dumps(
        {
            "v": True,
            "cron": DEPOSITS,
            "run_id": "run-1",
            "key": "k-v",
            "payload": {},
            "mock": False,
            "enqueued_at": "",
        }
    ),
    "mock string": json.dumps(
        {
            "v": 1,
            "cron": DEPOSITS,
            "run_id": "run-1",
            "key": "k-m",
            "payload": {},
            "mock": "false",
            "enqueued_at": "",
        }
    ),
    "surrogate": '{"v": 1, "cron": "clientDepositUpdate", "run_id": "run-1", "key": "k-\\ud800", '
    '"payload": {}, "mock": false, "enqueued_at": ""}',
}


def test_poison_messages_go_to_the_dlq_and_the_good_one_in_the_same_batch_is_applied(
    tmp_path: Path,
) -> None:
    db = tmp_path / "env.db"
    queue = SqliteQueue(db, fifo=False, max_receive_count=5, visibility_timeout_s=30)
    state = SqliteState(db)
    ledger = SqliteLedger(db)
    enqueue(queue, state, 1)
    queue.send_batch(
        [OutgoingMessage(body=body, dedup_id=f"p-{name}") for name, body in POISON_BODIES.items()]
    )

    result = Worker(queue, state, ledger, options()).run()

    assert result.succeeded == 1 and result.dead_lettered == len(POISON_BODIES)
    reasons = sorted(m.attributes["reason"] for m in queue.peek(10, dlq=True))
    assert reasons == sorted(
        [
            "body is nested too deep to read",
            "unknown envelope version True",
            "envelope mock is not a boolean ('false')",
            "envelope key is not valid Unicode (a lone surrogate)",
        ]
    )
    assert ledger.counts()["applications"] == 1
    for closable in (queue, state, ledger):
        closable.close()


@pytest.mark.parametrize("name", sorted(POISON_BODIES))
def test_a_loose_envelope_is_refused(name: str) -> None:
    with pytest.raises(EnvelopeError):
        Envelope.from_body(POISON_BODIES[name])


def test_an_entry_with_a_lone_surrogate_is_invalid_not_a_collision() -> None:
    job = JOBS[DEPOSITS]
    entry = json.loads('{"Deposit_ID": "D-\\ud800", "Deposit_Amount": "1.00"}')
    with pytest.raises(EntryInvalid, match="not valid Unicode"):
        job.map_entry(entry, 7)


# ---------------------------------------------------------------- failing services


class FailingReceives(SqliteQueue):
    def receive(
        self, max_messages: int, wait_time_s: float, visibility_timeout_s: int | None = None
    ) -> list[ReceivedMessage]:
        raise QueueError("database disk image is malformed")


def test_a_worker_whose_queue_keeps_failing_exits_with_the_error_at_max_runtime(
    tmp_path: Path,
) -> None:
    queue = FailingReceives(tmp_path / "q.db", fifo=False, max_receive_count=5)
    state = SqliteState(tmp_path / "q.db")
    worker = Worker(queue, state, SqliteLedger(tmp_path / "q.db"), options(max_runtime_s=1.5))
    with pytest.raises(QueueError, match="malformed"):
        worker.run()
    assert worker.result().processed == 0
    queue.close()
    state.close()


def test_the_worker_command_on_a_corrupted_database_exits_1(runner: CliRunner) -> None:
    state_dir = Path(".raasctl")
    state_dir.mkdir(exist_ok=True)
    (state_dir / "local.db").write_bytes(b"this is not a database" * 1000)
    result = runner.invoke(main, ["worker", "--max-runtime", "2"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr


def _prompts() -> Prompts:
    return report_window(datetime.now(UTC), timedelta(days=1))
