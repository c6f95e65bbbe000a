"""AWS sessions and clients for one environment, with the credential rules of DESIGN.md.

- Explicit developer credentials (the environment's `aws.profile`) are used only on a
  developer's machine. On a deployed machine (SSM_ENVIRONMENT_PREFIX set) they are ignored and
  the default chain (the machine's role) is used; a log line says so.
- A temporary key (ASIA...) without a session token is refused before any call.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
from botocore.exceptions import ProfileNotFound

from raasctl.codes import ErrorCode, InfoCode
from raasctl.config import AwsConfig
from raasctl.errors import ConfigError
from raasctl.logs import event, register_secret
from raasctl.secrets import SSM_PREFIX_VAR

_CLIENT_CONFIG = botocore.config.Config(
    retries={"mode": "standard", "max_attempts": 4},
    connect_timeout=5,
    read_timeout=60,  # above SQS's 20 s long poll
    max_pool_connections=64,
)


def on_deployed_machine() -> bool:
    return bool(os.environ.get(SSM_PREFIX_VAR))


@dataclass(frozen=True)
class CredentialInfo:
    source: str | None  # botocore's method: env, shared-credentials-file, iam-role, sso, ...
    key_kind: str | None  # "long-term" (AKIA), "temporary" (ASIA), or None when unknown
    session_token: bool
    profile_ignored: bool  # the environment's profile was set aside on a deployed machine

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "key_kind": self.key_kind,
            "session_token": self.session_token,
            "profile_ignored": self.profile_ignored,
        }


def key_kind(access_key: str) -> str | None:
    if access_key.startswith("ASIA"):
        return "temporary"
    if access_key.startswith("AKIA"):
        return "long-term"
    return None


class AwsClients:
    """Builds one boto3 session lazily and caches a client per service (thread-safe)."""

    def __init__(self, env_name: str, config: AwsConfig) -> None:
        self.env_name = env_name
        self.config = config
        self._session: boto3.Session | None = None
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.profile_ignored = False

    @property
    def session(self) -> boto3.Session:
        with self._lock:
            if self._session is None:
                self._session = self._make_session()
            return self._session

    def _make_session(self) -> boto3.Session:
        profile = self.config.profile
        if profile and on_deployed_machine():
            self.profile_ignored = True
            event(
                InfoCode.CREDENTIALS_DEFAULT_CHAIN,
                "deployed machine: ignoring the environment's developer profile, using the "
                "default credential chain (the machine's role)",
                level=logging.WARNING,
                env=self.env_name,
                profile=profile,
            )
            profile = None
        try:
            return boto3.Session(profile_name=profile, region_name=self.config.region)
        except ProfileNotFound:
            raise ConfigError(
                f"AWS profile {profile!r} of environment {self.env_name!r} not found",
                code=ErrorCode.CREDENTIALS_MISSING,
            ) from None

    def credential_info(self) -> CredentialInfo:
        """Reads the credentials botocore resolved; refuses ASIA keys without a token."""
        credentials = self.session.get_credentials()
        if credentials is None:
            return CredentialInfo(None, None, False, self.profile_ignored)
        frozen = credentials.get_frozen_credentials()
        if frozen.secret_key:
            register_secret(frozen.secret_key)
        if frozen.token:
            register_secret(frozen.token)
        kind = key_kind(frozen.access_key or "")
        if kind == "temporary" and not frozen.token:
            raise ConfigError(
                f"environment {self.env_name!r}: temporary AWS key (ASIA...) from "
                f"{credentials.method} has no session token; set AWS_SESSION_TOKEN or use "
                "the profile that issued it",
                code=ErrorCode.CREDENTIALS_INVALID,
            )
        return CredentialInfo(credentials.method, kind, bool(frozen.token), self.profile_ignored)

    def client(self, service: str) -> Any:
        with self._lock:
            cached = self._clients.get(service)
        if cached is not None:
            return cached
        session = self.session
        self.credential_info()  # the ASIA rule, before any call
        client = session.client(
            service,  # type: ignore[call-overload]
            region_name=self.config.region,
            endpoint_url=self.config.endpoint_url,
            config=_CLIENT_CONFIG,
        )
        with self._lock:
            return self._clients.setdefault(service, client)
