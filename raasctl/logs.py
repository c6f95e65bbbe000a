"""Structured logging: every event has a stable code, the env and its context fields.

Text on a terminal, JSON lines otherwise (crontab, CI), unless `--log-format` or
RAASCTL_LOG_FORMAT says which. A redaction filter removes every
secret value the process has resolved (`raasctl.redaction`), wherever it would appear.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from raasctl.codes import ErrorCode, InfoCode
from raasctl.redaction import redact

LOGGER_NAME = "raasctl"
LOG_FORMATS = ("text", "json")
logger = logging.getLogger(LOGGER_NAME)

_context: dict[str, Any] = {}
_json_lines = False


def failure(code: ErrorCode, message: str, /, **fields: Any) -> None:
    """An expected failure, as one line on stderr: a JSON log line where logs are JSON lines
    (crontab, CI: a log shipper keeps it with its env, cron and run id), else plain text."""
    if _json_lines:
        event(code, message, **fields)
    else:
        sys.stderr.write(redact(f"raasctl: error {code}: {message}") + "\n")


def set_context(**fields: Any) -> None:
    """Fields every event carries from now on (the env)."""
    _context.update(fields)


def event(
    code: InfoCode | ErrorCode, message: str, /, *, level: int | None = None, **fields: Any
) -> None:
    """Log one event: `event(InfoCode.RUN_COMPLETE, "run complete", cron=..., run_id=...)`."""
    if level is None:
        level = logging.ERROR if isinstance(code, ErrorCode) else logging.INFO
    logger.log(level, message, extra={"code": str(code), "fields": fields})


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        fields = getattr(record, "fields", None)
        if fields:
            record.fields = {k: _redact_value(v) for k, v in fields.items()}
        return True


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "code": getattr(record, "code", None),
            "msg": record.getMessage(),
            **_context,
            **(getattr(record, "fields", None) or {}),
        }
        if record.exc_info:
            document["traceback"] = redact(self.formatException(record.exc_info))
        return json.dumps(document, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        code = getattr(record, "code", None) or "-"
        fields = getattr(record, "fields", None) or {}
        extras = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        line = f"{at} {record.levelname:<7} {code} {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """Writes to whatever sys.stderr is at the time (so CliRunner captures it)."""

    @property  # type: ignore[override,unused-ignore]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure(verbosity: int = 0, *, json_lines: bool | None = None) -> None:
    """verbosity: -1 quiet (warnings and errors), 0 info, 1+ debug."""
    global _json_lines
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    _json_lines = json_lines
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(RedactingFilter())
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(
        logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity else logging.INFO
    )
