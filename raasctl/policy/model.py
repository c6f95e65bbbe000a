"""The evaluator's vocabulary: requests, decisions (an enum) and the one error type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias


class Outcome(StrEnum):
    """What a policy (or a whole request) comes to. A StrEnum, so it compares and serialises
    as the documented strings (``"allowed"`` …)."""

    ALLOWED = "allowed"
    EXPLICIT_DENY = "explicit_deny"
    IMPLICIT_DENY = "implicit_deny"
    INDETERMINATE = "indeterminate"


ALLOWED = Outcome.ALLOWED
EXPLICIT_DENY = Outcome.EXPLICIT_DENY
IMPLICIT_DENY = Outcome.IMPLICIT_DENY
INDETERMINATE = Outcome.INDETERMINATE
DECISIONS = tuple(str(outcome) for outcome in Outcome)
ALL_OUTCOMES = frozenset({ALLOWED, EXPLICIT_DENY, IMPLICIT_DENY})

ContextValue: TypeAlias = str | list[str] | None
"""A known context value: one string, a list for a multi-valued key, ``None`` = known absent."""

SESSION_ISSUER_KEY = "raasctl:SessionIssuer"
"""Not an AWS key: the IAM user that created a federated-user session (GetFederationToken).
AWS applies a Principal naming that user to the session, and a session ARN does not say who
it was; without this key such a statement is undecided."""


class PolicyError(ValueError):
    """A policy document or request that cannot be evaluated; the message is one line."""


@dataclass(frozen=True)
class Request:
    """What is asked: ``principal`` may be an ARN, a bare account id or a service principal.

    ``resource=None`` means the request names no resource (only ``"*"`` covers it); with
    ``resource_unknown=True`` it means the resource is not known, so a statement scoped to
    particular resources may or may not apply.
    """

    principal: str
    action: str
    resource: str | None = None
    context: Mapping[str, ContextValue] = field(default_factory=dict)
    resource_unknown: bool = False


@dataclass(frozen=True)
class Decision:
    """The answer for one policy (or, from ``evaluate_access``, for a whole request).

    ``outcomes`` holds the decisions still possible once the missing context is known: just
    ``{decision}`` for a decided answer, two or three of them for ``indeterminate``.
    ``warnings`` say what in the policy AWS would not honour or what the request leaves open.
    """

    decision: Outcome
    statements: list[str] = field(default_factory=list)
    missing_context: list[str] = field(default_factory=list)
    outcomes: frozenset[Outcome] = field(default=frozenset(), compare=False)
    warnings: list[str] = field(default_factory=list, compare=False)

    def __post_init__(self) -> None:
        # Outcome("maybe") raises ValueError: an unknown decision is a programming error.
        object.__setattr__(self, "decision", Outcome(self.decision))
        if not self.outcomes:
            default = ALL_OUTCOMES if self.decision == INDETERMINATE else {self.decision}
            object.__setattr__(self, "outcomes", frozenset(default))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "decision": str(self.decision),
            "statements": list(self.statements),
            "missing_context": list(self.missing_context),
        }
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


@dataclass(frozen=True)
class AccessDecision(Decision):
    """A :class:`Decision` for a request, with each side's own verdict.

    ``identity`` and ``resource`` are a decision string or ``"unknown"``; ``same_account`` is
    ``None`` when the principal's or the resource's account is not known.
    """

    identity: str = "unknown"
    resource: str = str(IMPLICIT_DENY)
    same_account: bool | None = None
