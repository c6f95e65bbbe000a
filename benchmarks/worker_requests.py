"""Benchmark: what a `raasctl worker` on SQS + DynamoDB costs per message drained.

    .venv/bin/python benchmarks/worker_requests.py [--messages N] [--only plain rated]

SQS and DynamoDB are moto's server on 127.0.0.1 in a child process of its own, which counts
every request it is sent by its X-Amz-Target (service and action), with the tests' patches
of moto (tests/support.py, patch_moto: DynamoDB one request at a time, transactions that do
not copy the table, receives that do not walk the queue); the callback sink is
tests/callback_server.py in this process, answering after L ms. The worker is a
`python -m raasctl worker --until-empty` subprocess, so its CPU (user + system, from
rusage) is its own. Printed per scenario: the drain rate (between the first and the last
callback request), SQS requests per message, DynamoDB (state) requests per message by
action, and messages per CPU-second of the worker.

  plain  N messages, L=20 ms, concurrency 16, no rate limit. Targets: SQS <= 0.25 and
         DynamoDB <= 1.2 requests per message.
  rated  --rate 20, L=50 ms, 400 messages. Targets: SQS <= 0.5 requests per message, the
         rate >= 95 % of 20/s and never more than 20 starts in a second.

Figures include start-up and the final empty receives of --until-empty: they are what an
operator's drain costs, not a steady state. Only ratios within one run compare well: the
machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

from callback_server import CallbackServer  # noqa: E402
from fleet import enqueue  # noqa: E402
from worker_throughput import max_in_window, run_worker, steady_rate, tightest_span  # noqa: E402

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

MOTO_CHILD = r"""
import json, sys, threading
from collections import Counter
sys.path.insert(0, sys.argv[1])
from support import patch_moto
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

patch_moto()  # the tests' moto: DynamoDB one request at a time, no O(table) or O(depth) costs
counts, lock = Counter(), threading.Lock()
app = DomainDispatcherApplication(create_backend_app)

def counting(environ, start_response):
    with lock:
        counts[environ.get("HTTP_X_AMZ_TARGET") or "query"] += 1
    return app(environ, start_response)

import logging
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = make_server("127.0.0.1", 0, counting, threaded=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
print(server.server_port, flush=True)
for line in sys.stdin:
    with lock:
        print(json.dumps(dict(counts)), flush=True)
        if line.strip() == "reset":
            counts.clear()
"""


class Moto:
    """moto's server in a child process; `counts()` returns the requests since `reset()`."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", MOTO_CHILD, str(REPO / "tests")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, **CREDENTIALS),
        )
        assert self.process.stdout is not None
        self.endpoint = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def _ask(self, command: str) -> Counter[str]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return Counter(json.loads(self.process.stdout.readline()))

    def reset(self) -> None:
        self._ask("reset")

    def counts(self) -> Counter[str]:
        return self._ask("counts")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def deploy(moto: Moto, count: int) -> dict[str, Any]:
    """A standard queue with a DLQ and a state table, filled with `count` messages of one run;
    the environment's config."""
    import boto3

    from raasctl.queues.sqs import SqsQueue
    from raasctl.state.dynamodb import DynamoState, create_table

    os.environ.update(CREDENTIALS)
    sqs = boto3.client("sqs", endpoint_url=moto.endpoint)
    dynamodb = boto3.client("dynamodb", endpoint_url=moto.endpoint)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}
    url = sqs.create_queue(
        QueueName=name,
        Attributes={"RedrivePolicy": json.dumps(policy), "VisibilityTimeout": "60"},
    )["QueueUrl"]
    create_table(dynamodb, name)
    queue, state = SqsQueue(sqs, url, dlq_url=dlq), DynamoState(dynamodb, name)
    enqueue(queue, state, f"bench-{name}", count, "bench")
    return {
        "aws": {"region": "us-east-1", "endpoint_url": moto.endpoint},
        "queue": {"kind": "sqs", "url": url, "dlq_url": dlq, "wait_time_s": 1},
        "state": {"kind": "dynamodb", "table": name},
    }


def scenario(
    moto: Moto, folder: Path, label: str, count: int, latency_s: float, *args: str
) -> dict[str, Any]:
    env = deploy(moto, count)
    with CallbackServer(latency_s=latency_s) as server:
        env["sink"] = {"kind": "http", "base_url": server.base_url, "token": "env:CALLBACK_TOKEN"}
        config = folder / f"{label}.yaml"
        config.write_text(json.dumps({"default_env": "bench", "environments": {"bench": env}}))
        moto.reset()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        summary = run_worker(
            config,
            "--until-empty",
            "--concurrency",
            "16",
            *args,
            env=dict(os.environ, CALLBACK_TOKEN=server.token, **CREDENTIALS),
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        starts = server.starts()
        applied, twice = server.applied_keys(), server.twice_applied()
    requests = moto.counts()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    sqs = sum(n for target, n in requests.items() if target.startswith("AmazonSQS"))
    dynamodb = {
        target.split(".", 1)[1]: n
        for target, n in requests.items()
        if target.startswith("DynamoDB")
    }
    # Each entry applied once; a message SQS delivers again is found applied and deleted.
    assert len(applied) == count and not twice, (len(applied), twice[:5])
    assert summary["succeeded"] >= count and summary["failed"] == 0, summary
    return {
        "rate": steady_rate(starts),
        "max_1s": max_in_window(starts),
        "span_21": tightest_span(sorted(starts), 21),
        "sqs_per_msg": sqs / count,
        "state_per_msg": sum(dynamodb.values()) / count,
        "state_actions": {action: round(n / count, 3) for action, n in dynamodb.items()},
        "msg_per_cpu_s": count / cpu if cpu else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--only", nargs="+", choices=["plain", "rated"], default=["plain", "rated"])
    args = parser.parse_args(argv)
    print(f"load average at the start: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    ok = True
    moto = Moto()
    try:
        with tempfile.TemporaryDirectory(prefix="raasctl-bench-") as tmp:
            folder = Path(tmp)
            if "plain" in args.only:
                r = scenario(moto, folder, "plain", args.messages, 0.02)
                good = r["sqs_per_msg"] <= 0.25 and r["state_per_msg"] <= 1.2
                ok &= good
                print(
                    f"(plain) {args.messages} msgs, L=20 ms, C=16: {r['rate']:7.1f} msg/s   "
                    f"SQS {r['sqs_per_msg']:.3f} req/msg (<= 0.25)   "
                    f"DynamoDB {r['state_per_msg']:.3f} req/msg (<= 1.2) {r['state_actions']}   "
                    f"{r['msg_per_cpu_s']:,.0f} msg per worker CPU-s   "
                    f"{'PASS' if good else 'MISS'}"
                )
            if "rated" in args.only:
                r = scenario(moto, folder, "rated", 400, 0.05, "--rate", "20")
                good = r["sqs_per_msg"] <= 0.5 and r["rate"] >= 0.95 * 20 and r["max_1s"] <= 20
                ok &= good
                print(
                    f"(rated) 400 msgs, --rate 20, L=50 ms: {r['rate']:5.2f} msg/s "
                    f"({r['rate'] / 20:.1%}, >= 95 %)   most in any 1 s: {r['max_1s']} (<= 20; the "
                    f"closest 21 starts {r['span_21']:.3f} s apart)   "
                    f"SQS {r['sqs_per_msg']:.3f} req/msg (<= 0.5)   "
                    f"DynamoDB {r['state_per_msg']:.3f} req/msg {r['state_actions']}   "
                    f"{r['msg_per_cpu_s']:,.0f} msg per worker CPU-s   "
                    f"{'PASS' if good else 'MISS'}"
                )
    finally:
        moto.close()
    print(f"load average at the end: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
