"""AWS sessions and clients for one environment, with the credential rules of DESIGN.md.

- Explicit developer credentials (the environment's `aws.profile`) are used only on a
  developer's machine. On a deployed machine (SSM_ENVIRONMENT_PREFIX set) they are ignored and
  the default chain (the machine's role) is used; a log line says so.
- A temporary key (ASIA...) without a session token is refused before any call.
- What botocore resolved (its provider, the key's kind) is read from the session, never by
  calling a service: `access check` reports it, and the ASIA rule needs it before any call.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from raasctl.codes import ErrorCode, InfoCode
from raasctl.config import AwsConfig
from raasctl.errors import ConfigError
from raasctl.logs import event
from raasctl.redaction import register_secret
from raasctl.secrets import SSM_PREFIX_VAR

# boto3 and botocore are imported when the first session is made, not with this module:
# they take a large share of a process's start-up, and embedded environments never use them.
if TYPE_CHECKING:
    import boto3
    import botocore.config
    from botocore.credentials import Credentials


@cache
def _client_config() -> botocore.config.Config:
    import botocore.config

    return botocore.config.Config(
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=5,
        read_timeout=60,  # above SQS's 20 s long poll
        max_pool_connections=64,
    )


LONG_TERM = "long-term"
TEMPORARY = "temporary"

# Providers whose credentials live in a file or the process environment: the user wrote the
# key pair (and token) there, so a missing token is a mistake this module must catch.
_STATIC_SOURCES = frozenset(
    {
        "env",
        "explicit",
        "shared-credentials-file",
        "config-file",
        "boto-config",
        "ec2-credentials-file",
    }
)

# Providers that read a named profile (the environment's, AWS_PROFILE's or "default").
_PROFILE_SOURCES = frozenset(
    {"shared-credentials-file", "config-file", "assume-role", "sso", "custom-process", "login"}
)


def on_deployed_machine() -> bool:
    return bool(os.environ.get(SSM_PREFIX_VAR))


@dataclass(frozen=True)
class CredentialInfo:
    source: str | None  # botocore's method: env, shared-credentials-file, iam-role, sso, ...
    key_kind: str | None  # "long-term" (AKIA), "temporary" (ASIA), or None when unknown
    session_token: bool
    profile_ignored: bool  # the environment's profile was set aside on a deployed machine
    profile: str | None = None  # the profile botocore read, when one was used

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "key_kind": self.key_kind,
            "session_token": self.session_token,
            "profile_ignored": self.profile_ignored,
            "profile": self.profile,
        }


def key_kind(access_key: str) -> str | None:
    if access_key.startswith("ASIA"):
        return TEMPORARY
    if access_key.startswith("AKIA"):
        return LONG_TERM
    return None


def _not_yet_fetched(credentials: Credentials) -> bool:
    """True for credentials botocore would have to fetch (STS, SSO) before reading them.

    assume-role, sso and web-identity credentials are deferred: reading the key would make
    that call now, only to describe it. Those providers issue session credentials only.
    """
    from botocore.credentials import RefreshableCredentials

    return isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed()


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
    def region(self) -> str:
        return self.config.region

    @property
    def secure_transport(self) -> bool:
        """Whether requests go over TLS (false only for an http:// endpoint_url, e.g. moto)."""
        return not (self.config.endpoint_url or "").startswith("http://")

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
        import boto3
        from botocore.exceptions import ProfileNotFound

        try:
            return boto3.Session(profile_name=profile, region_name=self.config.region)
        except ProfileNotFound:
            raise ConfigError(
                f"AWS profile {profile!r} of environment {self.env_name!r} not found",
                code=ErrorCode.CREDENTIALS_MISSING,
            ) from None

    def credential_info(self) -> CredentialInfo:
        """Describes the credentials botocore resolved; refuses ASIA keys without a token.

        No service is called: the chain is resolved as any client would resolve it (which, for
        a machine role, reads the instance or container metadata once), and deferred
        credentials (assume-role, sso, web identity) are described without being fetched.
        """
        session = self.session
        credentials = session.get_credentials()
        if credentials is None:
            return CredentialInfo(None, None, False, self.profile_ignored)
        method = credentials.method
        profile = session.profile_name if method in _PROFILE_SOURCES else None
        if _not_yet_fetched(credentials):
            return CredentialInfo(method, TEMPORARY, True, self.profile_ignored, profile)
        frozen = credentials.get_frozen_credentials()
        if frozen.secret_key:
            register_secret(frozen.secret_key)
        if frozen.token:
            register_secret(frozen.token)
        kind = key_kind(frozen.access_key or "")
        if kind == TEMPORARY and not frozen.token:
            raise ConfigError(
                f"environment {self.env_name!r}: temporary AWS key (ASIA...) from {method} "
                f"has no session token: {_token_hint(method, profile)}",
                code=ErrorCode.CREDENTIALS_INVALID,
            )
        return CredentialInfo(method, kind, bool(frozen.token), self.profile_ignored, profile)

    def ca_bundle(self) -> str:
        """The CA bundle botocore verifies TLS against (the profile's or AWS_CA_BUNDLE, else
        its own)."""
        from botocore.httpsession import get_cert_path

        configured = self.session._session.get_config_variable("ca_bundle")
        return str(configured or get_cert_path(True))

    def client(self, service: str) -> Any:
        with self._lock:
            cached = self._clients.get(service)
        if cached is not None:
            return cached
        session = self.session
        self.credential_info()  # the ASIA rule, before any client (and so any call) exists
        client = session.client(
            service,
            region_name=self.config.region,
            endpoint_url=self.config.endpoint_url,
            config=_client_config(),
        )
        with self._lock:
            return self._clients.setdefault(service, client)


def _token_hint(method: str, profile: str | None) -> str:
    if method in ("shared-credentials-file", "config-file") and profile:
        return (
            f"add aws_session_token to profile {profile!r} (or export AWS_SESSION_TOKEN with "
            "the key that issued it)"
        )
    if method in _STATIC_SOURCES:
        return "set AWS_SESSION_TOKEN together with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    return "set AWS_SESSION_TOKEN or use the profile that issued the key"
