"""`access test`: policy regression suites for CI, judged offline.

A suite file is YAML (a list of cases) or JSON lines (``.jsonl``, one case a line). A case
names a request (``principal``, ``action``, ``resource``, ``context``, ``absent``), the
policies to judge it by — ``policy`` (one policy alone, as ``explain --policy``) or
``identity_policy`` and/or ``resource_policy`` (combined by the account rule) — each inline or
a path relative to the suite file, and the decision it ``expect``s. Every case is validated
before any is judged, so an invalid one is reported by its line and nothing is half-run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from raasctl.codes import ErrorCode
from raasctl.errors import ConfigError, RaasctlError
from raasctl.explain import as_policy, build_request, parse_context
from raasctl.policy import (
    Decision,
    Policy,
    PolicyError,
    Request,
    check_document,
    evaluate,
    evaluate_access,
    load_policy,
)

_Scalar = str | int | float | bool
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser, where installed


class _Case(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    policy: str | dict[str, Any] | None = None
    identity_policy: str | dict[str, Any] | None = None
    resource_policy: str | dict[str, Any] | None = None
    principal: str
    action: str
    resource: str | None = None
    context: dict[str, _Scalar | list[_Scalar]] = {}
    absent: list[str] = []
    expect: Literal["allowed", "explicit_deny", "implicit_deny", "indeterminate"]


@dataclass(frozen=True)
class Case:
    """A validated case: its request and policies, ready to judge."""

    label: str  # its name, or "case N (line L)"
    request: Request
    expect: str
    policy: Policy | None = None  # judged alone
    identity: list[Policy] = field(default_factory=list)
    resource_policy: Policy | None = None


@dataclass
class SuiteResult:
    cases: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return self.cases - len(self.failed)

    def to_json(self) -> dict[str, Any]:
        return {"cases": self.cases, "passed": self.passed, "failed": list(self.failed)}


class _Policies:
    """Policy files parsed once per suite, whatever the number of cases naming them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._cache: dict[tuple[str, bool | None], Policy] = {}

    def get(self, ref: str | dict[str, Any], side: bool | None) -> Policy:
        if isinstance(ref, dict):
            return _parse(ref, side, "inline policy")
        key = (ref, side)
        if key not in self._cache:
            document = load_policy(self.folder / ref)
            self._cache[key] = _parse(document, side, f"policy file {ref}")
        return self._cache[key]


def _parse(document: Any, side: bool | None, source: str) -> Policy:
    try:
        check_document(document, source)
        return as_policy(document, side)
    except PolicyError as exc:
        raise PolicyError(f"{source}: {exc}") from None


def _raw_cases(path: Path, text: str) -> list[tuple[int, Any]]:
    """(line, raw case) pairs."""
    if path.suffix == ".jsonl":
        found: list[tuple[int, Any]] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                found.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise _invalid(path, f"line {number} is not valid JSON: {exc.msg}") from None
        return found
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise _invalid(path, f"{where}not valid YAML") from None
    if data is None:
        return []
    if not isinstance(data, list) or not isinstance(node, yaml.SequenceNode):
        raise _invalid(path, "a suite is a list of cases")
    return [(item.start_mark.line + 1, case) for item, case in zip(node.value, data, strict=True)]


def _invalid(path: Path, message: str) -> ConfigError:
    return ConfigError(f"suite {path}: {message}", code=ErrorCode.POLICY_INVALID)


def _case(number: int, line: int, raw: Any, policies: _Policies) -> Case:
    where = f"case {number} (line {line})"
    if not isinstance(raw, dict):
        raise PolicyError(f"{where} is not a mapping")
    try:
        case = _Case.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        field_name = ".".join(str(part) for part in error["loc"]) or "case"
        raise PolicyError(f"{where}: {field_name}: {error['msg']}") from None
    if case.name:
        where = f"{where} {case.name!r}"
    both = case.identity_policy is not None or case.resource_policy is not None
    if both == (case.policy is not None):
        raise PolicyError(f"{where}: give policy, or identity_policy and/or resource_policy")
    try:
        pairs = [
            f"{key}={item}"
            for key, value in case.context.items()
            for item in (value if isinstance(value, list) else [value])
        ]
        context = parse_context(pairs, case.absent)
        # A key given as a list of one value is still a list (a multi-valued key).
        for key, value in case.context.items():
            if isinstance(value, list):
                context[key] = [_text(item) for item in value]
        request = build_request(case.principal, case.action, case.resource, context)
        label = case.name or where
        if case.policy is not None:
            return Case(label, request, case.expect, policy=policies.get(case.policy, None))
        identity = (
            [] if case.identity_policy is None else [policies.get(case.identity_policy, True)]
        )
        resource = (
            None if case.resource_policy is None else policies.get(case.resource_policy, False)
        )
        return Case(label, request, case.expect, identity=identity, resource_policy=resource)
    except (RaasctlError, PolicyError) as exc:
        raise PolicyError(f"{where}: {exc}") from None


def _text(value: _Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load_suite(path: str | Path) -> list[Case]:
    """Read and validate every case; ConfigError (exit 2) names the file and the case."""
    suite = Path(path)
    try:
        text = suite.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _invalid(suite, f"cannot be read: {reason}") from None
    policies = _Policies(suite.parent)
    try:
        return [
            _case(number, line, raw, policies)
            for number, (line, raw) in enumerate(_raw_cases(suite, text), start=1)
        ]
    except PolicyError as exc:
        raise _invalid(suite, str(exc)) from None


def judge(case: Case) -> Decision:
    if case.policy is not None:
        return evaluate(case.policy, case.request)
    return evaluate_access(
        case.request, identity=case.identity, resource_policy=case.resource_policy
    )


def run_suite(cases: list[Case]) -> SuiteResult:
    result = SuiteResult(cases=len(cases))
    for case in cases:
        decision = judge(case)
        if decision.decision != case.expect:
            result.failed.append(
                {
                    "name": case.label,
                    "expect": case.expect,
                    "decision": str(decision.decision),
                    "statements": list(decision.statements),
                }
            )
    return result
