"""Benchmark: `raasctl enqueue-mock` into the embedded queue and into SQS (moto server).

    .venv/bin/python benchmarks/enqueue_mock.py [--copies 100000 10000]

1. Embedded: `raasctl enqueue-mock clientDepositUpdate --copies N` (10 deposits, so 10 × N
   messages) as a subprocess into a fresh SQLite queue. Prints the command's own messages/s
   (sending only), the wall-clock rate of the whole process, and its peak RSS (psutil), for
   each N, to show memory does not grow with the count.
2. SQS, against moto's ThreadedMotoServer on 127.0.0.1 (in this process): SQS API requests per
   message for 1,000 messages (a botocore before-send hook), and the wall clock of 100
   messages on a fresh queue beside a naive loop of one SendMessage per message.

Targets: >= 20,000 msg/s embedded, peak < 150 MB whatever the count, <= 0.11 SQS requests per
message, >= 3x the naive loop.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import moto.sqs.models
import psutil
from moto.core.utils import unix_time_millis
from moto.server import ThreadedMotoServer

from raasctl.config import Config
from raasctl.jobs import JOBS
from raasctl.runner import enqueue_mock, load_mock_seed, mock_messages
from raasctl.runtime import Runtime

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "raasctl" / "fixtures" / "client_deposits.json"
TARGET_PER_SECOND = 20_000
TARGET_PEAK_MB = 150
TARGET_REQUESTS_PER_MESSAGE = 0.11
TARGET_SPEEDUP = 3.0


# ---------------------------------------------------------------- embedded


def measure(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, str, str]:
    """Run `command`; return (seconds, peak RSS in bytes, stdout, stderr)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err)
        watched = psutil.Process(process.pid)
        peak = 0
        while process.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return elapsed, peak, out.read().decode(), err.read().decode()


def bench_embedded(copies: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAASCTL_")}
        env["RAASCTL_STATE_DIR"] = str(folder / "state")
        command = [sys.executable, "-m", "raasctl", "-q", "enqueue-mock", "clientDepositUpdate"]
        command += ["--copies", str(copies), "--format", "json"]
        elapsed, peak, stdout, stderr = measure(command, env, folder)
        if stderr.strip() or not stdout.strip():
            raise SystemExit(f"raasctl enqueue-mock failed:\n{stderr}")
        summary = json.loads(stdout)
    return {
        "messages": summary["enqueued"],
        "per_second": summary["per_second"],
        "wall_s": elapsed,
        "wall_per_second": summary["enqueued"] / elapsed,
        "peak_mb": peak / 1e6,
    }


# ---------------------------------------------------------------- SQS on a moto server


@contextmanager
def moto_server() -> Iterator[str]:
    # moto recomputes a queue's attributes on every send and checks each message's visibility
    # with a clock that builds several datetimes per call: 1,000 messages take minutes. The
    # same milliseconds from time.time() make it seconds without changing what moto does.
    original = moto.sqs.models.unix_time_millis

    def now_ms(dt: datetime | None = None) -> float:
        return time.time() * 1000.0 if dt is None else unix_time_millis(dt)

    moto.sqs.models.unix_time_millis = now_ms
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ[name] = value
    os.environ.pop("AWS_SESSION_TOKEN", None)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{server._server.server_port}"  # type: ignore[union-attr]
    finally:
        server.stop()
        moto.sqs.models.unix_time_millis = original


def fresh_queue(endpoint: str, name: str) -> str:
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)
    attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])


def sqs_runtime(endpoint: str, url: str, folder: Path) -> Runtime:
    config = Config.model_validate(
        {
            "default_env": "bench",
            "environments": {
                "bench": {
                    "aws": {"region": "us-east-1", "endpoint_url": endpoint},
                    "queue": {"kind": "sqs", "url": url},
                    "state": {"kind": "sqlite", "path": str(folder / "state.db")},
                }
            },
        }
    )
    name, env = config.environment(None)
    return Runtime(config, name, env)


def requests_per_message(endpoint: str, folder: Path) -> dict[str, float]:
    url = fresh_queue(endpoint, "bench-requests.fifo")
    runtime = sqs_runtime(endpoint, url, folder)
    calls: list[str] = []

    def count(**kwargs: Any) -> None:
        calls.append(kwargs["event_name"].rsplit(".", 1)[-1])

    runtime.aws.client("sqs").meta.events.register("before-send.sqs", count)
    summary = enqueue_mock(runtime, "clientDepositUpdate", copies=100)
    return {
        "messages": summary.enqueued,
        "requests": len(calls),
        "send_requests": calls.count("SendMessageBatch"),
        "by_operation": dict(Counter(calls)),
        "per_message": len(calls) / summary.enqueued,
    }


def hundred_messages(endpoint: str, folder: Path) -> dict[str, float]:
    runtime = sqs_runtime(endpoint, fresh_queue(endpoint, "bench-batched.fifo"), folder)
    runtime.aws.client("sqs")  # the client (and its credentials) are ready before timing
    started = time.perf_counter()
    summary = enqueue_mock(runtime, "clientDepositUpdate", copies=10)
    batched = time.perf_counter() - started
    assert summary.enqueued == 100, summary

    naive_url = fresh_queue(endpoint, "bench-naive.fifo")
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)
    seed = load_mock_seed(JOBS["clientDepositUpdate"], FIXTURE, {})
    messages = [item.message for item in mock_messages("clientDepositUpdate", "naive", seed, 10)]
    started = time.perf_counter()
    for message in messages:
        sqs.send_message(
            QueueUrl=naive_url,
            MessageBody=message.body,
            MessageGroupId=message.group_id,
            MessageDeduplicationId=message.dedup_id,
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value}
                for name, value in message.attributes.items()
            },
        )
    naive = time.perf_counter() - started
    return {"batched_s": batched, "naive_s": naive, "speedup": naive / batched}


# ---------------------------------------------------------------- report


def load_average() -> str:
    """The machine's 1, 5 and 15-minute load averages: figures from a busy machine are low."""
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, nargs="+", default=[100_000, 10_000])
    args = parser.parse_args()
    ok = True
    print(f"load average at the start: {load_average()} ({os.cpu_count()} CPUs)")

    print("embedded queue (SQLite), enqueue-mock clientDepositUpdate as a subprocess")
    print(
        f"{'messages':>10} {'msg/s sending':>14} {'wall s':>8} {'msg/s wall':>11} {'peak RSS':>10}"
    )
    for copies in args.copies:
        r = bench_embedded(copies)
        print(
            f"{r['messages']:>10,} {r['per_second']:>14,.0f} {r['wall_s']:>8.1f} "
            f"{r['wall_per_second']:>11,.0f} {r['peak_mb']:>7.1f} MB"
        )
        ok &= r["per_second"] >= TARGET_PER_SECOND and r["peak_mb"] < TARGET_PEAK_MB

    print("\nSQS on moto's ThreadedMotoServer (127.0.0.1)")
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        counted = requests_per_message(endpoint, Path(tmp))
        print(
            f"  {counted['messages']:,} messages: {counted['requests']} SQS requests "
            f"({counted['by_operation']}) = "
            f"{counted['per_message']:.3f} requests/message"
        )
        timed = hundred_messages(endpoint, Path(tmp))
        print(
            f"  100 messages on a fresh queue: enqueue-mock {timed['batched_s']:.3f} s, "
            f"naive SendMessage loop {timed['naive_s']:.3f} s ({timed['speedup']:.1f}x)"
        )
    ok &= counted["per_message"] <= TARGET_REQUESTS_PER_MESSAGE
    ok &= timed["speedup"] >= TARGET_SPEEDUP
    print(
        f"\ntargets: >= {TARGET_PER_SECOND:,} msg/s embedded, peak < {TARGET_PEAK_MB} MB, "
        f"<= {TARGET_REQUESTS_PER_MESSAGE} requests/message, >= {TARGET_SPEEDUP:g}x naive: "
        + ("met" if ok else "MISSED")
    )
    print(f"load average at the end: {load_average()}")


if __name__ == "__main__":
    main()
