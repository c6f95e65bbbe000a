"""Secret references (`env:NAME`, `ssm:/path`), resolved when first needed, never shown."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from raasctl.aws_errors import AWS_FAILURES, classify
from raasctl.codes import ErrorCode
from raasctl.errors import ConfigError, RaasctlError, RuntimeFailure
from raasctl.redaction import register_secret

SSM_PREFIX_VAR = "SSM_ENVIRONMENT_PREFIX"


def ssm_parameter_name(path: str) -> str:
    """`ssm:/workday/password` with SSM_ENVIRONMENT_PREFIX=/work-uat: /work-uat/workday/password."""
    prefix = os.environ.get(SSM_PREFIX_VAR, "").rstrip("/")
    return f"{prefix}{path}" if prefix else path


class SecretResolver:
    """Resolves and caches references; every value is registered for log redaction."""

    def __init__(
        self, ssm_client: Callable[[], Any], *, fields: Mapping[str, str] | None = None
    ) -> None:
        self._ssm_client = ssm_client
        self._fields = dict(fields or {})  # reference -> the config field that holds it
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, ref: str) -> str:
        with self._lock:
            if ref not in self._cache:
                try:
                    value = self._resolve(ref)
                except RaasctlError as exc:
                    field = self._fields.get(ref)
                    if field:
                        exc.message = f"{field}: {exc.message}"
                    raise
                register_secret(value)
                self._cache[ref] = value
            return self._cache[ref]

    def _resolve(self, ref: str) -> str:
        kind, _, name = ref.partition(":")
        if kind == "env":
            value = os.environ.get(name)
            if value is None:
                raise ConfigError(
                    f"environment variable {name} is not set (secret reference {ref})",
                    code=ErrorCode.SECRET_UNRESOLVED,
                )
            return value
        if kind == "ssm":
            return self._from_ssm(ssm_parameter_name(name))
        # Plain values are allowed only where the config allows them (e.g. a username).
        return ref

    def _from_ssm(self, parameter: str) -> str:
        try:
            response = self._ssm_client().get_parameter(Name=parameter, WithDecryption=True)
        except AWS_FAILURES as exc:
            failure = classify(exc, service="ssm", action="ssm:GetParameter", resource=parameter)
            # A parameter that is not there is a reference to fix in the config (exit 2).
            kind = ConfigError if failure.exit_code == 2 else RuntimeFailure
            raise failure.error(kind) from None
        return str(response["Parameter"]["Value"])
