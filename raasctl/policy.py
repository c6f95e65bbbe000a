"""Offline evaluation of AWS IAM policies: SQS queue (resource) policies and identity policies.

The contract (DESIGN.md, ``access explain``): :func:`evaluate` judges only the policy it is
given — ``allowed`` means *this policy* grants the request. Its answer is one of
``allowed``, ``explicit_deny``, ``implicit_deny`` and ``indeterminate``, with the deciding
statements (by ``Sid``, or ``#N`` for the N-th statement, counted from 1, when unnamed) and the
context keys whose values would settle an ``indeterminate`` answer.

Rules and choices, in the order a request meets them:

* **Principal** (resource policies only; identity policies imply it and ``identity=True``
  skips it). ``"*"`` and ``{"AWS": "*"}`` match everyone. An account — ``"111122223333"`` or
  ``arn:aws:iam::111122223333:root`` — matches every principal of that account. A role ARN
  ``arn:aws:iam::A:role/path/Name`` matches its sessions ``arn:aws:sts::A:assumed-role/Name/s``
  (a session ARN carries no path, so only the name is compared). ``*``/``?`` wildcards in
  principal ARNs are honoured; ``Service``, ``Federated`` and ``CanonicalUser`` principals are
  compared as plain strings. A request principal without ``:`` but with a ``.``
  (``sns.amazonaws.com``) is a service and matches only ``"*"`` or a ``Service`` entry. In a
  ``NotPrincipal`` an account exempts only the account itself, not its users and roles (as in
  AWS, where excluding a role from a Deny also needs its account listed).
* **Action** is compared case-insensitively with ``*``/``?`` wildcards. The SQS batch actions
  need the single-message permission (``sqs:SendMessageBatch`` → ``sqs:SendMessage``,
  ``sqs:DeleteMessageBatch`` → ``sqs:DeleteMessage``, ``sqs:ChangeMessageVisibilityBatch`` →
  ``sqs:ChangeMessageVisibility``); a policy naming a batch action grants nothing, as in AWS.
* **Resource** is compared case-sensitively with ``*``/``?`` wildcards. When the request names
  no resource (``Request.resource is None``) a ``Resource`` matches only if one of its patterns
  is exactly ``"*"`` and a ``NotResource`` never matches.
* **Condition**: operator names and keys are case-insensitive; several values for one key are
  OR-ed (NOR-ed for negated operators), several keys and operators are AND-ed. The context holds
  only what the caller *knows*: a key missing from it is unknown, never assumed absent — also
  for ``...IfExists`` and ``Null`` — and a statement that depends on it is indeterminate unless
  another of its conditions is known to be false. A context value of ``None`` states that the
  key is known to be absent from the request. Multi-valued keys are lists.
* **Policy variables** (``${aws:username}``, ``${aws:PrincipalTag/team, 'none'}``) are expanded
  from the context, as IAM does, only in policies whose ``Version`` is ``2012-10-17``, and only
  in ``Resource``/``NotResource`` and in the values of the String and Arn condition operators;
  elsewhere ``${...}`` is plain text. ``${*}``, ``${?}`` and ``${$}`` stand for those characters
  taken literally, and an expanded value is always literal text, never a wildcard. A variable
  whose key is known absent takes its default; without one it has no value, which matches
  nothing (so ``StringEquals`` fails, ``StringNotEquals`` holds and the ``Resource`` entry
  matches no resource). A variable whose key is unknown makes its comparison unknown — even
  with a default, since the key may be present — and the key is reported as missing context.
  A key given several values cannot fill a variable (IAM does not allow multi-valued keys
  there), so that comparison stays unknown too.
* **Decision**: a Deny that applies wins; otherwise a Deny that might apply makes the answer
  ``indeterminate``; otherwise an Allow that applies allows; otherwise an Allow that might apply
  makes it ``indeterminate``; otherwise ``implicit_deny``.

:func:`evaluate_access` adds the cross-account rule used by ``access check``: an explicit deny
on either side wins; within one account either the identity side or the resource policy may
grant; across accounts both must.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeAlias

__all__ = [
    "ALLOWED",
    "DECISIONS",
    "EXPLICIT_DENY",
    "IMPLICIT_DENY",
    "INDETERMINATE",
    "AccessDecision",
    "ContextValue",
    "Decision",
    "PolicyError",
    "Request",
    "SideInput",
    "account_of",
    "evaluate",
    "evaluate_access",
    "load_policy",
    "normalize_action",
    "parse_policy",
]

ALLOWED = "allowed"
EXPLICIT_DENY = "explicit_deny"
IMPLICIT_DENY = "implicit_deny"
INDETERMINATE = "indeterminate"
DECISIONS = (ALLOWED, EXPLICIT_DENY, IMPLICIT_DENY, INDETERMINATE)
_ALL_OUTCOMES = frozenset({ALLOWED, EXPLICIT_DENY, IMPLICIT_DENY})

ContextValue: TypeAlias = str | list[str] | None
"""A known context value: one string, a list for a multi-valued key, ``None`` = known absent."""

_BATCH_ACTIONS = {
    "sqs:sendmessagebatch": "sqs:sendmessage",
    "sqs:deletemessagebatch": "sqs:deletemessage",
    "sqs:changemessagevisibilitybatch": "sqs:changemessagevisibility",
}
_ACCOUNT_RE = re.compile(r"^\d{12}$")
_ROOT_RE = re.compile(r"^arn:[^:]+:iam::(\d{12}):root$")
_ROLE_RE = re.compile(r"^arn:([^:]+):iam::([^:]*):role/(.+)$")
_SESSION_RE = re.compile(r"^arn:([^:]+):sts::([^:]*):assumed-role/([^/]+)/.+$")
_EPOCH_RE = re.compile(r"^-?\d+(\.\d+)?$")


class PolicyError(ValueError):
    """A policy document or request that cannot be evaluated; the message is one line."""


@dataclass(frozen=True)
class Request:
    """What is asked: ``principal`` may be an ARN, a bare account id or a service principal."""

    principal: str
    action: str
    resource: str | None = None
    context: Mapping[str, ContextValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """The answer for one policy (or, from :func:`evaluate_access`, for a whole request).

    ``outcomes`` holds the decisions still possible once the missing context is known: just
    ``{decision}`` for a decided answer, two or three of them for ``indeterminate``.
    """

    decision: str
    statements: list[str] = field(default_factory=list)
    missing_context: list[str] = field(default_factory=list)
    outcomes: frozenset[str] = field(default=frozenset(), compare=False)

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"unknown decision {self.decision!r}")
        if not self.outcomes:
            default = _ALL_OUTCOMES if self.decision == INDETERMINATE else {self.decision}
            object.__setattr__(self, "outcomes", frozenset(default))

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "statements": list(self.statements),
            "missing_context": list(self.missing_context),
        }


@dataclass(frozen=True)
class AccessDecision(Decision):
    """A :class:`Decision` for a request, with each side's own verdict.

    ``identity`` and ``resource`` are a decision string or ``"unknown"``; ``same_account`` is
    ``None`` when the principal's or the resource's account is not known.
    """

    identity: str = "unknown"
    resource: str = IMPLICIT_DENY
    same_account: bool | None = None


# --------------------------------------------------------------------------- loading


def parse_policy(text: str, source: str = "policy") -> dict[str, Any]:
    """Parse a policy document from JSON text; ``source`` names it in error messages."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyError(
            f"{source} is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(doc, dict) or "Statement" not in doc:
        raise PolicyError(f"{source} is not a policy document: it has no Statement")
    if not isinstance(doc["Statement"], dict | list):
        raise PolicyError(f"{source}: Statement must be an object or a list of objects")
    return doc


def load_policy(path: str | Path) -> dict[str, Any]:
    """Read a policy document from a JSON file; raise :class:`PolicyError` naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyError(f"cannot read policy file {path}: {reason}") from None
    return parse_policy(text, f"policy file {path}")


# --------------------------------------------------------------------------- matching


@lru_cache(maxsize=1024)
def _wildcard_source(pattern: str) -> str:
    """The regular expression for a policy pattern whose ``*`` and ``?`` are wildcards."""
    return "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)


@lru_cache(maxsize=1024)
def _compiled(source: str, ignore_case: bool) -> re.Pattern[str]:
    return re.compile(source, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _fullmatch(source: str, value: str, ignore_case: bool = False) -> bool:
    return _compiled(source, ignore_case).fullmatch(value) is not None


def _like(pattern: str, value: str, ignore_case: bool = False) -> bool:
    return _fullmatch(_wildcard_source(pattern), value, ignore_case)


# --------------------------------------------------------------------------- policy variables

_VARIABLES_VERSION = "2012-10-17"
_VARIABLE_RE = re.compile(r"\$\{([^}]*)\}")
# ``key`` or ``key, 'default'``; IAM documents a comma and a space, other spacing is tolerated.
_VARIABLE_BODY_RE = re.compile(r"^\s*([^\s,'][^,']*?)\s*(?:,\s*'([^']*)'\s*)?$")
_ESCAPES = frozenset("*?$")


class _Literal(str):
    """Text that matches itself: a ``${*}``, ``${?}`` or ``${$}`` escape."""


@dataclass(frozen=True)
class _Variable:
    key: str
    default: str | None


@dataclass(frozen=True)
class _Template:
    """A policy string as parts: policy text (its ``*``/``?`` are wildcards), escapes and
    variables. Without variable support the whole string is one part of policy text."""

    parts: tuple[str | _Variable, ...]


@dataclass(frozen=True)
class _Text:
    """A policy string once its variables are expanded.

    ``plain`` is what the equality operators compare; ``pattern`` is a regular expression in
    which only the policy's own ``*``/``?`` are wildcards (an expanded value is literal). A ``:``
    in ``pattern`` is always a literal colon, so it may be split into ARN fields.
    """

    plain: str
    pattern: str


@dataclass(frozen=True)
class _Unknown:
    """A policy string that depends on context keys not known."""

    keys: tuple[str, ...]


_Expanded: TypeAlias = _Text | _Unknown | None
"""``None``: a variable has no value (its key is known absent, without a default)."""


def _template(text: str, variables: bool, name: str) -> _Template:
    if not variables or "${" not in text:
        return _Template((text,))
    parts: list[str | _Variable] = []
    position = 0
    for found in _VARIABLE_RE.finditer(text):
        parts.append(text[position : found.start()])
        body = found.group(1)
        if body in _ESCAPES:
            parts.append(_Literal(body))
        else:
            variable = _VARIABLE_BODY_RE.match(body)
            if variable is None:
                raise PolicyError(
                    f"statement {name}: cannot read policy variable {found.group(0)!r}"
                )
            parts.append(_Variable(variable.group(1), variable.group(2)))
        position = found.end()
    parts.append(text[position:])
    return _Template(tuple(part for part in parts if part))


def _expand(template: _Template, context: Mapping[str, ContextValue]) -> _Expanded:
    plain: list[str] = []
    pattern: list[str] = []
    unknown: list[str] = []
    no_value = False
    for part in template.parts:
        if isinstance(part, _Variable):
            lowered = part.key.lower()
            value = context.get(lowered)
            if lowered not in context or isinstance(value, list):
                unknown.append(part.key)
                continue
            if value is None:
                if part.default is None:
                    no_value = True
                    continue
                value = part.default
            plain.append(value)
            pattern.append(re.escape(value))
        elif isinstance(part, _Literal):
            plain.append(part)
            pattern.append(re.escape(part))
        else:
            plain.append(part)
            pattern.append(_wildcard_source(part))
    if no_value:
        return None  # matches nothing, whatever the unknown keys hold
    if unknown:
        return _Unknown(tuple(unknown))
    return _Text("".join(plain), "".join(pattern))


def _unknown_keys(expanded: Sequence[_Expanded]) -> list[str]:
    return [key for item in expanded if isinstance(item, _Unknown) for key in item.keys]


def _any3(values: Sequence[bool | None]) -> bool | None:
    """Three-valued OR: ``None`` is unknown."""
    if any(value is True for value in values):
        return True
    return None if any(value is None for value in values) else False


def _all3(values: Sequence[bool | None]) -> bool | None:
    """Three-valued AND: ``None`` is unknown."""
    if any(value is False for value in values):
        return False
    return None if any(value is None for value in values) else True


def _not3(value: bool | None) -> bool | None:
    return None if value is None else not value


def normalize_action(action: str) -> str:
    """Lower-case an action and map an SQS batch action to the permission it needs."""
    lowered = action.strip().lower()
    return _BATCH_ACTIONS.get(lowered, lowered)


def account_of(arn_or_account: str | None) -> str | None:
    """The account of an ARN (its 5th colon-separated field) or of a bare account id."""
    if not arn_or_account:
        return None
    if _ACCOUNT_RE.match(arn_or_account):
        return arn_or_account
    parts = arn_or_account.split(":", 5)
    if len(parts) >= 5 and parts[0] == "arn" and parts[4]:
        return parts[4]
    return None


def _is_service(principal: str) -> bool:
    return ":" not in principal and "." in principal


def _aws_principal_matches(pattern: str, principal: str, whole_account: bool) -> bool:
    if pattern == "*":
        return True
    if _is_service(principal):
        return False
    pattern_account = pattern if _ACCOUNT_RE.match(pattern) else None
    root = _ROOT_RE.match(pattern)
    if root:
        pattern_account = root.group(1)
    if pattern_account is not None:
        if whole_account:
            return account_of(principal) == pattern_account
        own_root = _ROOT_RE.match(principal)
        own_account = own_root.group(1) if own_root else principal
        return own_account == pattern_account
    if _like(pattern, principal):
        return True
    role, session = _ROLE_RE.match(pattern), _SESSION_RE.match(principal)
    if role and session:
        role_path = role.group(3)
        return (
            _like(role.group(1), session.group(1))
            and _like(role.group(2), session.group(2))
            and (
                _like(role_path, session.group(3))
                or _like(role_path.rsplit("/", 1)[-1], session.group(3))
            )
        )
    return False


def _principal_matches(spec: Any, principal: str, name: str, whole_account: bool) -> bool:
    if spec == "*":
        return True
    if not isinstance(spec, dict):
        raise PolicyError(f'statement {name}: Principal must be "*" or an object')
    for kind, raw in spec.items():
        for pattern in _strings(raw, name, f"Principal {kind}"):
            if kind == "AWS":
                if _aws_principal_matches(pattern, principal, whole_account):
                    return True
            elif pattern == "*" or pattern == principal:
                return True
    return False


def _strings(raw: Any, name: str, what: str) -> list[str]:
    values = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(v, str) for v in values):
        raise PolicyError(f"statement {name}: {what} must be a string or a list of strings")
    return values


# --------------------------------------------------------------------------- conditions


_Test: TypeAlias = Callable[[str, Any], bool]


def _parse_number(text: str) -> float:
    return float(text)


def _parse_date(text: str) -> float:
    if _EPOCH_RE.match(text.strip()):
        return float(text)
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _parse_bool(text: str) -> str:
    lowered = text.lower()
    if lowered not in ("true", "false"):
        raise ValueError(text)
    return lowered


def _arn_test(value: str, text: _Text) -> bool:
    """Each of the six fields is matched on its own; a value or pattern with fewer never matches."""
    parts, fields = value.split(":", 5), text.pattern.split(":", 5)
    if len(parts) != 6 or len(fields) != 6:
        return False
    return all(_fullmatch(f, v) for f, v in zip(fields, parts, strict=True))


def _ip_test(value: str, network: Any) -> bool:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        address = None
    return address is not None and address.version == network.version and address in network


def _parsed_test(parse: Callable[[str], Any], compare: Callable[[Any, Any], bool]) -> _Test:
    def test(value: str, policy_value: Any) -> bool:
        try:
            parsed = parse(value)
        except ValueError:
            return False
        return compare(parsed, policy_value)

    return test


@dataclass(frozen=True)
class _Operator:
    prepare: Callable[[str], Any]  # parses a policy value; ValueError if it is invalid
    test: _Test  # context value vs prepared policy value (a _Text where variables expand)
    negated: bool = False
    variables: bool = False  # IAM expands policy variables in String and Arn values only


def _operators() -> dict[str, _Operator]:
    ops: dict[str, _Operator] = {}

    def add(
        name: str,
        negated_name: str | None,
        prepare: Callable[[str], Any],
        t: _Test,
        variables: bool = False,
    ) -> None:
        ops[name.lower()] = _Operator(prepare, t, variables=variables)
        if negated_name:
            ops[negated_name.lower()] = _Operator(prepare, t, True, variables)

    def same(text: str) -> str:
        return text

    def text(name: str, negated_name: str, t: Callable[[str, _Text], bool]) -> None:
        add(name, negated_name, same, t, variables=True)

    text("StringEquals", "StringNotEquals", lambda v, p: v == p.plain)
    text(
        "StringEqualsIgnoreCase",
        "StringNotEqualsIgnoreCase",
        lambda v, p: v.casefold() == p.plain.casefold(),
    )
    text("StringLike", "StringNotLike", lambda v, p: _fullmatch(p.pattern, v))
    text("ArnEquals", "ArnNotEquals", _arn_test)
    text("ArnLike", "ArnNotLike", _arn_test)
    add("BinaryEquals", None, same, lambda v, p: v == p)
    add("Bool", None, _parse_bool, lambda v, p: v.lower() == p)
    add(
        "IpAddress",
        "NotIpAddress",
        lambda p: ipaddress.ip_network(p.strip(), strict=False),
        _ip_test,
    )
    comparisons: dict[str, Callable[[Any, Any], bool]] = {
        "Equals": lambda a, b: a == b,
        "NotEquals": lambda a, b: a != b,
        "LessThan": lambda a, b: a < b,
        "LessThanEquals": lambda a, b: a <= b,
        "GreaterThan": lambda a, b: a > b,
        "GreaterThanEquals": lambda a, b: a >= b,
    }
    for family, parse in (("Numeric", _parse_number), ("Date", _parse_date)):
        for suffix, compare in comparisons.items():
            add(family + suffix, None, parse, _parsed_test(parse, compare))
    return ops


_OPERATORS = _operators()
_SET_PREFIXES = ("forallvalues:", "foranyvalue:")


def _policy_values(raw: Any, name: str, op: str) -> list[str]:
    values = raw if isinstance(raw, list) else [raw]
    out: list[str] = []
    for value in values:
        if isinstance(value, bool):
            out.append("true" if value else "false")
        elif isinstance(value, str | int | float):
            out.append(str(value))
        else:
            raise PolicyError(f"statement {name}: {op} values must be strings, numbers or bools")
    return out


def _prepare(op_name: str, values: list[str], name: str, raw_op: str, variables: bool) -> list[Any]:
    """Parse a condition's policy values once, so a bad value fails whatever the context."""
    if op_name != "null" and _OPERATORS[op_name].variables:
        return [_template(v, variables, name) for v in values]
    parse = _parse_bool if op_name == "null" else _OPERATORS[op_name].prepare
    try:
        return [parse(v) for v in values]
    except ValueError:
        raise PolicyError(f"statement {name}: invalid value for {raw_op}: {values!r}") from None


def _expanded_values(
    op_name: str, prepared: list[Any], context: Mapping[str, ContextValue]
) -> list[Any]:
    if op_name == "null" or not _OPERATORS[op_name].variables:
        return prepared
    return [_expand(template, context) for template in prepared]


def _key_result(
    op_name: str, prefix: str, if_exists: bool, values: list[Any], known: ContextValue
) -> bool | None:
    """Whether one key's condition holds, the key's value (or its absence) being known;
    ``None`` when an unknown policy variable in ``values`` decides it."""
    if op_name == "null":
        present = known is not None
        return any((wanted == "false") == present for wanted in values)
    op = _OPERATORS[op_name]
    if known is None:
        if if_exists or prefix == "forallvalues:":
            return True
        return False if prefix == "foranyvalue:" else op.negated
    items = known if isinstance(known, list) else [known]
    # A policy value whose variable has no value (None) equals nothing; an unknown one may.
    usable = [v for v in values if v is not None and not isinstance(v, _Unknown)]
    doubtful = any(isinstance(v, _Unknown) for v in values)

    def hit(item: str) -> bool | None:
        if any(op.test(item, v) for v in usable):
            return True
        return None if doubtful else False

    def holds(found: bool | None) -> bool | None:
        return _not3(found) if op.negated else found

    if prefix:
        each = [holds(hit(i)) for i in items]
        return _all3(each) if prefix == "forallvalues:" else _any3(each)
    return holds(_any3([hit(i) for i in items]))


def _conditions(
    condition: Any, context: Mapping[str, ContextValue], name: str, variables: bool
) -> tuple[bool | None, list[str]]:
    """Three-valued AND of a Condition block: (True/False/None=unknown, unknown keys)."""
    if condition is None:
        return True, []
    if not isinstance(condition, dict):
        raise PolicyError(f"statement {name}: Condition must be an object")
    checks: list[tuple[str, str, bool, str, list[Any]]] = []
    for raw_op, block in condition.items():
        op_name = str(raw_op).lower()
        prefix = next((p for p in _SET_PREFIXES if op_name.startswith(p)), "")
        op_name = op_name[len(prefix) :]
        if_exists = op_name.endswith("ifexists")
        if if_exists:
            op_name = op_name[: -len("ifexists")]
        if (op_name not in _OPERATORS and op_name != "null") or (if_exists and op_name == "null"):
            raise PolicyError(f"statement {name}: unknown condition operator {raw_op!r}")
        if not isinstance(block, dict):
            raise PolicyError(f"statement {name}: {raw_op} must map keys to values")
        for key, raw_values in block.items():
            values = _policy_values(raw_values, name, str(raw_op))
            prepared = _prepare(op_name, values, name, str(raw_op), variables)
            checks.append((str(key), op_name, if_exists, prefix, prepared))
    unknown: list[str] = []
    for key, op_name, if_exists, prefix, prepared in checks:
        expanded = _expanded_values(op_name, prepared, context)
        if key.lower() not in context:
            # Its variables are reported too: knowing the key alone may not settle it.
            unknown.extend([key, *_unknown_keys(expanded)])
            continue
        holds = _key_result(op_name, prefix, if_exists, expanded, context[key.lower()])
        if holds is False:
            return False, []
        if holds is None:
            unknown.extend(_unknown_keys(expanded))
    return (None, unknown) if unknown else (True, [])


# --------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class _Verdict:
    index: int
    name: str
    effect: str
    applies: bool | None
    missing: list[str]


def _statement_list(policy: Mapping[str, Any], label: str) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(policy, Mapping) or "Statement" not in policy:
        raise PolicyError(f"{label or 'policy'} is not a policy document: it has no Statement")
    raw = policy["Statement"]
    statements = [raw] if isinstance(raw, dict) else raw
    if not isinstance(statements, list):
        raise PolicyError(f"{label or 'policy'}: Statement must be an object or a list")
    out: list[tuple[str, dict[str, Any]]] = []
    for number, statement in enumerate(statements, start=1):
        sid = statement.get("Sid") if isinstance(statement, dict) else None
        name = sid if isinstance(sid, str) and sid else f"#{number}"
        if label:
            name = f"{label}:{name}"
        if not isinstance(statement, dict):
            raise PolicyError(f"statement {name} is not an object")
        out.append((name, statement))
    return out


def _either(statement: dict[str, Any], name: str, field_name: str) -> tuple[Any, bool]:
    """The value of ``X`` or ``NotX`` and whether it was the negated form."""
    has_plain, has_not = field_name in statement, f"Not{field_name}" in statement
    if has_plain == has_not:
        raise PolicyError(f"statement {name} needs exactly one of {field_name}, Not{field_name}")
    return (statement[field_name], False) if has_plain else (statement[f"Not{field_name}"], True)


def _resource_matches(
    patterns: list[str],
    negated: bool,
    request: Request,
    context: Mapping[str, ContextValue],
    variables: bool,
    name: str,
) -> tuple[bool | None, list[str]]:
    """Whether the statement's Resource/NotResource covers the request (None: unknown), and
    the keys of the unknown variables that leave it open."""
    if request.resource is None:
        return not negated and "*" in patterns, []
    expanded = [_expand(_template(p, variables, name), context) for p in patterns]
    matched = _any3(
        [
            None
            if isinstance(e, _Unknown)
            else e is not None and _fullmatch(e.pattern, request.resource)
            for e in expanded
        ]
    )
    if matched is None:
        return None, _unknown_keys(expanded)
    return matched != negated, []


def _judge(
    index: int,
    name: str,
    statement: dict[str, Any],
    request: Request,
    action: str,
    context: Mapping[str, ContextValue],
    identity: bool,
    variables: bool,
) -> _Verdict:
    effect = statement.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(f"statement {name}: Effect must be Allow or Deny, not {effect!r}")

    def verdict(applies: bool | None, missing: list[str] | None = None) -> _Verdict:
        return _Verdict(index, name, effect, applies, missing or [])

    if not identity:
        if "Principal" not in statement and "NotPrincipal" not in statement:
            raise PolicyError(
                f"statement {name} has no Principal, which every statement of a resource "
                "policy needs"
            )
        spec, negated = _either(statement, name, "Principal")
        if _principal_matches(spec, request.principal, name, not negated) == negated:
            return verdict(False)
    patterns, negated = _either(statement, name, "Action")
    matched = any(_like(p, action, True) for p in _strings(patterns, name, "Action"))
    if matched == negated:
        return verdict(False)
    patterns, negated = _either(statement, name, "Resource")
    resources = _strings(patterns, name, "Resource")
    covered, open_keys = _resource_matches(resources, negated, request, context, variables, name)
    if covered is False:
        return verdict(False)
    applies, missing = _conditions(statement.get("Condition"), context, name, variables)
    if applies is False:
        return verdict(False)
    if covered is None:
        return verdict(None, open_keys + missing)
    return verdict(applies, missing)


def _lower_context(context: Mapping[str, ContextValue]) -> dict[str, ContextValue]:
    out: dict[str, ContextValue] = {}
    for key, value in context.items():
        if isinstance(value, list | tuple):
            out[key.lower()] = [str(v) for v in value]
        elif value is None or isinstance(value, str):
            out[key.lower()] = value
        elif isinstance(value, bool):
            out[key.lower()] = "true" if value else "false"
        else:
            out[key.lower()] = str(value)
    return out


def _unique_sorted(keys: Sequence[str]) -> list[str]:
    seen: dict[str, str] = {}
    for key in keys:
        seen.setdefault(key.lower(), key)
    return [seen[k] for k in sorted(seen)]


def _decide(verdicts: list[_Verdict]) -> Decision:
    def pick(effect: str, applies: bool | None) -> list[_Verdict]:
        return [v for v in verdicts if v.effect == effect and v.applies is applies]

    denies, maybe_denies = pick("Deny", True), pick("Deny", None)
    allows, maybe_allows = pick("Allow", True), pick("Allow", None)
    if denies:
        return Decision(EXPLICIT_DENY, [v.name for v in denies])
    if allows:
        allow_outcomes = {ALLOWED}
    else:
        allow_outcomes = {ALLOWED, IMPLICIT_DENY} if maybe_allows else {IMPLICIT_DENY}
    doubtful = maybe_denies + ([] if allows else maybe_allows)
    if maybe_denies or (maybe_allows and not allows):
        outcomes = allow_outcomes | ({EXPLICIT_DENY} if maybe_denies else set())
        doubtful.sort(key=lambda v: v.index)
        return Decision(
            INDETERMINATE,
            [v.name for v in doubtful],
            _unique_sorted([k for v in doubtful for k in v.missing]),
            frozenset(outcomes),
        )
    if allows:
        return Decision(ALLOWED, [v.name for v in allows])
    return Decision(IMPLICIT_DENY)


def _evaluate_many(
    policies: Sequence[tuple[str, Mapping[str, Any]]], request: Request, identity: bool
) -> Decision:
    action = normalize_action(request.action)
    context = _lower_context(request.context)
    verdicts: list[_Verdict] = []
    for label, policy in policies:
        statements = _statement_list(policy, label)
        variables = policy.get("Version") == _VARIABLES_VERSION
        for name, statement in statements:
            verdicts.append(
                _judge(
                    len(verdicts), name, statement, request, action, context, identity, variables
                )
            )
    return _decide(verdicts)


def evaluate(
    policy: Mapping[str, Any], request: Request, *, identity: bool = False, label: str = ""
) -> Decision:
    """Judge ``request`` against one policy document.

    ``identity=True`` evaluates an identity policy: there is no Principal to match (any in the
    document is ignored). Otherwise every statement needs a Principal or NotPrincipal.
    ``label``, when given, prefixes statement names (``"resource:lbl"``).
    Raises :class:`PolicyError` for a malformed document or an unknown condition operator.
    """
    return _evaluate_many([(label, policy)], request, identity)


# --------------------------------------------------------------------------- combining

SideInput: TypeAlias = Mapping[str, Any] | Sequence[Mapping[str, Any]] | Decision | str | None
"""One side of a request: a policy document, a list of them, a precomputed :class:`Decision`,
or a verdict string (``allowed``, ``explicit_deny``/``explicitDeny``,
``implicit_deny``/``implicitDeny``, ``indeterminate``, ``unknown``)."""

_VERDICTS: dict[str, frozenset[str]] = {
    ALLOWED: frozenset({ALLOWED}),
    EXPLICIT_DENY: frozenset({EXPLICIT_DENY}),
    "explicitdeny": frozenset({EXPLICIT_DENY}),
    IMPLICIT_DENY: frozenset({IMPLICIT_DENY}),
    "implicitdeny": frozenset({IMPLICIT_DENY}),
    INDETERMINATE: _ALL_OUTCOMES,
    # Unknown = not known whether this side grants; it is not taken to deny explicitly.
    "unknown": frozenset({ALLOWED, IMPLICIT_DENY}),
}


def _side(side: SideInput, request: Request, identity: bool, label: str) -> tuple[Decision, str]:
    """A side's Decision and the verdict shown for it (a decision string or ``unknown``)."""
    if isinstance(side, Decision):
        return side, side.decision
    if side is None or isinstance(side, str):
        verdict = (side or "unknown").strip().lower()
        if verdict not in _VERDICTS:
            raise PolicyError(f"unknown {label} verdict {side!r}")
        outcomes = _VERDICTS[verdict]
        decision = next(iter(outcomes)) if len(outcomes) == 1 else INDETERMINATE
        shown = "unknown" if verdict == "unknown" else decision
        return Decision(decision, outcomes=outcomes), shown
    policies = [side] if isinstance(side, Mapping) else list(side)
    labels = [label] if len(policies) == 1 else [f"{label}[{i}]" for i in range(len(policies))]
    judged = _evaluate_many(list(zip(labels, policies, strict=True)), request, identity)
    return judged, judged.decision


def _combine(identity: str, resource: str, same_account: bool) -> str:
    if EXPLICIT_DENY in (identity, resource):
        return EXPLICIT_DENY
    if same_account:
        granted = ALLOWED in (identity, resource)
    else:
        granted = identity == ALLOWED and resource == ALLOWED
    return ALLOWED if granted else IMPLICIT_DENY


def evaluate_access(
    request: Request,
    *,
    identity: SideInput = None,
    resource_policy: SideInput = None,
    resource_account: str | None = None,
) -> AccessDecision:
    """Judge a request against both sides: the principal's identity and the queue's policy.

    ``identity``: the principal's identity policies (evaluated with ``identity=True``), a
    :class:`Decision`, or a verdict string such as the IAM simulator's; ``None`` or
    ``"unknown"`` means it is not known whether the identity side grants the request.
    ``resource_policy``: the queue's policy document (or a Decision/verdict string); ``None``
    means the queue has no policy, which grants nothing. ``resource_account`` defaults to the
    account of ``request.resource``. An explicit deny on either side wins; when the principal's
    account is the resource's, either side may grant; across accounts both sides must. Where
    the unknowns could change the answer it is ``indeterminate``; otherwise it is decided.
    Statement names carry their side: ``identity:Sid``, ``resource:#1``.
    """
    if resource_policy is None:
        resource_policy = IMPLICIT_DENY
    id_decision, id_shown = _side(identity, request, True, "identity")
    res_decision, res_shown = _side(resource_policy, request, False, "resource")
    principal_account = account_of(request.principal)
    resource_account = resource_account or account_of(request.resource)
    same: bool | None = None
    if principal_account and resource_account:
        same = principal_account == resource_account
    relations = [same] if same is not None else [True, False]
    outcomes = frozenset(
        _combine(i, r, s)
        for i in id_decision.outcomes
        for r in res_decision.outcomes
        for s in relations
    )
    sides = (id_decision, res_decision)
    if len(outcomes) > 1:
        decision = INDETERMINATE
        doubtful = [d for d in sides if d.decision == INDETERMINATE]
        statements = [s for d in doubtful for s in d.statements]
        missing = _unique_sorted([k for d in doubtful for k in d.missing_context])
    else:
        decision = next(iter(outcomes))
        statements = [s for d in sides if d.decision == decision for s in d.statements]
        missing = []
    return AccessDecision(
        decision,
        statements,
        missing,
        outcomes,
        identity=id_shown,
        resource=res_shown,
        same_account=same,
    )
