"""The worker's Prometheus metrics (`worker --metrics-port`), served with prometheus_client.

Each worker has a registry of its own (not the library's global one), so several workers in
one process, as in tests, never share counters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from raasctl.codes import ErrorCode
from raasctl.errors import UsageError

# Seconds: from a local ledger's 1 ms to a slow downstream's minute.
SINK_LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "raasctl_messages",
            "Messages handled, by outcome (succeeded, failed, retries, dead_lettered, "
            "superseded) and cron.",
            ("outcome", "cron"),
            registry=self.registry,
        )
        self.sink_latency = Histogram(
            "raasctl_sink_latency_seconds",
            "Duration of the sink calls (the accounting callback or the ledger), by cron.",
            ("cron",),
            buckets=SINK_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "raasctl_in_flight", "Messages being handled now.", registry=self.registry
        )
        self.limiter_waits = Counter(
            "raasctl_rate_limiter_waits",
            "Starts the rate limiter held back.",
            registry=self.registry,
        )
        self.limiter_wait_seconds = Counter(
            "raasctl_rate_limiter_wait_seconds",
            "Time starts spent waiting for the rate limiter.",
            registry=self.registry,
        )
        self.port: int | None = None  # once served
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def watch_in_flight(self, in_flight: Callable[[], int]) -> None:
        """Read the in-flight count at each scrape."""
        self.in_flight.set_function(lambda: float(in_flight()))

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on host:port (port 0: any free port) from a daemon thread; the
        port it listens on."""
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise UsageError(
                f"--metrics-port: cannot listen on {host}:{port}: {exc.strerror or exc}",
                code=ErrorCode.USAGE,
            ) from None
        self.port = int(self._server.server_port)
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
