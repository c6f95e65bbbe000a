"""One environment at run time: builds its adapters lazily from configuration."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from raasctl.aws import AwsClients
from raasctl.checks import secret_refs
from raasctl.codes import ErrorCode
from raasctl.config import Config, CronConfig, EnvironmentConfig, embedded_db_path
from raasctl.errors import ConfigError, RuntimeFailure
from raasctl.secrets import SecretResolver

if TYPE_CHECKING:
    from raasctl.queues.base import Queue
    from raasctl.sinks.base import Sink
    from raasctl.sources.base import Source
    from raasctl.state.base import State


class Runtime:
    def __init__(self, config: Config, env_name: str, env: EnvironmentConfig) -> None:
        self.config = config
        self.env_name = env_name
        self.env = env

    @cached_property
    def aws(self) -> AwsClients:
        return AwsClients(self.env_name, self.env.aws)

    @cached_property
    def secret(self) -> SecretResolver:
        fields = {
            ref: field
            for field, ref in secret_refs(
                self.env.model_dump(mode="json"), f"environments.{self.env_name}"
            )
        }
        return SecretResolver(lambda: self.aws.client("ssm"), fields=fields)

    def cron(self, name: str) -> CronConfig:
        return self.config.cron(name)

    def _db(self, explicit: Path | None) -> Path:
        path = embedded_db_path(self.env_name, explicit)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the folder {path.parent} for {path.name} "
                f"({self._setting(explicit)}): "
                f"{exc.strerror}"
            ) from None
        return path

    def missing_embedded_file(self, part: Literal["queue", "state"]) -> Path | None:
        """The embedded SQLite file `part` would open, when it does not exist yet (None when it
        exists or `part` is not embedded). Read-only commands ask first: opening the file would
        create an empty one and report nothing, hiding the real queue wherever raasctl was
        started. A folder that can never exist (a file in its way) is a setting error."""
        cfg = self.env.queue if part == "queue" else self.env.state
        if cfg.kind != "sqlite":
            return None
        path = embedded_db_path(self.env_name, cfg.path)
        if path.is_file():
            return None
        existing = next(folder for folder in path.parents if folder.exists())
        if not existing.is_dir():
            raise ConfigError(
                f"cannot create the folder {path.parent} for {path.name} "
                f"({self._setting(cfg.path)}): {existing} is not a folder"
            )
        return path

    def require_embedded_file(self, part: Literal["queue", "state"]) -> None:
        """As `missing_embedded_file`, a missing file being a one-line failure (exit 1)."""
        path = self.missing_embedded_file(part)
        if path is not None:
            cfg = self.env.queue if part == "queue" else self.env.state
            explicit = cfg.path if cfg.kind == "sqlite" else None
            raise RuntimeFailure(
                f"no embedded {part} file {path} for environment {self.env_name}: nothing was "
                f"enqueued or run here yet ({self._setting(explicit)} says where it is)",
                code=ErrorCode.STATE_FILE_MISSING,
            )

    def _setting(self, explicit: Path | None) -> str:
        return "RAASCTL_STATE_DIR" if explicit is None else f"environments.{self.env_name}"

    def queue(self, *, wire: bool = False) -> Queue:
        """The environment's queue. `wire`: on SQS, receives and deletes go over raasctl's own
        wire (unless `queue.wire: false`), as the worker's do; other commands keep to
        botocore and do not pay for the wire's TLS context."""
        cfg = self.env.queue
        if cfg.kind == "sqlite":
            from raasctl.queues.sqlite import SqliteQueue

            return SqliteQueue(
                self._db(cfg.path),
                fifo=cfg.fifo,
                max_receive_count=cfg.max_receive_count,
                visibility_timeout_s=cfg.visibility_timeout_s,
            )
        from raasctl.queues.sqs import SqsQueue
        from raasctl.queues.sqs_wire import SqsWire

        client = self.aws.client("sqs")
        hot = None
        if wire and cfg.wire:
            credentials = self.aws.session.get_credentials()
            hot = SqsWire.for_client(client, credentials, ca_file=self.aws.ca_bundle())
        return SqsQueue(
            client,
            cfg.url,
            dlq_url=cfg.dlq_url,
            visibility_timeout_s=cfg.visibility_timeout_s,
            wait_time_s=cfg.wait_time_s,
            wire=hot,
        )

    def state(self) -> State:
        cfg = self.env.state
        if cfg.kind == "sqlite":
            from raasctl.state.sqlite import SqliteState

            return SqliteState(self._db(cfg.path))
        from raasctl.state.dynamodb import DynamoState

        return DynamoState(self.aws.client("dynamodb"), cfg.table)

    def sink(self) -> Sink:
        cfg = self.env.sink
        if cfg.kind == "sqlite":
            from raasctl.sinks.sqlite import SqliteLedger

            return SqliteLedger(self._db(cfg.path))
        from raasctl.sinks.http import HttpSink

        return HttpSink(
            cfg.base_url,
            self.secret(cfg.token),
            timeout_s=cfg.timeout_s,
            max_retry_after_s=cfg.max_retry_after_s,
        )

    def source(self) -> Source:
        cfg = self.env.source
        if cfg.kind == "fixtures":
            from raasctl.sources.fixtures import FixtureSource

            return FixtureSource(cfg.path)
        from raasctl.sources.workday import WorkdaySource

        return WorkdaySource(cfg, self.secret)
