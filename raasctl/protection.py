"""The protected-environment guard: operations that would flood or empty a production queue
(load-test messages, purge, redrive) refuse a protected environment unless told otherwise.

Protection follows the queue, not the name: an environment is protected when it is marked
so, or when a protected environment uses the same queue (SQS URL or embedded SQLite file), so
a second, unprotected environment pointed at prod's queue cannot purge it.

The operations call `refuse_protected` themselves, so the guard holds for every caller: the
CLI, a benchmark or a script that imports raasctl. The CLI adds its confirmation on top.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raasctl.codes import ErrorCode
from raasctl.config import Config, EnvironmentConfig, embedded_db_path
from raasctl.errors import ConfigError

if TYPE_CHECKING:
    from raasctl.runtime import Runtime


class ProtectedEnvironment(ConfigError):
    """A guarded operation on a protected environment without `allow_protected` (exit 2)."""

    default_code = ErrorCode.PROTECTED_ENV


def queue_location(env_name: str, env: EnvironmentConfig) -> str:
    """What identifies an environment's queue: its SQS URL, or its SQLite file's full path."""
    queue = env.queue
    if queue.kind == "sqs":
        return queue.url.rstrip("/")
    return str(embedded_db_path(env_name, queue.path).resolve())


def protection(config: Config, env_name: str, env: EnvironmentConfig) -> str | None:
    """Why `env` is protected, or None: marked so, or sharing a protected one's queue."""
    if env.protected:
        return "it is marked protected"
    location = queue_location(env_name, env)
    for other_name, other in config.environments.items():
        shared = other_name != env_name and queue_location(other_name, other) == location
        if shared and other.protected:
            return f"it uses the queue of protected environment {other_name} ({location})"
    return None


def refuse_protected(runtime: Runtime, operation: str, *, allow_protected: bool) -> None:
    """Raise ProtectedEnvironment when the runtime's environment is protected and
    `allow_protected` is not set. `operation` names what is refused, e.g. "queue purge"."""
    why = protection(runtime.config, runtime.env_name, runtime.env)
    if why is not None and not allow_protected:
        raise ProtectedEnvironment(
            f"environment {runtime.env_name} is protected ({why}): {operation} refuses it "
            "(pass --allow-protected to override)"
        )
