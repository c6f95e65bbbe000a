"""The worker's settings, and how they come from an environment's config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raasctl.queues.base import MAX_BATCH

if TYPE_CHECKING:
    from raasctl.config import EnvironmentConfig

EMBEDDED_WAIT_TIME_S = 1.0  # the SQLite queue's long poll: idle waiting costs nothing there


@dataclass(frozen=True)
class WorkerOptions:
    concurrency: int = 8
    rate_per_s: float | None = None  # None: unlimited
    # "process": the rate is this worker's own; "global": shared by the environment's
    # workers (raasctl/globalrate.py).
    rate_scope: str = "process"
    registry_refresh_s: float = 10.0  # how often the worker refreshes its registry record
    crons: frozenset[str] = frozenset()  # empty: every cron
    until_empty: bool = False
    max_messages: int | None = None
    max_runtime_s: float | None = None
    visibility_timeout_s: int = 60
    wait_time_s: float = 20.0  # long poll
    backoff_base_s: float = 2.0
    backoff_cap_s: float = 60.0
    shutdown_timeout_s: float = 30.0  # how long in-flight work may finish after a stop
    stats_interval_s: float | None = 30.0  # None: no periodic stats
    # A receive that brought only other crons' messages waits this long before the next,
    # so a filtered worker does not spin on (and burn the receive count of) foreign messages.
    foreign_pause_s: float = 1.0
    # Log RAAS_WORKER_IDLE once per idle spell; off where a progress line says it instead.
    log_idle: bool = True
    # Messages held beyond the busy slots, waiting under the heartbeat for the next free
    # slot instead of every freed slot waiting out a receive. None: as many as the slots
    # (at least one receive's batch), since slots that started together finish together and
    # each then wants its next message at once; a held message waits about one apply.
    read_ahead: int | None = None
    # Serve Prometheus metrics on metrics_host:metrics_port (None: not served; 0: any port).
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.visibility_timeout_s < 1:
            raise ValueError("visibility_timeout_s must be at least 1")
        if self.read_ahead is not None and self.read_ahead < 0:
            raise ValueError("read_ahead must not be negative")
        if self.rate_scope not in ("process", "global"):
            raise ValueError("rate_scope must be process or global")

    @property
    def held_ahead(self) -> int:
        """How many messages may wait beyond the busy slots (see `read_ahead`)."""
        if self.read_ahead is not None:
            return self.read_ahead
        return max(MAX_BATCH, self.concurrency)


def worker_options(env: EnvironmentConfig, **overrides: Any) -> WorkerOptions:
    """Options from the environment's config (concurrency, rate_limit, the queue's visibility
    timeout and long poll), overridden by whatever the caller passes that is not None."""
    queue = env.queue
    base: dict[str, Any] = {
        "concurrency": env.concurrency,
        "rate_per_s": env.rate_limit,
        "rate_scope": env.rate_limit_scope,
        "visibility_timeout_s": queue.visibility_timeout_s,
        "wait_time_s": queue.wait_time_s if queue.kind == "sqs" else EMBEDDED_WAIT_TIME_S,
    }
    base.update({name: value for name, value in overrides.items() if value is not None})
    return WorkerOptions(**base)
