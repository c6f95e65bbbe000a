"""Benchmark: the HTTP sink's CPU a call, against the general HTTP clients it could use.

    .venv/bin/python benchmarks/sink_cpu.py [--calls N]

Each client POSTs the same entry (the same headers and JSON body) `--calls` times over one
keep-alive connection to the tests' callback server (answering at once, in a child process),
and the calling thread's CPU time is divided by the calls. Figures from one run, so the
ratios hold on a noisy machine:

- `HttpSink.apply`: the sink as the worker calls it (its own HTTP/1.1 client, `http_wire`);
- urllib3 `PoolManager.urlopen`: what the sink spoke through before;
- `http.client`: the standard library's client on one connection.

Sixteen worker slots whose answers come back together wait for each other's CPU, so this
cost, times the slots, is what a freed slot waits before its next request goes out.
Target: the sink at most half urllib3's CPU a call.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import urllib3  # noqa: E402
from callback_server import CallbackServer  # noqa: E402

from raasctl.envelope import Envelope, canonical_json  # noqa: E402
from raasctl.sinks.http import HttpSink  # noqa: E402

TOKEN = "bench-sink-token-0123456789"
ENTRY = Envelope.new(
    cron="clientDepositUpdate",
    run_id="bench-run",
    key="clientDepositUpdate:D-1:0123456789abcdef",
    payload={
        "deposit_id": "D-1",
        "customer_id": "C-42",
        "amount": "1234.56",
        "currency": "USD",
        "deposit_date": "2026-11-30",
        "memo": "x" * 200,
    },
)
HEADERS = {
    "Authorization": f"Bearer {TOKEN}",
    "Idempotency-Key": ENTRY.key,
    "X-Raasctl-Run-Id": ENTRY.run_id,
    "Content-Type": "application/json",
    "Accept": "application/json",
    "User-Agent": "raasctl-bench",
}


def serve(port_out: multiprocessing.Queue[int], stop: multiprocessing.Event) -> None:  # type: ignore[type-arg]
    with CallbackServer(token=TOKEN) as server:
        port_out.put(server.port)
        stop.wait()


def cpu_per_call(call: Callable[[], object], calls: int) -> float:
    """Microseconds of this thread's CPU a call, after a warm-up."""
    for _ in range(min(200, calls)):
        call()
    started = time.thread_time()
    for _ in range(calls):
        call()
    return (time.thread_time() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()

    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    stop = multiprocessing.Event()
    child = multiprocessing.Process(target=serve, args=(ports, stop), daemon=True)
    child.start()
    port = ports.get(timeout=30)
    base = f"http://127.0.0.1:{port}/cron-jobs"
    path = "/cron-jobs/clientDepositUpdate"
    body = canonical_json(ENTRY.payload).encode()

    sink = HttpSink(base, TOKEN)
    pool = urllib3.PoolManager(maxsize=1)
    connection = http.client.HTTPConnection("127.0.0.1", port)

    def via_urllib3() -> object:
        return pool.urlopen(
            "POST", base + "/clientDepositUpdate", body=body, headers=HEADERS, retries=False
        ).status

    def via_http_client() -> object:
        connection.request("POST", path, body=body, headers=HEADERS)
        answer = connection.getresponse()
        answer.read()
        return answer.status

    try:
        figures = {
            "HttpSink.apply (http_wire)": cpu_per_call(lambda: sink.apply(ENTRY), args.calls),
            "urllib3 PoolManager.urlopen": cpu_per_call(via_urllib3, args.calls),
            "http.client": cpu_per_call(via_http_client, args.calls),
        }
    finally:
        sink.close()
        connection.close()
        stop.set()
        child.join(timeout=10)

    ours = figures["HttpSink.apply (http_wire)"]
    for name, micros in figures.items():
        print(f"{name:30} {micros:7.1f} µs CPU a call   {micros / ours:5.2f}× the sink's")
    ratio = ours / figures["urllib3 PoolManager.urlopen"]
    print(f"sink / urllib3: {ratio:.2f}   target <= 0.50   {'PASS' if ratio <= 0.5 else 'MISS'}")


if __name__ == "__main__":
    main()
