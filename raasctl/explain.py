"""`access explain`: a request judged offline against one policy file, or against an identity
policy and a queue policy combined by the account rule of `access check`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raasctl.codes import ErrorCode
from raasctl.errors import ConfigError, UsageError
from raasctl.policy import (
    AccessDecision,
    ContextValue,
    Decision,
    Policy,
    PolicyError,
    Request,
    check_action,
    evaluate,
    evaluate_access,
    has_principals,
    identify,
    load_policy,
    parse_document,
    principal_problem,
)


def parse_context(pairs: Sequence[str], absent: Sequence[str] = ()) -> dict[str, ContextValue]:
    """`KEY=VALUE` pairs; values repeated for one key (compared case-insensitively) form a
    list, a single value stays a string. Each key of ``absent`` is known to be absent from the
    request (value None); a key cannot be both given and absent."""
    collected: dict[str, list[str]] = {}
    spelling: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--context {pair!r}: expected KEY=VALUE (e.g. aws:SourceVpce=vpce-1)")
        spelling.setdefault(key.lower(), key)
        collected.setdefault(key.lower(), []).append(value)
    context: dict[str, ContextValue] = {
        spelling[lowered]: values[0] if len(values) == 1 else values
        for lowered, values in collected.items()
    }
    for raw in absent:
        key = raw.strip()
        if not key or "=" in key:
            raise UsageError(f"--absent {raw!r}: expected a context key (e.g. aws:SourceVpce)")
        if key.lower() in collected:
            raise UsageError(f"{key} is given with --context and with --absent: choose one")
        if key.lower() not in spelling:
            spelling[key.lower()] = key
            context[key] = None
    return context


def principal_context(principal: str) -> dict[str, ContextValue]:
    """The context keys the principal itself settles, as AWS sets them for its requests:
    ``aws:PrincipalAccount``, ``aws:PrincipalArn`` (a role's, not its session's, so unknown for
    a session whose role path is not known) and ``aws:username`` (an IAM user's name; absent
    for roles, role sessions and federated users)."""
    found = identify(principal)
    context: dict[str, ContextValue] = {}
    if found.account:
        context["aws:PrincipalAccount"] = found.account
    if found.kind == "account" and found.account:
        context["aws:PrincipalArn"] = f"arn:{found.partition or 'aws'}:iam::{found.account}:root"
    elif found.kind in ("user", "role", "federated"):
        context["aws:PrincipalArn"] = principal
    if found.kind == "user":
        context["aws:username"] = found.name
    elif found.kind in ("role", "session", "federated"):
        context["aws:username"] = None
    return context


def build_request(
    principal: str,
    action: str,
    resource: str | None,
    context: Mapping[str, ContextValue] | None,
) -> Request:
    """A request as `explain` and `access test` judge it: the principal and the action are
    checked (UsageError with a suggestion), the principal's own context keys are filled in
    unless given, and a missing resource is unknown rather than absent."""
    problem = principal_problem(principal.strip())
    if problem:
        raise UsageError(f"--principal {problem}")
    try:
        checked = check_action(action)
    except PolicyError as exc:
        raise UsageError(f"--action {exc}") from None
    given = dict(context or {})
    known = {key.lower() for key in given}
    for key, value in principal_context(principal.strip()).items():
        if key.lower() not in known:
            given[key] = value
    return Request(
        principal.strip(), checked, resource or None, given, resource_unknown=not resource
    )


def as_policy(document: Mapping[str, Any], side: bool | None) -> Policy:
    """Parse a policy document for one side: ``side`` None judges it alone (a document
    without Principal elements is then an identity policy), True as the identity side, False
    as the resource side; with a side, statements are named by it (``identity:Sid``)."""
    principals = has_principals(document)
    if side is None:
        identity = not principals and bool(document["Statement"])
    elif side and principals:
        raise PolicyError("an identity policy has no Principal elements")
    else:
        identity = side
    label = "" if side is None else "identity" if side else "resource"
    return parse_document(document, identity=identity, label=label)


def read_policy(path: str | Path, *, side: bool | None = None) -> Policy:
    """Load and parse a policy file for ``side`` (see :func:`as_policy`); ConfigError
    (exit 2) names the file."""
    try:
        return as_policy(load_policy(path), side)
    except PolicyError as exc:
        message = str(exc)
        if str(path) not in message:
            message = f"policy file {path}: {message}"
        raise ConfigError(message, code=ErrorCode.POLICY_INVALID) from None


def explain(
    policy_file: str | Path,
    principal: str,
    action: str,
    resource: str | None = None,
    context: Mapping[str, ContextValue] | None = None,
) -> Decision:
    """Judge one request against one policy file, as that policy alone would.

    A policy whose statements have no Principal is an identity policy (the principal is the
    one it is attached to). A file that cannot be read or evaluated raises ConfigError
    (exit 2) naming the file; an unknown action or a malformed principal raises UsageError.
    """
    request = build_request(principal, action, resource, context)
    return evaluate(read_policy(policy_file), request)


def explain_both(
    identity_file: str | Path | None,
    resource_file: str | Path | None,
    principal: str,
    action: str,
    resource: str | None = None,
    context: Mapping[str, ContextValue] | None = None,
) -> AccessDecision:
    """Judge a request against an identity policy and a resource (queue) policy, combined by
    the account rule of `access check`; offline, no AWS call. A side without a file has no
    policy, which grants nothing."""
    request = build_request(principal, action, resource, context)
    identity = [] if identity_file is None else [read_policy(identity_file, side=True)]
    queue_policy = None if resource_file is None else read_policy(resource_file, side=False)
    return evaluate_access(request, identity=identity, resource_policy=queue_policy)


def access_json(decision: AccessDecision) -> dict[str, Any]:
    """`explain --identity-policy --resource-policy`'s JSON: the combined decision and each
    side's own verdict."""
    return {
        **decision.to_json(),
        "identity": decision.identity,
        "resource_policy": decision.resource,
        "same_account": decision.same_account,
    }
