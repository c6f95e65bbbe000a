"""What `access check` reports: per environment, the caller, the queues and a decision per
(queue, action), with each error's cause and the exit code the causes come to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from raasctl.aws import CredentialInfo
from raasctl.codes import ErrorCode
from raasctl.policy import EXPLICIT_DENY, IMPLICIT_DENY, INDETERMINATE

EMBEDDED_NOTE = "embedded: no AWS access needed"
DENIED = frozenset({EXPLICIT_DENY, IMPLICIT_DENY})

# One exit code per cause, whichever command meets it (README, "Exit codes"): what stops a
# check from running is a configuration error (2) or a failed call (1); what a check finds
# is a problem (3).
CAUSE_EXIT_CODES: dict[ErrorCode, int] = {
    ErrorCode.CONFIG_INVALID: 2,
    ErrorCode.USAGE: 2,
    ErrorCode.UNKNOWN_ENV: 2,
    ErrorCode.CREDENTIALS_MISSING: 2,
    ErrorCode.CREDENTIALS_INVALID: 2,
    ErrorCode.POLICY_INVALID: 2,
    ErrorCode.ACCESS_DENIED: 1,
    ErrorCode.AWS_FAILED: 1,
    ErrorCode.QUEUE_NOT_FOUND: 3,
    ErrorCode.CHECK_FAILED: 3,
}
# Which exit code wins when environments end differently: not being able to check at all
# is worse than a failed call, which is worse than a problem found.
_EXIT_SEVERITY = (0, 3, 1, 2)


def worst_exit(codes: Sequence[int]) -> int:
    """The most severe of ``codes`` (2, then 1, then 3, then 0)."""
    return max(codes, key=_EXIT_SEVERITY.index, default=0)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Caller:
    account: str
    arn: str  # as STS reports it: a session ARN for an assumed role
    user_id: str
    principal: str | None = None  # the IAM user or role behind it, for the simulator

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "arn": self.arn,
            "user_id": self.user_id,
            "principal": self.principal,
        }


@dataclass
class QueueInfo:
    role: str  # "queue" or "dlq"
    name: str
    url: str | None
    arn: str | None = None
    exists: bool | None = None  # None: AWS did not say (the call was refused or failed)
    answered: bool = False  # GetQueueAttributes answered
    error: str | None = None
    cause: ErrorCode = ErrorCode.CHECK_FAILED  # what kind of error ``error`` is
    refused: str | None = None  # the AccessDenied message, when GetQueueAttributes was refused
    policy: dict[str, Any] | None = None
    kms_key: str | None = None
    fifo: bool | None = None
    redrive_target: str | None = None  # the DLQ ARN of the queue's RedrivePolicy

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "name": self.name,
            "url": self.url,
            "arn": self.arn,
            "exists": self.exists,
            "answered": self.answered,
            "error": self.error,
            "policy": self.policy is not None,
            "kms_key": self.kms_key,
            "fifo": self.fifo,
        }


@dataclass(frozen=True)
class PermissionRow:
    queue: str
    action: str
    queue_policy: str  # the queue policy's own decision, or "unknown"
    identity: str  # the identity side's decision, or "unknown"
    decision: str  # both sides combined (same-account / cross-account rule)
    statements: list[str]
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "action": self.action,
            "queue_policy": self.queue_policy,
            "identity": self.identity,
            "decision": self.decision,
            "statements": list(self.statements),
            "note": self.note,
        }


@dataclass
class EnvReport:
    env: str
    deployed: bool = False
    embedded: bool = False
    credentials: CredentialInfo | None = None
    caller: Caller | None = None
    identity_source: str | None = None  # how the identity side was judged, or why it is unknown
    queues: list[QueueInfo] = field(default_factory=list)
    permissions: list[PermissionRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    causes: list[ErrorCode] = field(default_factory=list)  # one per error, in order

    def add_error(self, message: str, cause: ErrorCode) -> None:
        self.errors.append(message)
        self.causes.append(cause)

    def exit_code(self, strict: bool) -> int:
        """This environment's exit code: its worst error's, else 3 when anything is denied
        (or indeterminate under ``strict``), else 0."""
        if self.errors:
            causes = self.causes or [ErrorCode.CHECK_FAILED]
            return worst_exit([CAUSE_EXIT_CODES.get(cause, 1) for cause in causes])
        return 3 if self.failed(strict) else 0

    @property
    def status(self) -> str:
        """embedded, error, denied, indeterminate or ok (the worst wins)."""
        if self.embedded:
            return "embedded"
        if self.errors:
            return "error"
        decisions = {row.decision for row in self.permissions}
        if decisions & DENIED:
            return "denied"
        if INDETERMINATE in decisions:
            return "indeterminate"
        return "ok"

    def failed(self, strict: bool) -> bool:
        return self.status in ("error", "denied") or (strict and self.status == INDETERMINATE)

    def to_json(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "status": self.status,
            "note": EMBEDDED_NOTE if self.embedded else None,
            "deployed": self.deployed,
            "credentials": self.credentials.to_json() if self.credentials else None,
            "caller": self.caller.to_json() if self.caller else None,
            "identity_source": self.identity_source,
            "queues": [queue.to_json() for queue in self.queues],
            "permissions": [row.to_json() for row in self.permissions],
            "warnings": list(self.warnings),
            "errors": list(self.errors),
            "error_codes": [str(cause) for cause in self.causes],
        }


def error_report(env_name: str, message: str, cause: ErrorCode) -> EnvReport:
    """The report of an environment that could not be checked at all (e.g. its profile is
    missing), so that `--all-envs` still reports the others."""
    report = EnvReport(env_name)
    report.add_error(message, cause)
    return report
