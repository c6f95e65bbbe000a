"""The protected-environment guard: operations that would flood or empty a production queue
(load-test messages, purge, redrive) refuse a protected environment unless told otherwise.

The operations call `refuse_protected` themselves, so the guard holds for every caller: the
CLI, a benchmark or a script that imports raasctl. The CLI adds its confirmation on top.
"""

from __future__ import annotations

from raasctl.codes import ErrorCode
from raasctl.config import EnvironmentConfig
from raasctl.errors import ConfigError


class ProtectedEnvironment(ConfigError):
    """A guarded operation on a protected environment without `allow_protected` (exit 2)."""

    default_code = ErrorCode.PROTECTED_ENV


def refuse_protected(
    env_name: str, env: EnvironmentConfig, operation: str, *, allow_protected: bool
) -> None:
    """Raise ProtectedEnvironment when `env` is protected and `allow_protected` is not set.

    `operation` names what is refused in the message, e.g. "queue purge".
    """
    if env.protected and not allow_protected:
        raise ProtectedEnvironment(
            f"environment {env_name} is protected: {operation} refuses it "
            "(pass --allow-protected to override)"
        )
