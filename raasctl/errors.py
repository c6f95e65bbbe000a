"""One exception hierarchy. The CLI turns each into a one-line message and its exit code.

Exit codes (DESIGN.md): 0 success; 1 runtime failure; 2 usage or configuration error;
3 a check found a problem or a run finished with failed entries.
"""

from raasctl.codes import ErrorCode
from raasctl.redaction import redact


class RaasctlError(Exception):
    """An expected failure: shown as one line, never as a traceback."""

    exit_code = 1
    default_code = ErrorCode.AWS_FAILED

    def __init__(
        self, message: str, *, code: ErrorCode | None = None, exit_code: int | None = None
    ) -> None:
        # Scrubbed at birth: an error's text is shown, logged, and stored (a run's error, a
        # DLQ reason), and a service may have echoed a secret into it.
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        if exit_code is not None:  # e.g. a QueueError for missing credentials exits 2
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class RuntimeFailure(RaasctlError):
    """A service failed; nothing or not all was done (exit 1)."""

    exit_code = 1


class ConfigError(RaasctlError):
    """Usage or configuration error (exit 2)."""

    exit_code = 2
    default_code = ErrorCode.CONFIG_INVALID


class UsageError(ConfigError):
    default_code = ErrorCode.USAGE


class CheckFailed(RaasctlError):
    """A check found a problem (exit 3)."""

    exit_code = 3
    default_code = ErrorCode.CHECK_FAILED


class SourceError(RuntimeFailure):
    default_code = ErrorCode.SOURCE_FAILED


class QueueError(RuntimeFailure):
    default_code = ErrorCode.QUEUE_FAILED


class StateError(RuntimeFailure):
    default_code = ErrorCode.STATE_FAILED


class SinkError(RuntimeFailure):
    """Applying an entry failed. `retryable` decides between backoff and the DLQ;
    `stops_worker` says that no entry can be applied until an operator acts (the callback
    moved): the message is released and the worker stops (exit 1)."""

    default_code = ErrorCode.SINK_FAILED

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
        stops_worker: bool = False,
        code: ErrorCode | None = None,
        exit_code: int | None = None,
    ) -> None:
        super().__init__(message, code=code, exit_code=exit_code)
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.stops_worker = stops_worker
