"""The worker package: one module per role around one pure decision table.

- `decision`: what happens to one message now (pure: no threads, no I/O, no clock);
- `poller`, `slots` (with `handler`), `settler`, `heartbeat`: the roles;
- `lifecycle`: stop and failure state; `core`: the `Worker` that starts and stops the roles;
- `options`, `results`, `messages`, `served`: the data they share.
"""

from raasctl.runs import run_progress
from raasctl.worker.core import Worker, check_cron_filter, open_worker
from raasctl.worker.decision import Outcome, backoff_s, unfixable
from raasctl.worker.lifecycle import StopReason
from raasctl.worker.options import EMBEDDED_WAIT_TIME_S, WorkerOptions, worker_options
from raasctl.worker.results import WorkerResult, WorkerStats, log_stats

__all__ = [
    "EMBEDDED_WAIT_TIME_S",
    "Outcome",
    "StopReason",
    "Worker",
    "WorkerOptions",
    "WorkerResult",
    "WorkerStats",
    "backoff_s",
    "check_cron_filter",
    "log_stats",
    "open_worker",
    "run_progress",
    "unfixable",
    "worker_options",
]
