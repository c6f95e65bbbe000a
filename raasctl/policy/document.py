"""Policy documents parsed once into typed statements, validated before any evaluation.

A document that IAM would reject — no ``Statement``, an ``Effect`` other than Allow/Deny, both
or neither of ``Action``/``NotAction``, an unknown condition operator, an unreadable policy
variable, a resource-policy statement without ``Principal`` — raises :class:`PolicyError`
here, whatever the request, so an error never depends on how far an evaluation got.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from raasctl.policy.conditions import Check, parse_condition
from raasctl.policy.model import PolicyError
from raasctl.policy.principals import PrincipalSpec, parse_principal, strings
from raasctl.policy.variables import (
    VARIABLES_VERSION,
    Template,
    compiled,
    resource_template,
    wildcard_source,
)

_BATCH_ACTIONS = {
    "sqs:sendmessagebatch": "sqs:sendmessage",
    "sqs:deletemessagebatch": "sqs:deletemessage",
    "sqs:changemessagevisibilitybatch": "sqs:changemessagevisibility",
}


class Effect(StrEnum):
    ALLOW = "Allow"
    DENY = "Deny"


@dataclass(frozen=True)
class Statement:
    index: int  # position among all statements judged together, for ordering
    name: str  # Sid, or #N counted from 1, prefixed by the policy's label
    effect: Effect
    principal: PrincipalSpec | None  # None: an identity policy, which implies it
    principal_negated: bool
    actions: tuple[Any, ...]  # compiled case-insensitive patterns
    action_negated: bool
    resources: tuple[Template, ...]
    resource_patterns: tuple[str, ...]  # as written, for the "*" test without a resource
    resource_negated: bool
    conditions: tuple[Check, ...]


@dataclass(frozen=True)
class Policy:
    """A parsed policy: ``identity`` when it is judged as an identity policy."""

    statements: tuple[Statement, ...]
    identity: bool
    label: str = ""

    @property
    def warnings(self) -> list[str]:
        return [
            f"statement {s.name}: principal {entry!r} has a wildcard, which AWS does not "
            "support in principal ARNs: it matches no principal"
            for s in self.statements
            if s.principal is not None
            for entry in s.principal.ignored
        ]


def normalize_action(action: str) -> str:
    """Lower-case an action and map an SQS batch action to the permission it needs."""
    lowered = action.strip().lower()
    return _BATCH_ACTIONS.get(lowered, lowered)


def parse_policy(text: str, source: str = "policy") -> dict[str, Any]:
    """Parse a policy document from JSON text; ``source`` names it in error messages."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyError(
            f"{source} is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        ) from None
    check_document(doc, source)
    return dict(doc)


def check_document(doc: Any, source: str = "policy") -> None:
    if not isinstance(doc, Mapping) or "Statement" not in doc:
        raise PolicyError(f"{source} is not a policy document: it has no Statement")
    if not isinstance(doc["Statement"], dict | list):
        raise PolicyError(f"{source}: Statement must be an object or a list of objects")


def load_policy(path: str | Path) -> dict[str, Any]:
    """Read a policy document from a JSON file; raise :class:`PolicyError` naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyError(f"cannot read policy file {path}: {reason}") from None
    return parse_policy(text, f"policy file {path}")


def has_principals(doc: Mapping[str, Any]) -> bool:
    """True when the statements have Principals (a resource policy), False when none has (an
    identity policy); a document mixing both kinds is an error."""
    raw = doc.get("Statement", [])
    statements = [raw] if isinstance(raw, dict) else raw if isinstance(raw, list) else []
    with_principal = [
        isinstance(s, dict) and ("Principal" in s or "NotPrincipal" in s) for s in statements
    ]
    if any(with_principal) and not all(with_principal):
        raise PolicyError(
            "statements with and without Principal in one file: split identity and resource "
            "policies into separate files"
        )
    return any(with_principal)


def _either(statement: Mapping[str, Any], name: str, field_name: str) -> tuple[Any, bool]:
    """The value of ``X`` or ``NotX`` and whether it was the negated form."""
    has_plain, has_not = field_name in statement, f"Not{field_name}" in statement
    if has_plain == has_not:
        raise PolicyError(f"statement {name} needs exactly one of {field_name}, Not{field_name}")
    return (statement[field_name], False) if has_plain else (statement[f"Not{field_name}"], True)


def _statement(
    index: int, name: str, raw: Mapping[str, Any], identity: bool, variables: bool
) -> Statement:
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(f"statement {name}: Effect must be Allow or Deny, not {effect!r}")
    principal: PrincipalSpec | None = None
    principal_negated = False
    if not identity:
        if "Principal" not in raw and "NotPrincipal" not in raw:
            raise PolicyError(
                f"statement {name} has no Principal, which every statement of a resource "
                "policy needs"
            )
        spec, principal_negated = _either(raw, name, "Principal")
        principal = parse_principal(spec, name)
    patterns, action_negated = _either(raw, name, "Action")
    actions = tuple(
        compiled(wildcard_source(p.lower()), True) for p in strings(patterns, name, "Action")
    )
    patterns, resource_negated = _either(raw, name, "Resource")
    written = tuple(strings(patterns, name, "Resource"))
    resources = tuple(resource_template(p, variables, name) for p in written)
    return Statement(
        index,
        name,
        Effect(effect),
        principal,
        principal_negated,
        actions,
        action_negated,
        resources,
        written,
        resource_negated,
        parse_condition(raw.get("Condition"), name, variables),
    )


def parse_document(
    doc: Mapping[str, Any], *, identity: bool, label: str = "", start: int = 0
) -> Policy:
    """Parse and validate ``doc``; ``label`` prefixes statement names (``"resource:lbl"``),
    ``start`` numbers its statements after those of policies judged with it."""
    check_document(doc, label or "policy")
    raw = doc["Statement"]
    items = [raw] if isinstance(raw, dict) else list(raw)
    variables = doc.get("Version") == VARIABLES_VERSION
    statements: list[Statement] = []
    for number, item in enumerate(items, start=1):
        sid = item.get("Sid") if isinstance(item, dict) else None
        name = sid if isinstance(sid, str) and sid else f"#{number}"
        if label:
            name = f"{label}:{name}"
        if not isinstance(item, dict):
            raise PolicyError(f"statement {name} is not an object")
        statements.append(_statement(start + number - 1, name, item, identity, variables))
    return Policy(tuple(statements), identity, label)
