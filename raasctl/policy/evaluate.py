"""Judging requests: one policy alone (:func:`evaluate`) or both sides (:func:`evaluate_access`).

Rules ("Policy evaluation logic" in the IAM User Guide), in the order a request meets them:

* **Action** is compared case-insensitively with ``*``/``?`` wildcards. The SQS batch actions
  need the single-message permission (``sqs:SendMessageBatch`` → ``sqs:SendMessage``, …); a
  policy naming a batch action grants nothing, as in AWS.
* **Resource** is compared case-sensitively with ``*``/``?`` wildcards. A request naming no
  resource is covered only by ``"*"``; one whose resource is not known (``resource_unknown``)
  leaves a statement scoped to particular resources undecided, with the reason as a warning.
* **Decision** for one policy: a Deny that applies wins; otherwise a Deny that might apply
  makes the answer ``indeterminate``; otherwise an Allow that applies allows; otherwise an
  Allow that might apply makes it ``indeterminate``; otherwise ``implicit_deny``.
* **Both sides** (:func:`evaluate_access`): an explicit deny on either side wins. Within one
  account a resource policy naming the user, role or session itself grants on its own, and so
  does the identity side; a resource policy naming only the *account* delegates to the
  account's identity policies, so it grants nothing by itself. Across accounts both sides must
  allow (an account principal is then the resource owner's trust in that account).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from raasctl.policy.conditions import judge_conditions
from raasctl.policy.document import Effect, Policy, Statement, normalize_action, parse_document
from raasctl.policy.model import (
    ALL_OUTCOMES,
    ALLOWED,
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
from raasctl.policy.principals import Match, account_of, match_principal
from raasctl.policy.variables import Unknown, any3, expand, fullmatch, unknown_keys

_ISSUER = SESSION_ISSUER_KEY.lower()


@dataclass(frozen=True)
class _Verdict:
    statement: Statement
    applies: bool | None
    missing: list[str]
    via_account: bool = False  # the principal matched only through its account
    reason: str | None = None  # why it is undecided, when no context key would settle it


def _resource(
    statement: Statement, request: Request, context: Mapping[str, ContextValue]
) -> tuple[bool | None, list[str], str | None]:
    """Whether Resource/NotResource covers the request (None: unknown), the keys of the
    unknown variables that leave it open, and the reason when the resource is unknown."""
    negated = statement.resource_negated
    if request.resource is None:
        if "*" in statement.resource_patterns:
            return not negated, [], None
        if not request.resource_unknown:
            return False, [], None
        reason = (
            f"statement {statement.name} applies only to "
            f"{', '.join(statement.resource_patterns)}"
            f"{' (NotResource)' if negated else ''}: the resource is not given"
        )
        return None, [], reason
    expanded = [expand(parsed, context) for parsed in statement.resources]
    matched = any3(
        [
            None
            if isinstance(e, Unknown)
            else e is not None and fullmatch(e.pattern, request.resource)
            for e in expanded
        ]
    )
    if matched is None:
        return None, unknown_keys(expanded), None
    return matched != negated, [], None


def _judge(
    statement: Statement, request: Request, action: str, context: Mapping[str, ContextValue]
) -> _Verdict | None:
    """The statement's verdict, or None when it certainly does not apply."""
    via_account = False
    missing: list[str] = []
    known: list[bool | None] = []
    if statement.principal is not None:
        issuer: Any = context.get(_ISSUER, KeyError)
        negated = statement.principal_negated
        found = match_principal(statement.principal, request.principal, issuer, not negated)
        if found is Match.UNKNOWN:
            known.append(None)
            missing.append(SESSION_ISSUER_KEY)
        elif (found is Match.NONE) != negated:
            return None
        via_account = found is Match.ACCOUNT
    matched = any(pattern.fullmatch(action) for pattern in statement.actions)
    if matched == statement.action_negated:
        return None
    covered, open_keys, reason = _resource(statement, request, context)
    if covered is False:
        return None
    applies, condition_keys = judge_conditions(statement.conditions, context)
    if applies is False:
        return None
    known.extend([covered, applies])
    if None not in known:
        return _Verdict(statement, True, [], via_account)
    return _Verdict(statement, None, missing + open_keys + condition_keys, via_account, reason)


def lower_context(context: Mapping[str, Any]) -> dict[str, ContextValue]:
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


def unique_sorted(keys: Sequence[str]) -> list[str]:
    seen: dict[str, str] = {}
    for key in keys:
        seen.setdefault(key.lower(), key)
    return [seen[k] for k in sorted(seen)]


def _decide(verdicts: list[_Verdict], warnings: list[str], delegate: bool = False) -> Decision:
    """One policy's decision; ``delegate``: an Allow reaching the principal only through its
    account grants nothing by itself (the same-account rule)."""

    def pick(effect: Effect, applies: bool | None) -> list[_Verdict]:
        return [
            v
            for v in verdicts
            if v.statement.effect == effect
            and v.applies is applies
            and not (delegate and effect == Effect.ALLOW and v.via_account)
        ]

    denies, maybe_denies = pick(Effect.DENY, True), pick(Effect.DENY, None)
    allows, maybe_allows = pick(Effect.ALLOW, True), pick(Effect.ALLOW, None)
    if denies:
        return Decision(EXPLICIT_DENY, [v.statement.name for v in denies], warnings=warnings)
    if allows:
        allow_outcomes = {ALLOWED}
    else:
        allow_outcomes = {ALLOWED, IMPLICIT_DENY} if maybe_allows else {IMPLICIT_DENY}
    if maybe_denies or (maybe_allows and not allows):
        doubtful = sorted(
            maybe_denies + ([] if allows else maybe_allows), key=lambda v: v.statement.index
        )
        outcomes = allow_outcomes | ({EXPLICIT_DENY} if maybe_denies else set())
        reasons = [v.reason for v in doubtful if v.reason]
        return Decision(
            INDETERMINATE,
            [v.statement.name for v in doubtful],
            unique_sorted([k for v in doubtful for k in v.missing]),
            frozenset(outcomes),
            warnings + reasons,
        )
    if allows:
        return Decision(ALLOWED, [v.statement.name for v in allows], warnings=warnings)
    return Decision(IMPLICIT_DENY, warnings=warnings)


PolicyInput: TypeAlias = Mapping[str, Any] | Policy


def _parsed(policies: Sequence[tuple[str, PolicyInput]], identity: bool) -> list[Policy]:
    out: list[Policy] = []
    start = 0
    for label, policy in policies:
        parsed = (
            policy
            if isinstance(policy, Policy)
            else parse_document(policy, identity=identity, label=label, start=start)
        )
        out.append(parsed)
        start += len(parsed.statements)
    return out


def _verdicts(policies: Sequence[Policy], request: Request) -> list[_Verdict]:
    action = normalize_action(request.action)
    context = lower_context(request.context)
    found: list[_Verdict] = []
    for policy in policies:
        for statement in policy.statements:
            verdict = _judge(statement, request, action, context)
            if verdict is not None:
                found.append(verdict)
    return found


def evaluate(
    policy: PolicyInput, request: Request, *, identity: bool = False, label: str = ""
) -> Decision:
    """Judge ``request`` against one policy document, as that policy alone would.

    ``identity=True`` evaluates an identity policy: there is no Principal to match (any in the
    document is ignored). Otherwise every statement needs a Principal or NotPrincipal, and an
    account principal matches every principal of that account ("this policy grants it").
    ``label``, when given, prefixes statement names (``"resource:lbl"``). A parsed
    :class:`Policy` is judged as it was parsed. Raises :class:`PolicyError` for a malformed
    document.
    """
    parsed = _parsed([(label, policy)], identity)
    return _decide(_verdicts(parsed, request), parsed[0].warnings)


# --------------------------------------------------------------------------- both sides

SideInput: TypeAlias = PolicyInput | Sequence[PolicyInput] | Decision | str | None
"""One side of a request: a policy document (or a parsed one), a list of them, a precomputed
:class:`Decision`, or a verdict string (``allowed``, ``explicit_deny``/``explicitDeny``,
``implicit_deny``/``implicitDeny``, ``indeterminate``, ``unknown``)."""

_VERDICTS: dict[str, frozenset[Outcome]] = {
    ALLOWED: frozenset({ALLOWED}),
    EXPLICIT_DENY: frozenset({EXPLICIT_DENY}),
    "explicitdeny": frozenset({EXPLICIT_DENY}),
    IMPLICIT_DENY: frozenset({IMPLICIT_DENY}),
    "implicitdeny": frozenset({IMPLICIT_DENY}),
    INDETERMINATE: ALL_OUTCOMES,
    # Unknown = not known whether this side grants; it is not taken to deny explicitly.
    "unknown": frozenset({ALLOWED, IMPLICIT_DENY}),
}


class _Side:
    """One side judged once; decided per account relation (the resource side differs)."""

    def __init__(self, side: SideInput, request: Request, identity: bool, label: str) -> None:
        self.fixed: tuple[Decision, str] | None = None
        self.verdicts: list[_Verdict] = []
        self.warnings: list[str] = []
        if isinstance(side, Decision):
            self.fixed = side, str(side.decision)
        elif side is None or isinstance(side, str):
            verdict = (side or "unknown").strip().lower()
            if verdict not in _VERDICTS:
                raise PolicyError(f"unknown {label} verdict {side!r}")
            outcomes = _VERDICTS[verdict]
            decision = next(iter(outcomes)) if len(outcomes) == 1 else INDETERMINATE
            shown = "unknown" if verdict == "unknown" else str(decision)
            self.fixed = Decision(decision, outcomes=outcomes), shown
        else:
            policies = [side] if isinstance(side, Mapping | Policy) else list(side)
            labels = (
                [label] if len(policies) == 1 else [f"{label}[{i}]" for i in range(len(policies))]
            )
            parsed = _parsed(list(zip(labels, policies, strict=True)), identity)
            self.verdicts = _verdicts(parsed, request)
            self.warnings = [w for p in parsed for w in p.warnings]

    def decide(self, same_account: bool) -> tuple[Decision, str]:
        if self.fixed is not None:
            return self.fixed
        decision = _decide(self.verdicts, list(self.warnings), delegate=same_account)
        return decision, str(decision.decision)


def _combine(identity: Outcome, resource: Outcome, same_account: bool) -> Outcome:
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

    ``identity``: the principal's identity policies, a :class:`Decision`, or a verdict string
    such as the IAM simulator's; ``None`` or ``"unknown"`` means it is not known whether the
    identity side grants the request. ``resource_policy``: the queue's policy (or a
    Decision/verdict string); ``None`` means the queue has no policy, which grants nothing.
    ``resource_account`` defaults to the account of ``request.resource``; when either account
    is unknown both relations are considered. Where the unknowns could change the answer it is
    ``indeterminate``; otherwise it is decided. Statement names carry their side:
    ``identity:Sid``, ``resource:#1``.
    """
    if resource_policy is None:
        resource_policy = str(IMPLICIT_DENY)
    id_decision, id_shown = _Side(identity, request, True, "identity").decide(False)
    resource_side = _Side(resource_policy, request, False, "resource")
    principal_account = account_of(request.principal)
    resource_account = resource_account or account_of(request.resource)
    same: bool | None = None
    if principal_account and resource_account:
        same = principal_account == resource_account
    relations = [same] if same is not None else [True, False]
    by_relation = {relation: resource_side.decide(relation) for relation in relations}
    outcomes = frozenset(
        _combine(i, r, relation)
        for relation in relations
        for i in id_decision.outcomes
        for r in by_relation[relation][0].outcomes
    )
    # Shown for an unknown relation: the resource policy as it reads on its own.
    _, res_shown = by_relation[relations[-1]]
    sides = (id_decision, *(decision for decision, _ in by_relation.values()))
    if len(outcomes) > 1:
        decision = INDETERMINATE
        doubtful = [d for d in sides if d.decision == INDETERMINATE]
        statements = list(dict.fromkeys(s for d in doubtful for s in d.statements))
        missing = unique_sorted([k for d in doubtful for k in d.missing_context])
    else:
        decision = next(iter(outcomes))
        statements = list(
            dict.fromkeys(s for d in sides if d.decision == decision for s in d.statements)
        )
        missing = []
    warnings = list(dict.fromkeys(w for d in sides for w in d.warnings))
    return AccessDecision(
        decision,
        statements,
        missing,
        outcomes,
        warnings,
        identity=id_shown,
        resource=res_shown,
        same_account=same,
    )
