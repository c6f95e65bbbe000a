"""Signals and waiting: the first Ctrl-C/SIGTERM says what it waits for at once, a second
quits now (exit 130) with the summary so far, two SIGTERMs in quick succession are one
request; an idle worker says it waits, once per idle spell. Real subprocesses, real
signals."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from callback_server import CallbackServer
from test_worker_processes import (
    deposit_payload,
    embedded_env,
    enqueue_embedded,
    raasctl_env,
    start_worker,
    wait_for,
    write_config,
)

from raasctl.cli.worker_cmd import progress_detail
from raasctl.cli.worker_signals import Answer, SignalGate, stopping_message
from raasctl.worker import WorkerStats

INT, TERM = signal.SIGINT, signal.SIGTERM


@pytest.mark.parametrize(
    ("signals", "answers"),
    [
        ([(INT, 0.0)], [Answer.STOP]),
        ([(INT, 0.0), (INT, 0.5)], [Answer.STOP, Answer.QUIT]),
        ([(INT, 0.0), (INT, 10.0)], [Answer.STOP, Answer.QUIT]),
        # coreutils timeout: two SIGTERMs at once are one request
        ([(TERM, 0.0), (TERM, 0.01)], [Answer.STOP, Answer.SAME]),
        ([(TERM, 0.0), (TERM, 1.99), (TERM, 2.5)], [Answer.STOP, Answer.SAME, Answer.QUIT]),
        ([(TERM, 0.0), (TERM, 2.0)], [Answer.STOP, Answer.QUIT]),
        ([(TERM, 0.0), (INT, 0.1)], [Answer.STOP, Answer.QUIT]),
        ([(INT, 0.0), (TERM, 0.1)], [Answer.STOP, Answer.QUIT]),
        ([(INT, 0.0), (INT, 0.1), (INT, 0.2)], [Answer.STOP, Answer.QUIT, Answer.SAME]),
    ],
)
def test_signal_gate_table(
    signals: list[tuple[signal.Signals, float]], answers: list[Answer]
) -> None:
    gate = SignalGate()
    assert [gate.on_signal(signum, at) for signum, at in signals] == answers


def test_stopping_message_names_the_count_and_how_to_quit() -> None:
    assert stopping_message(3, INT) == "stopping: finishing 3 in flight (Ctrl-C again to quit now)"
    assert "finishing 1 in flight" in stopping_message(1, TERM)


def stats(**fields: Any) -> WorkerStats:
    base: dict[str, Any] = dict(
        processed=4, succeeded=4, failed=0, dead_lettered=0, retries=0, in_flight=0,
        elapsed_s=10.0, per_hour=1440.0, runs_done=4, runs_total=4, eta_s=None,
    )  # fmt: skip
    return WorkerStats(**(base | fields))


def test_the_progress_line_of_an_idle_worker_says_it_waits_and_how_to_stop() -> None:
    assert "waiting for messages (Ctrl-C to stop)" in progress_detail(stats(idle=True))
    assert "waiting" not in progress_detail(stats(idle=False))
    assert "waiting" not in progress_detail(stats(idle=True, in_flight=1))


def json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


class Stderr:
    """Reads a worker's stderr as it comes, without blocking the test on a full pipe."""

    def __init__(self, process: Any) -> None:
        import threading

        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: Any) -> None:
        for line in process.stderr:
            self.lines.append(line)

    def codes(self) -> list[str]:
        return [event["code"] for event in json_lines("".join(self.lines))]

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "".join(self.lines)


def slow_callback_worker(tmp_path: Path, server: CallbackServer, messages: int) -> Any:
    db = tmp_path / "signals.db"
    enqueue_embedded(db, "run-sig", [deposit_payload(n) for n in range(messages)])
    env = embedded_env(db, visibility_s=30)
    env["sink"] = {"kind": "http", "base_url": server.base_url, "token": "env:CALLBACK_TOKEN"}
    env["concurrency"] = 2
    config = write_config(tmp_path / "raasctl.yaml", "sig", env)
    return start_worker(config, "--format", "json", env=raasctl_env(CALLBACK_TOKEN=server.token))


def test_first_sigint_says_at_once_what_it_waits_for_and_a_second_exits_130(
    tmp_path: Path,
) -> None:
    with CallbackServer(latency_s=8.0) as server:
        worker = slow_callback_worker(tmp_path, server, 10)
        stderr = Stderr(worker)
        wait_for(lambda: len(server.served) >= 2)  # both slots wait on the slow service
        began = time.monotonic()
        worker.send_signal(signal.SIGINT)
        wait_for(lambda: "stopping: finishing" in "".join(stderr.lines), timeout=5)
        said_after = time.monotonic() - began
        assert worker.poll() is None  # still finishing its two
        worker.send_signal(signal.SIGINT)
        stdout = worker.stdout.read() if worker.stdout else ""
        code = worker.wait(timeout=10)
        quit_after = time.monotonic() - began
    text = stderr.text()
    assert said_after < 2  # not after the 8 s the in-flight work takes
    assert code == 130
    assert quit_after < 6
    assert "Aborted!" not in text and "Traceback" not in text
    stopping = [e for e in json_lines(text) if e["code"] == "RAAS_WORKER_STOPPING"]
    assert stopping[0]["msg"] == "stopping: finishing 2 in flight (Ctrl-C again to quit now)"
    summary = json.loads(stdout)
    assert summary["succeeded"] == 0 and "per_hour" in summary


def test_two_sigterms_at_once_are_one_request(tmp_path: Path) -> None:
    """As `timeout` sends them: the worker still finishes its in-flight work and exits 0."""
    with CallbackServer(latency_s=1.0) as server:
        worker = slow_callback_worker(tmp_path, server, 10)
        stderr = Stderr(worker)
        wait_for(lambda: len(server.served) >= 2)
        worker.send_signal(signal.SIGTERM)
        worker.send_signal(signal.SIGTERM)
        stdout = worker.stdout.read() if worker.stdout else ""
        code = worker.wait(timeout=15)
    assert code == 0, stderr.text()
    summary = json.loads(stdout)
    assert summary["succeeded"] == 2
    assert stderr.codes().count("RAAS_WORKER_STOPPING") >= 1


def test_an_idle_worker_logs_that_it_waits_once_per_idle_spell(tmp_path: Path) -> None:
    db = tmp_path / "idle.db"
    enqueue_embedded(db, "run-a", [deposit_payload(1)])
    config = write_config(tmp_path / "raasctl.yaml", "idle", embedded_env(db))
    worker = start_worker(config, "--format", "json")
    stderr = Stderr(worker)
    try:
        wait_for(lambda: stderr.codes().count("RAAS_WORKER_IDLE") == 1)
        time.sleep(3.5)  # several 1 s polls of the empty embedded queue
        assert stderr.codes().count("RAAS_WORKER_IDLE") == 1
        enqueue_embedded(db, "run-b", [deposit_payload(2)])
        wait_for(lambda: stderr.codes().count("RAAS_WORKER_IDLE") == 2)
    finally:
        worker.send_signal(signal.SIGTERM)
        stdout = worker.stdout.read() if worker.stdout else ""
        code = worker.wait(timeout=15)
    events = json_lines(stderr.text())
    idle = [e for e in events if e["code"] == "RAAS_WORKER_IDLE"]
    assert code == 0
    assert len(idle) == 2
    assert "waiting for messages" in idle[0]["msg"] and "Ctrl-C" in idle[0]["msg"]
    assert json.loads(stdout)["succeeded"] == 2


def test_an_until_empty_worker_does_not_say_it_waits(tmp_path: Path) -> None:
    db = tmp_path / "drain.db"
    enqueue_embedded(db, "run-a", [deposit_payload(1)])
    config = write_config(tmp_path / "raasctl.yaml", "drain", embedded_env(db))
    worker = start_worker(config, "--until-empty", "--format", "json")
    _stdout, stderr = worker.communicate(timeout=30)
    codes = [e["code"] for e in json_lines(stderr)]
    assert worker.returncode == 0
    assert "RAAS_QUEUE_EMPTY" in codes and "RAAS_WORKER_IDLE" not in codes
