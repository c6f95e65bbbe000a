"""Queue throughput: the SQLite adapter's rates, and what the SQS adapter saves over a naive loop.

    .venv/bin/python benchmarks/queue_throughput.py [--sqlite-messages N] [--sqs-messages N]
        [--sqs-rounds N] [--sqs-stock-rounds N] [--skip-sqlite]

1. SQLite adapter (FIFO, a file in a temporary folder): send rate in batches of 10, then
   receive + delete rate in batches of 10.
2. SQS adapter on moto's ThreadedMotoServer: API requests per message, counted with botocore's
   `before-call.sqs` event, sending in batches of 10 and draining in rounds of 100 messages (moto
   slows down as a queue grows, so large runs count requests, they do not time them).
3. Wall clock on the same server, each contender on its own fresh FIFO queue of the same 100
   messages, in rounds whose order rotates, medians: a naive boto3 loop (SendMessage, then
   ReceiveMessage of 1 + DeleteMessage), a direct batched boto3 loop (SendMessageBatch of 10,
   then ReceiveMessage of 10 + DeleteMessageBatch) as the reference, and the adapter
   (send_batch, then receive(10) + delete). Send, receive + delete and their total, each.
   Every consumer asks for what the worker needs: message attributes, ApproximateReceiveCount
   and MessageGroupId.

   moto reads the time through datetime arithmetic, several times per queued message on every
   request (it recomputes the queue's attributes 4 times per SendMessage, 6 times per message of
   a SendMessageBatch, each walking every message). The timed rounds replace that clock with
   the same milliseconds from time.time(), as benchmarks/enqueue_mock.py does, for every
   contender alike; a few rounds with moto's stock clock follow, for context only.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3
import moto.sqs.models
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
WALL_CLOCK_ROUNDS = 5
STOCK_CLOCK_ROUNDS = 3
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


@contextmanager
def fast_moto_clock() -> Iterator[None]:
    """moto's SQS reads the time as datetime arithmetic, several times per queued message on
    every request (the queue's attributes, each message's visibility), a cost no client can
    batch away. The same milliseconds from time.time(), as benchmarks/enqueue_mock.py does;
    moto does the same work otherwise."""
    original = moto.sqs.models.unix_time_millis

    def now_ms(dt: datetime | None = None) -> float:
        return time.time() * 1000.0 if dt is None else original(dt)

    moto.sqs.models.unix_time_millis = now_ms
    try:
        yield
    finally:
        moto.sqs.models.unix_time_millis = original


def fresh_queue(client: Any, name: str) -> str:
    dlq = client.create_queue(QueueName=f"{name}-dlq.fifo", Attributes={"FifoQueue": "true"})
    arn = client.get_queue_attributes(QueueUrl=dlq["QueueUrl"], AttributeNames=["QueueArn"])
    policy = f'{{"deadLetterTargetArn": "{arn["Attributes"]["QueueArn"]}", "maxReceiveCount": 5}}'
    url: str = client.create_queue(
        QueueName=f"{name}.fifo", Attributes={"FifoQueue": "true", "RedrivePolicy": policy}
    )["QueueUrl"]
    return url


def _attribute_values(message: OutgoingMessage) -> dict[str, dict[str, str]]:
    return {k: {"DataType": "String", "StringValue": v} for k, v in message.attributes.items()}


# What every consumer here asks for, the loops as the adapter does: the worker needs the
# message attributes (run_id of an unreadable body), the receive count (retries, DLQ) and
# the group (dead-lettering on FIFO).
RECEIVE_OPTIONS: dict[str, Any] = {
    "WaitTimeSeconds": 0,
    "VisibilityTimeout": 60,
    "MessageAttributeNames": ["All"],
}


def receive_options(client: Any) -> dict[str, Any]:
    """RECEIVE_OPTIONS with the system attributes, named as the installed botocore knows."""
    shape = client.meta.service_model.operation_model("ReceiveMessage").input_shape
    key = (
        "MessageSystemAttributeNames"
        if "MessageSystemAttributeNames" in shape.members
        else "AttributeNames"
    )
    return {**RECEIVE_OPTIONS, key: ["ApproximateReceiveCount", "MessageGroupId"]}


class Contender:
    """One way of sending a batch to a queue and draining it again."""

    name = ""
    label = ""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.options = receive_options(client)

    def send(self, url: str, batch: list[OutgoingMessage]) -> None:
        raise NotImplementedError

    def drain(self, url: str) -> int:
        raise NotImplementedError


class Naive(Contender):
    name = "naive"
    label = "naive boto3 loop (one message per call)"

    def send(self, url: str, batch: list[OutgoingMessage]) -> None:
        for message in batch:
            self.client.send_message(
                QueueUrl=url,
                MessageBody=message.body,
                MessageGroupId=message.group_id,
                MessageDeduplicationId=message.dedup_id,
                MessageAttributes=_attribute_values(message),
            )

    def drain(self, url: str) -> int:
        received = 0
        while True:
            got = self.client.receive_message(QueueUrl=url, MaxNumberOfMessages=1, **self.options)
            if not got.get("Messages"):
                return received
            [message] = got["Messages"]
            self.client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            received += 1


class Direct(Contender):
    name = "direct"
    label = "direct batched boto3 loop (reference)"

    def send(self, url: str, batch: list[OutgoingMessage]) -> None:
        for start in range(0, len(batch), 10):
            entries = [
                {
                    "Id": str(number),
                    "MessageBody": message.body,
                    "MessageGroupId": message.group_id,
                    "MessageDeduplicationId": message.dedup_id,
                    "MessageAttributes": _attribute_values(message),
                }
                for number, message in enumerate(batch[start : start + 10])
            ]
            response = self.client.send_message_batch(QueueUrl=url, Entries=entries)
            assert not response.get("Failed"), response["Failed"][:1]

    def drain(self, url: str) -> int:
        received = 0
        while True:
            got = self.client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, **self.options)
            messages = got.get("Messages", [])
            if not messages:
                return received
            entries = [
                {"Id": str(number), "ReceiptHandle": message["ReceiptHandle"]}
                for number, message in enumerate(messages)
            ]
            response = self.client.delete_message_batch(QueueUrl=url, Entries=entries)
            assert not response.get("Failed"), response["Failed"][:1]
            received += len(messages)


class Adapter(Contender):
    name = "adapter"
    label = "SqsQueue adapter"

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.queues: dict[str, SqsQueue] = {}

    def send(self, url: str, batch: list[OutgoingMessage]) -> None:
        # A new adapter per queue: its one GetQueueAttributes (the size limit) is timed too.
        queue = self.queues[url] = SqsQueue(self.client, url)
        result = queue.send_batch(batch)
        assert len(result.sent) == len(batch), result.failed[:1]

    def drain(self, url: str) -> int:
        queue = self.queues.pop(url)
        received = 0
        while got := queue.receive(10, 0):
            queue.delete([m.receipt_handle for m in got])
            received += len(got)
        return received


@dataclass
class Timing:
    wall_s: float
    cpu_s: float
    requests: int


@dataclass
class Rounds:
    send: list[Timing] = field(default_factory=list)
    drain: list[Timing] = field(default_factory=list)

    def median(self, phase: str) -> float:
        if phase == "total":
            return statistics.median(
                s.wall_s + d.wall_s for s, d in zip(self.send, self.drain, strict=True)
            )
        return statistics.median(t.wall_s for t in getattr(self, phase))

    def median_cpu(self, phase: str) -> float:
        if phase == "total":
            return statistics.median(
                s.cpu_s + d.cpu_s for s, d in zip(self.send, self.drain, strict=True)
            )
        return statistics.median(t.cpu_s for t in getattr(self, phase))

    def requests(self, phase: str) -> int:
        if phase == "total":
            return self.send[0].requests + self.drain[0].requests
        return getattr(self, phase)[0].requests


def timed(counter: Counter, action: Callable[[], Any]) -> Timing:
    gc.collect()
    counter.take()
    with Stopwatch() as watch:
        action()
    return Timing(watch.wall_s, watch.cpu_s, counter.take())


def count_requests(client: Any, counter: Counter, count: int) -> tuple[float, float]:
    """API requests per message through the adapter, for `count` messages. The producer sends
    batches of 10 while workers drain the queue: rounds of 100 keep moto's queue short."""
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
    return sent_calls / count, received_calls / count


def wall_clock(
    client: Any, counter: Counter, rounds: int, prefix: str = "wall"
) -> dict[str, Rounds]:
    """Every contender on its own fresh queue of the same 100 messages, in turns whose order
    rotates each round (no one always goes first on a busy machine)."""
    contenders: list[Contender] = [Naive(client), Direct(client), Adapter(client)]
    results = {contender.name: Rounds() for contender in contenders}
    for number in range(rounds):
        batch = messages(WALL_CLOCK_MESSAGES, WALL_CLOCK_MESSAGES, f"{prefix}-{number}")
        shift = number % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            url = fresh_queue(client, f"{prefix}-{number}-{contender.name}")
            timing = results[contender.name]
            timing.send.append(timed(counter, lambda: contender.send(url, batch)))  # noqa: B023
            drained: list[int] = []
            timing.drain.append(
                timed(counter, lambda: drained.append(contender.drain(url)))  # noqa: B023
            )
            assert drained == [len(batch)], f"{contender.name} drained {drained} of {len(batch)}"
    return results


def bench_sqs(count: int, rounds: int, stock_rounds: int) -> None:
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
        with fast_moto_clock():
            per_sent, per_received = count_requests(client, counter, count)
            wall_clock(client, counter, 1, prefix="warm-up")  # connections, caches, imports
            results = wall_clock(client, counter, rounds)
        stock = wall_clock(client, counter, stock_rounds, prefix="stock") if stock_rounds else None
    finally:
        server.stop()

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
    naive = results["naive"]
    print(
        f"  naive loop, for comparison                 "
        f"{naive.requests('send') / WALL_CLOCK_MESSAGES:.3f} sent,"
        f" {naive.requests('drain') / WALL_CLOCK_MESSAGES:.3f} received+deleted"
    )
    print(
        f"Wall clock, {WALL_CLOCK_MESSAGES} messages on a fresh FIFO queue each, same server,"
        " same bodies, same receive options; median of rounds in rotating order"
    )
    print(
        f"  moto's clock patched for every contender alike, as in benchmarks/enqueue_mock.py"
        f" ({rounds} rounds; CPU-s is this\n  process's CPU time, server included: the steadier"
        " figure on a busy machine):"
    )
    ratios = wall_clock_table(results)
    print(f"  adapter at least {SPEEDUP_TARGET:g}x faster than the naive loop:")
    for phase, title in PHASES:
        direct_ratio, adapter_ratio = ratios[phase]
        outcome = verdict(adapter_ratio >= SPEEDUP_TARGET)
        if adapter_ratio < SPEEDUP_TARGET and direct_ratio < SPEEDUP_TARGET:
            outcome += f" (the direct batched loop is only {direct_ratio:.1f}x here too)"
        print(f"    {title:<20} {adapter_ratio:4.1f}x   target >= {SPEEDUP_TARGET:g}x   {outcome}")
    if stock is None:
        return
    print(f"  for context, moto's stock clock ({stock_rounds} rounds, no verdict):")
    ratios = wall_clock_table(stock)
    print(
        "    moto's own work per message, which no client can batch away, dominates here: it"
        " recomputes the queue's\n    attributes (walking every message, building datetimes)"
        " 4 times per SendMessage and 6 times per message\n    of a SendMessageBatch."
        " Times faster than the naive loop with the stock clock:"
    )
    for phase, title in PHASES:
        direct_ratio, adapter_ratio = ratios[phase]
        print(
            f"    {title:<20} direct batched loop {direct_ratio:4.1f}x,"
            f" adapter {adapter_ratio:4.1f}x the naive loop"
        )


PHASES = (
    ("send", f"send {WALL_CLOCK_MESSAGES}"),
    ("drain", "receive + delete all"),
    ("total", "total"),
)


def wall_clock_table(results: dict[str, Rounds]) -> dict[str, tuple[float, float]]:
    """Print send, receive + delete and total for each contender; return, per phase, how many
    times faster than the naive loop the direct loop and the adapter were."""
    naive, direct, adapter = results["naive"], results["direct"], results["adapter"]
    ratios: dict[str, tuple[float, float]] = {}
    for phase, title in PHASES:
        naive_s, direct_s, adapter_s = (r.median(phase) for r in (naive, direct, adapter))
        ratios[phase] = (naive_s / direct_s, naive_s / adapter_s)
        print(f"    {title}")
        for name, contender, seconds in (
            (Naive.label, naive, naive_s),
            (Direct.label, direct, direct_s),
            (Adapter.label, adapter, adapter_s),
        ):
            line = (
                f"      {name:<40} {seconds:6.3f} s  {contender.requests(phase):4d} requests"
                f"  {contender.median_cpu(phase):6.3f} CPU-s"
            )
            if contender is not naive:
                line += f"  {naive_s / seconds:4.1f}x naive"
            if contender is adapter:
                line += f"  (time {seconds / direct_s:.2f} x direct)"
            print(line)
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqlite-messages", type=int, default=50_000)
    parser.add_argument("--sqs-messages", type=int, default=1_000)
    parser.add_argument("--sqs-rounds", type=int, default=WALL_CLOCK_ROUNDS)
    parser.add_argument(
        "--sqs-stock-rounds",
        type=int,
        default=STOCK_CLOCK_ROUNDS,
        help="rounds with moto's own clock, for context (0: none)",
    )
    parser.add_argument("--skip-sqlite", action="store_true", help="the SQS figures only")
    args = parser.parse_args()
    if not args.skip_sqlite:
        bench_sqlite(args.sqlite_messages)
    bench_sqs(args.sqs_messages, args.sqs_rounds, args.sqs_stock_rounds)
    print("ALL PASS" if all(results) else "SOME FAIL")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
