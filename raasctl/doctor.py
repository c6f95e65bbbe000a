"""`doctor`: smoke checks of one environment for CI, one row per part.

Each part is checked the cheapest way that proves it works, and never by doing work: the
queue and DLQ as `access check` does (read-only calls), the state store by its file's folder
or DescribeTable, Workday by one authenticated request whose body is not read, the callback
by a HEAD request (any HTTP answer means it is reachable; an entry is never posted). A part
that cannot be checked because another failed is a failing row of its own, with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from raasctl.access import check_environment
from raasctl.access_report import DENIED, EnvReport, QueueInfo
from raasctl.aws_errors import AWS_FAILURES, classify
from raasctl.checks import environment_problems, secret_refs
from raasctl.config import CRON_NAMES, embedded_db_path
from raasctl.errors import RaasctlError
from raasctl.sources.base import Prompts

if TYPE_CHECKING:
    from raasctl.runtime import Runtime

CALLBACK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class Diagnosis:
    env: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))

    def as_dict(self) -> dict[str, Any]:
        return {"env": self.env, "checks": [check.as_dict() for check in self.checks]}


def diagnose(runtime: Runtime) -> Diagnosis:
    """Every check of the environment, in the order a pipeline runs through them."""
    result = Diagnosis(runtime.env_name)
    env = runtime.env
    where = f"environments.{runtime.env_name}"
    problems = [
        p
        for p in environment_problems(runtime.env_name, env)
        if not p.startswith(where + ".source")
    ]
    result.add("config", not problems, "; ".join(problems) or "valid")
    _secrets(runtime, result)
    _aws(runtime, result)
    _state(runtime, result)
    _source(runtime, result)
    _sink(runtime, result)
    return result


# ---------------------------------------------------------------------- parts


def _secrets(runtime: Runtime, result: Diagnosis) -> None:
    refs = list(
        secret_refs(runtime.env.model_dump(mode="json"), f"environments.{runtime.env_name}")
    )
    failures = []
    for field_path, ref in refs:
        try:
            runtime.secret(ref)
        except RaasctlError as exc:
            failures.append(f"{field_path}: {exc.message}")
    if failures:
        result.add("secrets", False, "; ".join(failures))
    else:
        result.add("secrets", True, f"{len(refs)} resolved" if refs else "none used")


def _aws(runtime: Runtime, result: Diagnosis) -> None:
    """Credentials, queue and DLQ, as `access check` sees them."""
    if runtime.env.queue.kind == "sqlite":
        path = embedded_db_path(runtime.env_name, runtime.env.queue.path)
        result.add("credentials", True, "not needed (embedded queue)")
        result.add("queue", True, f"embedded SQLite queue in {path.absolute()}")
        result.add("dlq", True, "the embedded queue's own DLQ table")
        return
    try:
        report = check_environment(runtime.env_name, runtime.env, runtime.aws)
    except RaasctlError as exc:
        result.add("credentials", False, exc.message)
        result.add("queue", False, "not checked: no usable credentials")
        result.add("dlq", False, "not checked: no usable credentials")
        return
    queues = {queue.role: queue for queue in report.queues}
    if (
        report.credentials is None
        or report.credentials.source is None
        or (report.errors and not queues)
    ):
        detail = "; ".join(report.errors) or "no AWS credentials found"
        result.add("credentials", False, detail)
        result.add("queue", False, "not checked: " + detail)
        result.add("dlq", False, "not checked: " + detail)
        return
    credentials = report.credentials
    caller = report.caller.arn if report.caller else "unknown caller"
    detail = f"{caller} ({credentials.source}, {credentials.key_kind or 'key kind unknown'})"
    if report.warnings:
        detail += "; " + "; ".join(report.warnings)
    result.add("credentials", True, detail)
    for role in ("queue", "dlq"):
        _queue_row(result, role, queues.get(role), report)


def _queue_row(result: Diagnosis, role: str, queue: QueueInfo | None, report: EnvReport) -> None:
    if queue is None:
        if role == "dlq":
            result.add("dlq", False, "the queue has no DLQ (no RedrivePolicy, no dlq_url)")
        else:
            result.add(role, False, "; ".join(report.errors) or "not found")
        return
    if queue.exists is False or queue.error:
        result.add(role, False, queue.error or f"{queue.name} does not exist")
        return
    if queue.refused:
        result.add(role, False, f"{queue.name}: {queue.refused}")
        return
    rows = [row for row in report.permissions if row.queue == queue.name]
    denied = [row.action for row in rows if row.decision in DENIED]
    if denied:
        result.add(role, False, f"{queue.name}: denied {', '.join(denied)}")
        return
    unknown = [
        row.action for row in rows if row.decision not in DENIED and row.decision != "allowed"
    ]
    note = f"; indeterminate: {', '.join(unknown)}" if unknown else ""
    result.add(
        role, True, f"{queue.name}: reachable, {len(rows) - len(unknown)} actions allowed{note}"
    )


def _state(runtime: Runtime, result: Diagnosis) -> None:
    cfg = runtime.env.state
    if cfg.kind == "sqlite":
        path = embedded_db_path(runtime.env_name, cfg.path).absolute()
        # Never created here: a check must not leave a file behind.
        target = path if path.exists() else _existing_parent(path)
        if os.access(target, os.W_OK):
            found = "exists" if path.exists() else "will be created on first use"
            result.add("state", True, f"{path} writable ({found})")
        else:
            result.add("state", False, f"{path} is not writable (checked {target})")
        return
    try:
        table = runtime.aws.client("dynamodb").describe_table(TableName=cfg.table)["Table"]
    except AWS_FAILURES as exc:
        result.add("state", False, classify(exc, service="dynamodb", resource=cfg.table).message)
        return
    except RaasctlError as exc:
        result.add("state", False, exc.message)
        return
    status = table.get("TableStatus", "unknown")
    result.add("state", status == "ACTIVE", f"DynamoDB table {cfg.table} is {status}")


def _existing_parent(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path("/")


def _source(runtime: Runtime, result: Diagnosis) -> None:
    cfg = runtime.env.source
    if cfg.kind == "fixtures":
        folder = Path(cfg.path).absolute()
        missing = [c for c in CRON_NAMES if not (folder / f"{c}.json").is_file()]
        if not folder.is_dir():
            result.add("source", False, f"folder {folder} does not exist")
        elif missing:
            result.add("source", False, f"{folder} has no report file for {', '.join(missing)}")
        else:
            result.add("source", True, f"{folder} has every cron's report file")
        return
    from raasctl.sources.workday import WorkdaySource

    cron = CRON_NAMES[0]
    report = runtime.cron(cron).report or cron
    now = datetime.now(UTC)
    source = WorkdaySource(cfg, runtime.secret)
    try:
        status = source.probe(report, Prompts(from_date=now, to_date=now))
    except RaasctlError as exc:
        result.add("source", False, exc.message)
        return
    finally:
        source.close()
    result.add("source", True, f"Workday answered HTTP {status} for report {report}, authenticated")


def _sink(runtime: Runtime, result: Diagnosis, head: Callable[..., Any] = requests.head) -> None:
    cfg = runtime.env.sink
    if cfg.kind == "sqlite":
        path = embedded_db_path(runtime.env_name, cfg.path).absolute()
        result.add("sink", True, f"embedded SQLite ledger in {path}")
        return
    try:
        response = head(cfg.base_url, timeout=CALLBACK_TIMEOUT_S, allow_redirects=False)
    except requests.RequestException as exc:
        from raasctl.sources.workday import describe_transport_error

        result.add(
            "sink", False, f"callback {cfg.base_url} unreachable: {describe_transport_error(exc)}"
        )
        return
    response.close()
    result.add(
        "sink", True, f"callback {cfg.base_url} reachable (HEAD answered {response.status_code})"
    )
