"""Configuration: pydantic models (unknown keys rejected) and the YAML loader.

Lookup order: --config, RAASCTL_CONFIG, ./raasctl.yaml, then the built-in default, which
defines only the embedded `local` environment so raasctl works with no file, from any folder
(its fixtures ship inside the package). Relative paths in a file resolve against the file's
folder; how a file's problems are reported is config_errors.py's job.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from raasctl.codes import ErrorCode
from raasctl.config_errors import ConfigInvalid, Problem, did_you_mean, problems_from
from raasctl.errors import ConfigError

DEFAULT_CONFIG_FILE = "raasctl.yaml"

# The fixtures ship inside the package, so the built-in default works from any folder and
# from an installed wheel (package data, declared in pyproject.toml).
PACKAGED_FIXTURES = Path(str(files("raasctl").joinpath("fixtures")))

# Secrets are never written in the file: `env:VAR_NAME` or `ssm:/parameter/path`.
SECRET_REF = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|ssm:/\S+)$")


def _secret_ref(value: str) -> str:
    if not SECRET_REF.match(value):
        raise ValueError("must be a reference, env:VAR_NAME or ssm:/parameter/path, not a value")
    return value


def _maybe_secret_ref(value: str) -> str:
    if value.startswith(("env:", "ssm:")):
        return _secret_ref(value)
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- sources


class FixturesSource(Strict):
    kind: Literal["fixtures"]
    path: Path = PACKAGED_FIXTURES / "raas"


class BasicAuth(Strict):
    kind: Literal["basic"]
    username: str
    password: str

    _username = field_validator("username")(_maybe_secret_ref)
    _password = field_validator("password")(_secret_ref)


class OAuthAuth(Strict):
    kind: Literal["oauth"]
    client_id: str
    client_secret: str
    refresh_token: str

    _client_id = field_validator("client_id")(_maybe_secret_ref)
    _secrets = field_validator("client_secret", "refresh_token")(_secret_ref)


class WorkdaySource(Strict):
    kind: Literal["workday"]
    base_url: str
    tenant: str
    owner: str
    auth: Annotated[BasicAuth | OAuthAuth, Field(discriminator="kind")]
    connect_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(120.0, gt=0)
    # The whole fetch, retries included: Workday itself ends a report request after ~30 min.
    fetch_timeout_s: float = Field(1800.0, gt=0)
    retries: int = Field(4, ge=0)

    @field_validator("base_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https://")
        return value.rstrip("/")


# ---------------------------------------------------------------- queues


class SqliteQueueConfig(Strict):
    kind: Literal["sqlite"]
    path: Path | None = None  # default <state dir>/<env>.db
    fifo: bool = True
    max_receive_count: int = Field(5, ge=1)
    visibility_timeout_s: int = Field(60, ge=1, le=43200)


class SqsQueueConfig(Strict):
    kind: Literal["sqs"]
    url: str
    dlq_url: str | None = None  # default: the queue's RedrivePolicy target
    visibility_timeout_s: int = Field(60, ge=1, le=43200)
    wait_time_s: int = Field(20, ge=0, le=20)
    # The worker's receives and deletes skip botocore's request machinery (sqs_wire.py);
    # false sends them through botocore too (for botocore's own instrumentation, say).
    wire: bool = True

    @field_validator("url", "dlq_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be a queue URL (https://sqs.<region>.amazonaws.com/...)")
        return value


# ---------------------------------------------------------------- state and sinks


class SqliteStateConfig(Strict):
    kind: Literal["sqlite"]
    path: Path | None = None


class DynamoStateConfig(Strict):
    kind: Literal["dynamodb"]
    table: str


class SqliteSinkConfig(Strict):
    kind: Literal["sqlite"]
    path: Path | None = None


class HttpSinkConfig(Strict):
    kind: Literal["http"]
    base_url: str
    token: str
    timeout_s: float = Field(30.0, gt=0)
    # A longer Retry-After is cut to this (and logged): a message must not hide for hours.
    max_retry_after_s: float = Field(900.0, gt=0)

    _token = field_validator("token")(_secret_ref)


# ---------------------------------------------------------------- environments


class AwsConfig(Strict):
    region: str = "us-east-1"
    endpoint_url: str | None = None
    profile: str | None = None  # explicit developer credentials: developer machines only


class EnvironmentConfig(Strict):
    deployed: bool = False
    protected: bool = False
    aws: AwsConfig = AwsConfig()
    source: Annotated[FixturesSource | WorkdaySource, Field(discriminator="kind")] = FixturesSource(
        kind="fixtures"
    )
    queue: Annotated[SqliteQueueConfig | SqsQueueConfig, Field(discriminator="kind")] = (
        SqliteQueueConfig(kind="sqlite")
    )
    state: Annotated[SqliteStateConfig | DynamoStateConfig, Field(discriminator="kind")] = (
        SqliteStateConfig(kind="sqlite")
    )
    sink: Annotated[SqliteSinkConfig | HttpSinkConfig, Field(discriminator="kind")] = (
        SqliteSinkConfig(kind="sqlite")
    )
    concurrency: int = Field(8, ge=1, le=512)
    rate_limit: float | None = Field(None, gt=0)  # messages per second; None = unlimited
    # process: each worker's own limit; global: one limit shared by the environment's workers
    rate_limit_scope: Literal["process", "global"] = "process"


# ---------------------------------------------------------------- crons

_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """'30m', '6h', '1d', '2w'."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30m, 6h, 1d or 2w")
    return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})


class CronConfig(Strict):
    report: str | None = None
    lookback: str = "1d"
    schedule: str | None = None
    timezone: str = "UTC"
    columns: dict[str, str] = Field(default_factory=dict)  # our column name -> report alias

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is not None:
            from croniter import croniter

            if not croniter.is_valid(value):
                raise ValueError(f"{value!r} is not a cron expression")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def lookback_delta(self) -> timedelta:
        return parse_duration(self.lookback)


# Built-in per-cron settings. The paid and unpaid status crons are 30 minutes apart.
BUILTIN_CRONS: dict[str, CronConfig] = {
    "clientDepositUpdate": CronConfig(
        report="Client_Deposits", lookback="1d", schedule="15 * * * *"
    ),
    "clientBillPaidStatus": CronConfig(
        report="Client_Invoices_Paid", lookback="1d", schedule="0 * * * *"
    ),
    "clientBillUnpaidStatus": CronConfig(
        report="Client_Invoices_Unpaid", lookback="1d", schedule="30 * * * *"
    ),
    "lspBillUpdateStatus": CronConfig(
        report="Supplier_Invoice_Payments", lookback="1d", schedule="45 * * * *"
    ),
}
CRON_NAMES: tuple[str, ...] = tuple(BUILTIN_CRONS)


def unknown_cron_message(name: str) -> str:
    return f"unknown cron {name!r}{did_you_mean(name, CRON_NAMES)} (known: {', '.join(CRON_NAMES)})"


class Config(Strict):
    default_env: str = "local"
    environments: dict[str, EnvironmentConfig] = Field(
        default_factory=lambda: {"local": EnvironmentConfig()}
    )
    crons: dict[str, CronConfig] = Field(default_factory=dict)

    @field_validator("crons")
    @classmethod
    def _known_crons(cls, value: dict[str, CronConfig]) -> dict[str, CronConfig]:
        unknown = sorted(set(value) - set(CRON_NAMES))
        if unknown:
            raise ValueError(
                "; ".join(
                    f"unknown cron {name!r}{did_you_mean(name, CRON_NAMES)}" for name in unknown
                )
                + f" (known: {', '.join(CRON_NAMES)})"
            )
        return value

    def model_post_init(self, __context: Any) -> None:
        if self.default_env not in self.environments:
            raise ValueError(
                f"default_env {self.default_env!r} is not among environments "
                f"({', '.join(self.environments) or 'none'})"
            )

    def cron(self, name: str) -> CronConfig:
        """The cron's settings: built-in defaults, overridden field by field by the file."""
        if name not in BUILTIN_CRONS:
            raise ConfigError(unknown_cron_message(name), code=ErrorCode.UNKNOWN_CRON)
        base = BUILTIN_CRONS[name]
        override = self.crons.get(name)
        if override is None:
            return base
        return base.model_copy(update={f: getattr(override, f) for f in override.model_fields_set})

    def environment(self, name: str | None) -> tuple[str, EnvironmentConfig]:
        env_name = name or self.default_env
        if env_name not in self.environments:
            raise ConfigError(
                f"unknown environment {env_name!r}{did_you_mean(env_name, self.environments)} "
                f"(known: {', '.join(self.environments)})",
                code=ErrorCode.UNKNOWN_ENV,
            )
        return env_name, self.environments[env_name]


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    path: Path | None  # None for the built-in default (absolute otherwise)

    def environment(self, name: str | None) -> tuple[str, EnvironmentConfig]:
        """As Config.environment; without a file, an unknown name also says where the file
        was looked for (an operator typing --env prod on the wrong machine needs that)."""
        try:
            return self.config.environment(name)
        except ConfigError as exc:
            if self.path is not None or exc.code != ErrorCode.UNKNOWN_ENV:
                raise
            raise ConfigError(
                f"{exc.message}: no config file was found (looked for --config, "
                f"RAASCTL_CONFIG, then {Path(DEFAULT_CONFIG_FILE).absolute()}), so only the "
                "built-in local environment exists",
                code=ErrorCode.UNKNOWN_ENV,
            ) from None


def find_config_file(explicit: str | None) -> Path | None:
    """--config / RAASCTL_CONFIG (click passes both as `explicit`), then ./raasctl.yaml."""
    if explicit:
        path = Path(explicit).absolute()
        if not path.is_file():
            raise ConfigError(
                f"config file {explicit} not found ({path})", code=ErrorCode.CONFIG_NOT_FOUND
            )
        return path
    default = Path(DEFAULT_CONFIG_FILE).absolute()
    return default if default.is_file() else None


def load_config(explicit: str | None = None) -> LoadedConfig:
    path = find_config_file(explicit)
    if path is None:
        return LoadedConfig(Config(), None)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    config = parse_config(text, str(path))
    return LoadedConfig(resolve_paths(config, path.parent), path)


def resolve_paths(config: Config, base: Path) -> Config:
    """Relative paths in a file mean relative to the file's folder, so a config works from
    whatever folder cron or an operator starts raasctl in."""

    def anchored(path: Path | None) -> Path | None:
        return None if path is None or path.is_absolute() else base / path

    environments = {}
    for name, env in config.environments.items():
        updates: dict[str, Any] = {}
        for part in ("source", "queue", "state", "sink"):
            section = getattr(env, part)
            new_path = anchored(getattr(section, "path", None))
            if new_path is not None:
                updates[part] = section.model_copy(update={"path": new_path})
        environments[name] = env.model_copy(update=updates) if updates else env
    return config.model_copy(update={"environments": environments})


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML whose mappings may not repeat a key: PyYAML keeps the last one silently, so a
    second `protected: false` would turn protection off unseen."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_config(text: str, where: str) -> Config:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        position = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{where}{position}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: invalid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigInvalid(problems_from(exc, data, Config, where, text)) from None
    except ValueError as exc:  # model_post_init: default_env not among environments
        raise ConfigInvalid([Problem(where, None, None, "default_env", str(exc))]) from None


def state_dir() -> Path:
    """Absolute, so every message names the file wherever raasctl was started."""
    return Path(os.environ.get("RAASCTL_STATE_DIR", ".raasctl")).absolute()


def embedded_db_path(env_name: str, explicit: Path | None) -> Path:
    """The one SQLite file per environment that the embedded adapters share."""
    return explicit if explicit is not None else state_dir() / f"{env_name}.db"
