"""Policy strings: ``*``/``?`` wildcards, policy variables and three-valued logic.

Policy variables (``${aws:username}``, ``${aws:PrincipalTag/team, 'none'}``) are expanded from
the context as IAM does, only in ``2012-10-17`` policies, in the resource part of a
``Resource``/``NotResource`` ARN (after its fifth colon: "Policy variables" in the IAM User
Guide; before it a variable is literal text) and in the values of the String and Arn condition
operators. ``${*}``, ``${?}`` and ``${$}`` stand for those characters taken literally, and an
expanded value is always literal text, never a wildcard. A variable whose key is known absent
takes its default; without one it has no value, which matches nothing. A variable whose key is
unknown makes its comparison unknown — even with a default, since the key may be present. A key
given several values cannot fill a variable (IAM does not allow multi-valued keys there).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeAlias

from raasctl.policy.model import ContextValue, PolicyError

VARIABLES_VERSION = "2012-10-17"
_VARIABLE_RE = re.compile(r"\$\{([^}]*)\}")
# ``key`` or ``key, 'default'``; IAM documents a comma and a space, other spacing is tolerated.
_VARIABLE_BODY_RE = re.compile(r"^\s*([^\s,'][^,']*?)\s*(?:,\s*'([^']*)'\s*)?$")
_ESCAPES = frozenset("*?$")


@lru_cache(maxsize=4096)
def wildcard_source(pattern: str) -> str:
    """The regular expression for a policy pattern whose ``*`` and ``?`` are wildcards."""
    return "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)


@lru_cache(maxsize=4096)
def compiled(source: str, ignore_case: bool = False) -> re.Pattern[str]:
    return re.compile(source, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def fullmatch(source: str, value: str, ignore_case: bool = False) -> bool:
    return compiled(source, ignore_case).fullmatch(value) is not None


def like(pattern: str, value: str, ignore_case: bool = False) -> bool:
    return fullmatch(wildcard_source(pattern), value, ignore_case)


class _Literal(str):
    """Text that matches itself: a ``${*}``, ``${?}`` or ``${$}`` escape."""


@dataclass(frozen=True)
class Variable:
    key: str
    default: str | None


@dataclass(frozen=True)
class Template:
    """A policy string as parts: policy text (its ``*``/``?`` are wildcards), escapes and
    variables. Without variable support the whole string is one part of policy text."""

    parts: tuple[str | Variable, ...]

    @property
    def static(self) -> bool:
        return all(not isinstance(part, Variable) for part in self.parts)


@dataclass(frozen=True)
class Text:
    """A policy string once its variables are expanded.

    ``plain`` is what the equality operators compare; ``pattern`` is a regular expression in
    which only the policy's own ``*``/``?`` are wildcards (an expanded value is literal). A ``:``
    in ``pattern`` is always a literal colon, so it may be split into ARN fields.
    """

    plain: str
    pattern: str


@dataclass(frozen=True)
class Unknown:
    """A policy string that depends on context keys not known."""

    keys: tuple[str, ...]


Expanded: TypeAlias = Text | Unknown | None
"""``None``: a variable has no value (its key is known absent, without a default)."""


def template(text: str, variables: bool, name: str) -> Template:
    """Split ``text`` into parts; ``name`` (the statement) goes into error messages."""
    if not variables or "${" not in text:
        return Template((text,))
    parts: list[str | Variable] = []
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
            parts.append(Variable(variable.group(1), variable.group(2)))
        position = found.end()
    parts.append(text[position:])
    return Template(tuple(part for part in parts if part))


def resource_template(text: str, variables: bool, name: str) -> Template:
    """A Resource ARN: variables are expanded only in its resource part, after the fifth
    colon; the first five fields (and a value with fewer colons) are policy text as written."""
    fields = text.split(":", 5)
    if not variables or len(fields) < 6:
        return Template((text,))
    prefix = ":".join(fields[:5]) + ":"
    rest = template(fields[5], variables, name)
    return Template((prefix, *rest.parts))


def expand(parsed: Template, context: Mapping[str, ContextValue]) -> Expanded:
    """``parsed`` with its variables filled from ``context`` (keys lower-cased)."""
    plain: list[str] = []
    pattern: list[str] = []
    unknown: list[str] = []
    no_value = False
    for part in parsed.parts:
        if isinstance(part, Variable):
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
            pattern.append(wildcard_source(part))
    if no_value:
        return None  # matches nothing, whatever the unknown keys hold
    if unknown:
        return Unknown(tuple(unknown))
    return Text("".join(plain), "".join(pattern))


def unknown_keys(expanded: Sequence[Expanded]) -> list[str]:
    return [key for item in expanded if isinstance(item, Unknown) for key in item.keys]


def any3(values: Sequence[bool | None]) -> bool | None:
    """Three-valued OR: ``None`` is unknown."""
    if any(value is True for value in values):
        return True
    return None if any(value is None for value in values) else False


def all3(values: Sequence[bool | None]) -> bool | None:
    """Three-valued AND: ``None`` is unknown."""
    if any(value is False for value in values):
        return False
    return None if any(value is None for value in values) else True


def not3(value: bool | None) -> bool | None:
    return None if value is None else not value
