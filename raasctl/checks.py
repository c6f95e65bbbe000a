"""Offline checks of a configuration, beyond what its schema says (`config validate`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from raasctl.config import CRON_NAMES, SECRET_REF, Config, EnvironmentConfig
from raasctl.errors import RaasctlError
from raasctl.schedule import overlaps


def secret_refs(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(field path, reference) for every secret reference inside a config dump."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from secret_refs(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, str) and SECRET_REF.match(value):
        yield path, value


def redacted(value: Any) -> Any:
    """A config dump with every secret reference shown as such, never as a value."""
    if isinstance(value, dict):
        return {key: redacted(item) for key, item in value.items()}
    if isinstance(value, str) and SECRET_REF.match(value):
        return f"<secret {value}>"
    return value


def environment_problems(
    name: str,
    env: EnvironmentConfig,
    *,
    resolve: Callable[[str], str] | None = None,
) -> list[str]:
    """Problems found without calling any service (secrets only when `resolve` is given)."""
    problems: list[str] = []
    where = f"environments.{name}"
    if env.source.kind == "fixtures":
        folder = Path(env.source.path)
        if not folder.is_dir():
            problems.append(f"{where}.source.path: folder {folder} does not exist")
        else:
            missing = [c for c in CRON_NAMES if not (folder / f"{c}.json").is_file()]
            if missing:
                problems.append(f"{where}.source.path: no report file for {', '.join(missing)}")
    queue = env.queue
    if (
        queue.kind == "sqs"
        and queue.dlq_url
        and (queue.url.endswith(".fifo") != queue.dlq_url.endswith(".fifo"))
    ):
        problems.append(f"{where}.queue.dlq_url: a FIFO queue needs a FIFO DLQ and vice versa")
    if env.protected and not env.deployed:
        problems.append(f"{where}.protected: a protected environment must be deployed: true")
    if resolve is not None:
        for field, ref in secret_refs(env.model_dump(mode="json"), where):
            try:
                resolve(ref)
            except RaasctlError as exc:
                problems.append(f"{field}: {exc.message}")
    return problems


def schedule_warnings(config: Config, now: datetime) -> list[str]:
    return [
        f"crons {first} and {second} would both start at {at:%Y-%m-%d %H:%M} UTC"
        for first, second, at in overlaps(config, now)
    ]
