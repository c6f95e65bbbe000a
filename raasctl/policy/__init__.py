"""Offline evaluation of AWS IAM policies: SQS queue (resource) policies and identity policies.

:func:`evaluate` judges only the policy it is given — ``allowed`` means *this policy* grants
the request; :func:`evaluate_access` judges both sides of a request by the account rule. An
answer is an :class:`Outcome` (``allowed``, ``explicit_deny``, ``implicit_deny``,
``indeterminate``) with the deciding statements (by ``Sid``, or ``#N`` counted from 1) and the
context keys whose values would settle an ``indeterminate`` answer.

The package, by role: ``model`` (requests, decisions), ``document`` (documents parsed once
into typed statements), ``principals``, ``conditions`` and ``variables`` (the rules of each
element), ``evaluate`` (judging and combining), ``actions`` (which actions a request names).
"""

from raasctl.policy.actions import SQS_API_ACTIONS, check_action
from raasctl.policy.document import (
    Policy,
    Statement,
    check_document,
    has_principals,
    load_policy,
    normalize_action,
    parse_document,
    parse_policy,
)
from raasctl.policy.evaluate import SideInput, evaluate, evaluate_access, lower_context
from raasctl.policy.model import (
    ALLOWED,
    DECISIONS,
    EXPLICIT_DENY,
    IMPLICIT_DENY,
    INDETERMINATE,
    SESSION_ISSUER_KEY,
    AccessDecision,
    ContextValue,
    Decision,
    Outcome,
    PolicyError,
    Request,
)
from raasctl.policy.principals import account_of, identify, principal_problem

__all__ = [
    "ALLOWED",
    "DECISIONS",
    "EXPLICIT_DENY",
    "IMPLICIT_DENY",
    "INDETERMINATE",
    "SESSION_ISSUER_KEY",
    "SQS_API_ACTIONS",
    "AccessDecision",
    "ContextValue",
    "Decision",
    "Outcome",
    "Policy",
    "PolicyError",
    "Request",
    "SideInput",
    "Statement",
    "account_of",
    "check_action",
    "check_document",
    "evaluate",
    "evaluate_access",
    "has_principals",
    "identify",
    "load_policy",
    "lower_context",
    "normalize_action",
    "parse_document",
    "parse_policy",
    "principal_problem",
]
