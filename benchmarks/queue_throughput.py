"""Queue throughput: the SQLite adapter's rates, and what the SQS adapter saves over a naive loop.

    .venv/bin/python benchmarks/queue_throughput.py [--sqlite-messages N] [--sqs-messages N]

1. SQLite adapter (FIFO, a file in a temporary folder): send rate in batches of 10, then
   receive + delete rate in batches of 10.
2. SQS adapter on moto's ThreadedMotoServer: API requests per message, counted with botocore's
   `before-call.sqs` event, sending in batches of 10 and draining in rounds of 100 messages (moto
   slows down as a queue grows, so large runs count requests, they do not time them).
3. Wall clock on the same server, each on a fresh FIFO queue of 100 messages: a naive boto3
   loop (one message per call) against the adapter, in turns, median of three rounds.

Exit status 1 when a figure misses its target.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

from raasctl.envelope import Envelope, entry_key
from raasctl.queues.base import OutgoingMessage
from raasctl.queues.sqlite import SqliteQueue
from raasctl.queues.sqs import SqsQueue

SEND_TARGET = 20_000  # msg/s
RECEIVE_TARGET = 5_000  # msg/s
SENT_REQUESTS_TARGET = 0.11  # API requests per message
RECEIVED_REQUESTS_TARGET = 0.22
SPEEDUP_TARGET = 3.0
WALL_CLOCK_MESSAGES = 100
WALL_CLOCK_ROUNDS = 3
COUNT_ROUND = 100

results: list[bool] = []


def verdict(ok: bool) -> str:
    results.append(ok)
    return "PASS" if ok else "FAIL"


def messages(count: int, groups: int, run_id: str) -> list[OutgoingMessage]:
    """Real envelopes of clientDepositUpdate, as the producer makes them."""
    out = []
    for n in range(count):
        deposit = f"DEP-{n:07d}"
        payload = {
            "deposit_id": deposit,
            "customer_id": f"C-{n % groups:05d}",
            "currency": "USD",
            "amount": "1250.00",
            "deposit_date": "2026-11-27",
            "applied_invoices": ["INV-1", "INV-2"],
        }
        envelope = Envelope.new(
            cron="clientDepositUpdate",
            run_id=run_id,
            key=entry_key("clientDepositUpdate", deposit, payload),
            payload=payload,
        )
        out.append(envelope.to_message(f"C-{n % groups:05d}", label=f"entry {n}"))
    return out


# ---------------------------------------------------------------- SQLite


class Stopwatch:
    """Wall-clock time, and the CPU time this process got meanwhile (user + system): on a
    shared machine the difference is time spent waiting for a core or the disk."""

    def __enter__(self) -> Stopwatch:
        self._wall = time.perf_counter()
        self._cpu = _cpu_seconds()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = _cpu_seconds() - self._cpu


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_sqlite(count: int) -> None:
    batch = messages(count, groups=max(1, count // 50), run_id="bench-sqlite")
    # The producer streams its messages; this list of 50,000 is the benchmark's own, and the
    # collector must not walk it again and again while the adapter is timed.
    gc.collect()
    gc.freeze()
    with tempfile.TemporaryDirectory() as folder:
        queue = SqliteQueue(Path(folder) / "bench.db")
        queue.depth()  # the schema, before the clock starts

        with Stopwatch() as sending:
            for start in range(0, count, 10):
                result = queue.send_batch(batch[start : start + 10])
                assert len(result.sent) == len(batch[start : start + 10]), result

        received = 0
        with Stopwatch() as receiving:
            while got := queue.receive(10, 0):
                queue.delete([m.receipt_handle for m in got])
                received += len(got)
        assert received == count, f"received {received} of {count}"
        assert queue.depth().empty
        queue.close()
    del batch
    gc.unfreeze()

    print(f"SQLite adapter: FIFO, {count:,} messages in {count // 50:,} groups, one file")
    for name, watch, target in (
        ("send, batches of 10            ", sending, SEND_TARGET),
        ("receive + delete, batches of 10", receiving, RECEIVE_TARGET),
    ):
        rate = count / watch.wall_s
        print(
            f"  {name} {rate:>8,.0f} msg/s   target >= {target:,}   {verdict(rate >= target)}"
            f"   ({count / watch.cpu_s:,.0f} msg per CPU-second;"
            f" this process had the CPU {watch.cpu_s / watch.wall_s:.0%} of the time)"
        )


# ---------------------------------------------------------------- SQS on moto


class Counter:
    def __init__(self, client: Any) -> None:
        self.calls = 0
        self._lock = threading.Lock()
        client.meta.events.register("before-call.sqs", self._count)

    def _count(self, **_: Any) -> None:
        with self._lock:
            self.calls += 1

    def take(self) -> int:
        with self._lock:
            calls, self.calls = self.calls, 0
        return calls


def fresh_queue(client: Any, name: str) -> str:
    dlq = client.create_queue(QueueName=f"{name}-dlq.fifo", Attributes={"FifoQueue": "true"})
    arn = client.get_queue_attributes(QueueUrl=dlq["QueueUrl"], AttributeNames=["QueueArn"])
    policy = f'{{"deadLetterTargetArn": "{arn["Attributes"]["QueueArn"]}", "maxReceiveCount": 5}}'
    url: str = client.create_queue(
        QueueName=f"{name}.fifo", Attributes={"FifoQueue": "true", "RedrivePolicy": policy}
    )["QueueUrl"]
    return url


def adapter_round_trip(client: Any, url: str, batch: list[OutgoingMessage]) -> tuple[int, int]:
    """Send everything, then receive and delete until empty. Returns (received, sends)."""
    queue = SqsQueue(client, url)
    result = queue.send_batch(batch)
    assert len(result.sent) == len(batch), result.failed[:1]
    received = 0
    while got := queue.receive(10, 0):
        queue.delete([m.receipt_handle for m in got])
        received += len(got)
    return received, len(batch)


def naive_send(client: Any, url: str, batch: list[OutgoingMessage]) -> None:
    for message in batch:
        client.send_message(
            QueueUrl=url,
            MessageBody=message.body,
            MessageGroupId=message.group_id,
            MessageDeduplicationId=message.dedup_id,
            MessageAttributes={
                k: {"DataType": "String", "StringValue": v} for k, v in message.attributes.items()
            },
        )


def naive_drain(client: Any, url: str) -> int:
    received = 0
    while True:
        got = client.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=0)
        if not got.get("Messages"):
            return received
        [message] = got["Messages"]
        client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        received += 1


def naive_round_trip(client: Any, url: str, batch: list[OutgoingMessage]) -> int:
    naive_send(client, url, batch)
    return naive_drain(client, url)


def timed(action: Callable[..., Any], *args: Any) -> float:
    started = time.perf_counter()
    action(*args)
    return time.perf_counter() - started


def bench_sqs(count: int) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        client = boto3.client(
            "sqs",
            region_name="us-east-1",
            endpoint_url=f"http://{host}:{port}",
            config=Config(retries={"mode": "standard", "max_attempts": 4}, max_pool_connections=64),
        )
        counter = Counter(client)

        # API requests per message, adapter. The producer sends batches of 10 while workers
        # drain the queue: rounds of 100 keep moto's queue short (it slows down as one grows).
        queue = SqsQueue(client, fresh_queue(client, "count-adapter"))
        batch = messages(count, groups=count, run_id="bench-count")
        sent_calls = received_calls = received = 0
        counter.take()
        for round_start in range(0, count, COUNT_ROUND):
            round_end = min(count, round_start + COUNT_ROUND)
            for start in range(round_start, round_end, 10):
                queue.send_batch(batch[start : min(round_end, start + 10)])
            sent_calls += counter.take()
            while received < round_end:
                got = queue.receive(10, 0)
                queue.delete([m.receipt_handle for m in got])
                received += len(got)
            received_calls += counter.take()
        assert queue.receive(10, 0) == []  # the worker's last, empty receive counts too
        received_calls += counter.take()

        # The naive loop's counts, on a queue of 100.
        small = messages(WALL_CLOCK_MESSAGES, WALL_CLOCK_MESSAGES, run_id="bench-count-naive")
        naive_url = fresh_queue(client, "count-naive")
        counter.take()
        naive_send(client, naive_url, small)
        naive_sent_calls = counter.take()
        naive_drain(client, naive_url)
        naive_received_calls = counter.take()

        # Wall clock: fresh queues of 100 on the same server, naive and adapter in turn,
        # a few rounds (the median keeps one noisy round from deciding).
        naive_times: list[float] = []
        adapter_times: list[float] = []
        for number in range(WALL_CLOCK_ROUNDS):
            tag = f"wall-{number}"
            naive_batch = messages(WALL_CLOCK_MESSAGES, WALL_CLOCK_MESSAGES, f"{tag}-n")
            adapter_batch = messages(WALL_CLOCK_MESSAGES, WALL_CLOCK_MESSAGES, f"{tag}-a")
            naive_url = fresh_queue(client, f"{tag}-naive")
            adapter_url = fresh_queue(client, f"{tag}-adapter")
            counter.take()
            naive_times.append(timed(naive_round_trip, client, naive_url, naive_batch))
            naive_requests = counter.take()
            adapter_times.append(timed(adapter_round_trip, client, adapter_url, adapter_batch))
            adapter_requests = counter.take()
    finally:
        server.stop()

    per_sent = sent_calls / count
    per_received = received_calls / count
    print(f"SQS adapter on ThreadedMotoServer: FIFO queue with a DLQ, {count:,} messages")
    print(
        f"  API requests per message sent              {per_sent:.3f}"
        f"   target <= {SENT_REQUESTS_TARGET}   {verdict(per_sent <= SENT_REQUESTS_TARGET)}"
    )
    print(
        f"  API requests per message received+deleted  {per_received:.3f}"
        f"   target <= {RECEIVED_REQUESTS_TARGET}"
        f"   {verdict(per_received <= RECEIVED_REQUESTS_TARGET)}"
    )
    print(
        f"  naive loop, for comparison                 {naive_sent_calls / WALL_CLOCK_MESSAGES:.3f}"
        f" sent, {naive_received_calls / WALL_CLOCK_MESSAGES:.3f} received+deleted"
    )
    naive_s = statistics.median(naive_times)
    adapter_s = statistics.median(adapter_times)
    speedup = naive_s / adapter_s
    rounds = ", ".join(f"{n:.2f}/{a:.2f}" for n, a in zip(naive_times, adapter_times, strict=True))
    print(
        f"Wall clock: send {WALL_CLOCK_MESSAGES} then receive+delete all, fresh FIFO queues,"
        f" same server (median of {WALL_CLOCK_ROUNDS} rounds, naive/adapter s: {rounds})"
    )
    print(
        f"  naive boto3 loop (one message per call)  {naive_s:6.2f} s   {naive_requests} requests"
    )
    print(
        f"  adapter (batches, sent in parallel)      {adapter_s:6.2f} s"
        f"   {adapter_requests} requests   {speedup:.1f}x faster   target >= {SPEEDUP_TARGET:.0f}x"
        f"   {verdict(speedup >= SPEEDUP_TARGET)}"
    )
    # Two runs, two unknowns: what one request costs and what moto does per message whatever
    # the request. Batching saves only the first; the second bounds any speed-up.
    per_request = (naive_s - adapter_s) / (naive_requests - adapter_requests)
    per_message = (adapter_s - adapter_requests * per_request) / WALL_CLOCK_MESSAGES
    if per_message > 0:
        ceiling = naive_s / (WALL_CLOCK_MESSAGES * per_message)
        print(
            f"  (estimate: {per_request * 1000:.1f} ms per request, {per_message * 1000:.1f} ms"
            f" of moto's own work per message, so no client can be more than {ceiling:.1f}x"
            " faster than the naive loop on this server and machine)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqlite-messages", type=int, default=50_000)
    parser.add_argument("--sqs-messages", type=int, default=1_000)
    args = parser.parse_args()
    bench_sqlite(args.sqlite_messages)
    bench_sqs(args.sqs_messages)
    print("ALL PASS" if all(results) else "SOME FAIL")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
