"""Condition blocks: parsed once into typed checks, then judged in three-valued logic.

Rules ("Condition operators" in the IAM User Guide): operator names and keys are
case-insensitive; several values for one key are OR-ed — NOR-ed for the negated operators
(``StringNotEquals``, ``StringNotLike``, ``ArnNotEquals``, ``ArnNotLike``,
``NumericNotEquals``, ``DateNotEquals``, ``NotIpAddress``), which also hold when the key is
absent; several keys and operators are AND-ed. The context holds only what the caller *knows*:
a key missing from it is unknown, never assumed absent — also for ``...IfExists`` and ``Null``.
A context value of ``None`` states that the key is known to be absent. Multi-valued keys are
lists, judged with ``ForAnyValue:``/``ForAllValues:``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

from raasctl.policy.model import ContextValue, PolicyError
from raasctl.policy.variables import (
    Template,
    Text,
    Unknown,
    all3,
    any3,
    expand,
    fullmatch,
    not3,
    template,
    unknown_keys,
)

_EPOCH_RE = re.compile(r"^-?\d+(\.\d+)?$")
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


def _arn_test(value: str, text: Text) -> bool:
    """Each of the six fields is matched on its own; a value or pattern with fewer never matches."""
    parts, fields = value.split(":", 5), text.pattern.split(":", 5)
    if len(parts) != 6 or len(fields) != 6:
        return False
    return all(fullmatch(f, v) for f, v in zip(fields, parts, strict=True))


def _ip_test(value: str, network: Any) -> bool:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return False
    return address.version == network.version and address in network


def _parsed_test(parse: Callable[[str], Any], compare: Callable[[Any, Any], bool]) -> _Test:
    def test(value: str, policy_value: Any) -> bool:
        try:
            parsed = parse(value)
        except ValueError:
            return False
        return compare(parsed, policy_value)

    return test


@dataclass(frozen=True)
class Operator:
    prepare: Callable[[str], Any]  # parses a policy value; ValueError if it is invalid
    test: _Test  # context value vs prepared policy value (a Text where variables expand)
    negated: bool = False
    variables: bool = False  # IAM expands policy variables in String and Arn values only


def _operators() -> dict[str, Operator]:
    ops: dict[str, Operator] = {}

    def add(
        name: str,
        negated_name: str | None,
        prepare: Callable[[str], Any],
        t: _Test,
        variables: bool = False,
    ) -> None:
        ops[name.lower()] = Operator(prepare, t, variables=variables)
        if negated_name:
            ops[negated_name.lower()] = Operator(prepare, t, True, variables)

    def same(text: str) -> str:
        return text

    def text(name: str, negated_name: str, t: Callable[[str, Text], bool]) -> None:
        add(name, negated_name, same, t, variables=True)

    text("StringEquals", "StringNotEquals", lambda v, p: v == p.plain)
    text(
        "StringEqualsIgnoreCase",
        "StringNotEqualsIgnoreCase",
        lambda v, p: v.casefold() == p.plain.casefold(),
    )
    text("StringLike", "StringNotLike", lambda v, p: fullmatch(p.pattern, v))
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
        "LessThan": lambda a, b: a < b,
        "LessThanEquals": lambda a, b: a <= b,
        "GreaterThan": lambda a, b: a > b,
        "GreaterThanEquals": lambda a, b: a >= b,
    }
    for family, parse in (("Numeric", _parse_number), ("Date", _parse_date)):
        # NotEquals is the negation of Equals, so its values are NOR-ed and an absent key
        # makes it hold, as for every negated operator.
        add(
            family + "Equals",
            family + "NotEquals",
            parse,
            _parsed_test(parse, lambda a, b: a == b),
        )
        for suffix, compare in comparisons.items():
            add(family + suffix, None, parse, _parsed_test(parse, compare))
    return ops


OPERATORS = _operators()
_SET_PREFIXES = ("forallvalues:", "foranyvalue:")
_NULL = "null"


@dataclass(frozen=True)
class Check:
    """One key of one operator: ``{"StringEquals": {"aws:SourceAccount": [...]}}``."""

    key: str  # as written
    lowered: str
    operator: str  # lower-case, without set prefix and IfExists
    prefix: str  # "", "forallvalues:" or "foranyvalue:"
    if_exists: bool
    values: tuple[Any, ...]  # Templates for the String/Arn operators, else parsed values


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
    if op_name != _NULL and OPERATORS[op_name].variables:
        return [template(v, variables, name) for v in values]
    parse = _parse_bool if op_name == _NULL else OPERATORS[op_name].prepare
    try:
        return [parse(v) for v in values]
    except ValueError:
        raise PolicyError(f"statement {name}: invalid value for {raw_op}: {values!r}") from None


def parse_condition(condition: Any, name: str, variables: bool) -> tuple[Check, ...]:
    """The checks of a Condition block; raises :class:`PolicyError` for anything IAM rejects."""
    if condition is None:
        return ()
    if not isinstance(condition, dict):
        raise PolicyError(f"statement {name}: Condition must be an object")
    checks: list[Check] = []
    for raw_op, block in condition.items():
        op_name = str(raw_op).lower()
        prefix = next((p for p in _SET_PREFIXES if op_name.startswith(p)), "")
        op_name = op_name[len(prefix) :]
        if_exists = op_name.endswith("ifexists")
        if if_exists:
            op_name = op_name[: -len("ifexists")]
        if (op_name not in OPERATORS and op_name != _NULL) or (if_exists and op_name == _NULL):
            raise PolicyError(f"statement {name}: unknown condition operator {raw_op!r}")
        if not isinstance(block, dict):
            raise PolicyError(f"statement {name}: {raw_op} must map keys to values")
        for key, raw_values in block.items():
            values = _policy_values(raw_values, name, str(raw_op))
            prepared = _prepare(op_name, values, name, str(raw_op), variables)
            checks.append(
                Check(str(key), str(key).lower(), op_name, prefix, if_exists, tuple(prepared))
            )
    return tuple(checks)


def _expanded_values(check: Check, context: Mapping[str, ContextValue]) -> list[Any]:
    if check.operator == _NULL or not OPERATORS[check.operator].variables:
        return list(check.values)
    return [
        expand(value, context) if isinstance(value, Template) else value for value in check.values
    ]


def _key_result(check: Check, values: list[Any], known: ContextValue) -> bool | None:
    """Whether one key's condition holds, the key's value (or its absence) being known;
    ``None`` when an unknown policy variable in ``values`` decides it."""
    if check.operator == _NULL:
        present = known is not None
        return any((wanted == "false") == present for wanted in values)
    op = OPERATORS[check.operator]
    if known is None:
        if check.if_exists or check.prefix == "forallvalues:":
            return True
        return False if check.prefix == "foranyvalue:" else op.negated
    items = known if isinstance(known, list) else [known]
    # A policy value whose variable has no value (None) equals nothing; an unknown one may.
    usable = [v for v in values if v is not None and not isinstance(v, Unknown)]
    doubtful = any(isinstance(v, Unknown) for v in values)

    def hit(item: str) -> bool | None:
        if any(op.test(item, v) for v in usable):
            return True
        return None if doubtful else False

    def holds(found: bool | None) -> bool | None:
        return not3(found) if op.negated else found

    if check.prefix:
        each = [holds(hit(i)) for i in items]
        return all3(each) if check.prefix == "forallvalues:" else any3(each)
    return holds(any3([hit(i) for i in items]))


def judge_conditions(
    checks: tuple[Check, ...], context: Mapping[str, ContextValue]
) -> tuple[bool | None, list[str]]:
    """Three-valued AND of a Condition block: (True/False/None=unknown, unknown keys)."""
    unknown: list[str] = []
    for check in checks:
        expanded = _expanded_values(check, context)
        if check.lowered not in context:
            # Its variables are reported too: knowing the key alone may not settle it.
            unknown.extend([check.key, *unknown_keys(expanded)])
            continue
        holds = _key_result(check, expanded, context[check.lowered])
        if holds is False:
            return False, []
        if holds is None:
            unknown.extend(unknown_keys(expanded))
    return (None, unknown) if unknown else (True, [])
